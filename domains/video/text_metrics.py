"""Judging captioned clips (:mod:`.captions`) against the digit and direction their prompts ask
for.

* digit: every frame is read by the digits classifier through a window centred on the frame's
  centre of mass (:func:`.metrics.frame_scores`); ``digit_acc`` is the share of frames read as
  the prompted digit;
* direction: the centre of mass's displacement from the first to the last frame; its dominant
  axis and sign name the direction (left, right, up, down); a displacement shorter than
  :data:`MIN_TRAVEL` pixels names none (a digit that stays put moves in no direction).
  ``direction_acc`` is the share of clips moving the prompted way.

:func:`text_video_metrics` reports both per evaluation set (``held_in``, ``held_out``).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch

from .frames import centre_of_mass, frame_scores

__all__ = ["MIN_TRAVEL", "judge_direction", "judge_clips", "text_video_metrics"]

# pixels: the shortest first-to-last displacement that names a direction (the data's digits
# travel (frames - 1) * speed, 7 px in the CPU recipe; a still digit's centre wobbles < 0.5)
MIN_TRAVEL = 1.5


def judge_direction(x: torch.Tensor, min_travel: float = MIN_TRAVEL) -> torch.Tensor:
    """The direction each clip ``x: (N, T, C, H, W)`` moves in: ``(N,)`` long, 0 left, 1 right,
    2 up, 3 down, -1 none (the centre of mass travels less than ``min_travel`` px)."""
    com, _ = centre_of_mass(x)  # (N, T, 2) as (row, col)
    d = com[:, -1] - com[:, 0]  # (N, 2)
    rows = d[:, 0].abs() > d[:, 1].abs()  # (N,) vertical motion dominates
    horizontal = torch.where(d[:, 1] < 0, 0, 1)
    vertical = torch.where(d[:, 0] < 0, 2, 3)
    out = torch.where(rows, vertical, horizontal)
    return torch.where(d.norm(dim=-1) < min_travel, -1, out).long()


def judge_clips(x: torch.Tensor, digit_size: int, classifier: Any = None
                ) -> dict[str, torch.Tensor]:
    """Clips ``(N, T, C, H, W)`` in [-1, 1] -> ``{"digit": (N, T) long (per frame),
    "direction": (N,) long}``."""
    probs, _ = frame_scores(x, digit_size, classifier)  # (N, T, 10)
    return {"digit": probs.argmax(-1), "direction": judge_direction(x)}


def _scores(x: torch.Tensor, digit: torch.Tensor, direction: torch.Tensor, digit_size: int
            ) -> tuple[float, float]:
    j = judge_clips(x, digit_size)
    digit_acc = (j["digit"] == digit[:, None]).float().mean()
    return float(digit_acc), float((j["direction"] == direction).float().mean())


def text_video_metrics(x: torch.Tensor, captions: Sequence[str] | None,
                       truth: dict[str, tuple[int, int, str]], digit_size: int
                       ) -> dict[str, float]:
    """Clips ``x: (N, T, C, H, W)`` judged against their captions (``truth``: caption ->
    ``(digit, direction, set)``): ``digit_acc_<set>`` and ``direction_acc_<set>`` per set, and
    ``digit_acc`` / ``direction_acc`` over all; nothing when a caption has no truth."""
    if not captions or not truth or any(c not in truth for c in captions):
        return {}
    digit, direction, sets = zip(*(truth[c] for c in captions))
    digit, direction = torch.tensor(digit), torch.tensor(direction)
    out: dict[str, float] = {}
    for name in sorted(set(sets)):
        rows = torch.tensor([s == name for s in sets])
        acc = _scores(x[rows], digit[rows], direction[rows], digit_size)
        out[f"digit_acc_{name}"], out[f"direction_acc_{name}"] = acc
    out["digit_acc"], out["direction_acc"] = _scores(x, digit, direction, digit_size)
    return {k: v for k, v in out.items() if not math.isnan(v)}
