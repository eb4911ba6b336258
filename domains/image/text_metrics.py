"""Judging two-digit canvases (:mod:`.captions`) against the digits their captions ask for.

Each half of a canvas ``(n, 1, S, 2S)`` is read separately: it is *empty* when its ink, the mean
of ``(x + 1) / 2`` over the half, is below :data:`EMPTY_INK`; otherwise the project's digits
classifier (:func:`.classifier.digits_classifier` at size ``S``) names its digit.

Calibration of :data:`EMPTY_INK` (all 1797 scikit-learn digits, the same at S = 8, 16, 32): a
blank half has ink 0.0; real digits have ink 0.181 at the least (0.1th percentile 0.221, 1st
percentile 0.245, median 0.306, max 0.423; per-class minima 0.18-0.25, the lowest a "1"). The
threshold 0.09 sits halfway between blank and the faintest real digit, so a sampled blank may
carry some grey haze and a faint digit still counts as drawn.
"""

from __future__ import annotations

import math

import torch

from .classifier import digits_classifier

__all__ = ["EMPTY_INK", "caption_scores", "half_ink", "judge_canvas"]

EMPTY_INK = 0.09


def _halves(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x: (n, 1, S, 2S)`` -> left and right ``(n, 1, S, S)``."""
    s = x.shape[-2]
    if x.ndim != 4 or x.shape[-1] != 2 * s:
        raise ValueError(f"expected canvases (n, C, S, 2S), got {tuple(x.shape)}")
    return x[..., :s], x[..., s:]


def half_ink(x: torch.Tensor) -> torch.Tensor:
    """Ink of each half: ``x: (n, 1, S, 2S)`` in [-1, 1] -> ``(n, 2)`` in [0, 1] (left, right)."""
    ink = ((x.float().clamp(-1, 1) + 1) / 2).mean(dim=(1, 2))  # (n, 2S)
    s = x.shape[-2]
    return torch.stack([ink[:, :s].mean(1), ink[:, s:].mean(1)], dim=1)


@torch.no_grad()
def judge_canvas(x: torch.Tensor, classifier: torch.nn.Module | None = None) -> dict:
    """Read canvases ``x: (n, 1, S, 2S)`` in [-1, 1].

    Returns ``{"left": (n,) long, "right": (n,) long}`` (the predicted digit, -1 when the half is
    judged empty) and ``"ink": (n, 2)``, the ink of the halves.
    """
    left, right = _halves(x)
    clf = classifier if classifier is not None else digits_classifier(int(x.shape[-2]))
    device = next(clf.parameters()).device
    ink = half_ink(x).cpu()
    out = {"ink": ink}
    for i, (name, half) in enumerate((("left", left), ("right", right))):
        pred = clf(half.float().to(device)).argmax(1).cpu() if len(half) else ink[:, i].long()
        out[name] = torch.where(ink[:, i] < EMPTY_INK, -1, pred).long()
    return out


def caption_scores(x: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
                   classifier: torch.nn.Module | None = None) -> dict[str, float]:
    """How well canvases ``x: (n, 1, S, 2S)`` match the asked-for ``left, right: (n,)`` digits
    (-1: that side should be empty).

    ``joint_acc``: both sides right; ``left_acc`` / ``right_acc``: one side right; ``empty_ok``:
    over rows asking for exactly one empty side, the fraction where that side is judged empty
    (NaN when there are none).
    """
    j = judge_canvas(x, classifier)
    left, right = torch.as_tensor(left).long().cpu(), torch.as_tensor(right).long().cpu()
    ok_l, ok_r = j["left"] == left, j["right"] == right
    one = (left < 0) ^ (right < 0)
    empty_judged = torch.where(left < 0, j["left"] < 0, j["right"] < 0)
    return {"joint_acc": _mean(ok_l & ok_r), "left_acc": _mean(ok_l),
            "right_acc": _mean(ok_r), "empty_ok": _mean(empty_judged[one])}


def _mean(b: torch.Tensor) -> float:
    return b.float().mean().item() if b.numel() else math.nan
