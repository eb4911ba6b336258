"""Reading the frames of clips: each frame's centre of mass of ink and the digits classifier's
view of it, through a window of the digit's size centred there (so a digit is recognised
wherever it has moved). Shared by :mod:`.metrics` and :mod:`.text_metrics`."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from . import _image_domain

__all__ = ["centre_of_mass", "digit_crops", "frame_scores"]


def _ink(x: torch.Tensor) -> torch.Tensor:
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0).mean(2)  # (N, T, H, W) grey ink


def centre_of_mass(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Clips ``(N, T, C, H, W)`` -> centres ``(N, T, 2)`` as (row, col) pixels and ink mass
    ``(N, T)`` (a blank frame's centre is the canvas centre)."""
    ink = _ink(x)  # (N, T, H, W)
    h, w = ink.shape[-2:]
    mass = ink.sum((-2, -1))  # (N, T)
    rows = torch.arange(h, dtype=ink.dtype)
    cols = torch.arange(w, dtype=ink.dtype)
    safe = mass.clamp_min(1e-6)
    r = (ink.sum(-1) * rows).sum(-1) / safe  # (N, T)
    c = (ink.sum(-2) * cols).sum(-1) / safe
    blank = mass < 1e-3
    r = torch.where(blank, torch.full_like(r, (h - 1) / 2), r)
    c = torch.where(blank, torch.full_like(c, (w - 1) / 2), c)
    return torch.stack([r, c], dim=-1), mass


def digit_crops(x: torch.Tensor, digit_size: int, out: int = 8) -> torch.Tensor:
    """Each frame's ``digit_size`` window around its centre of mass, resampled to ``out x out``:
    clips ``(N, T, C, H, W)`` -> ``(N * T, 1, out, out)`` in [-1, 1]."""
    n, t, _, h, w = x.shape
    com, _ = centre_of_mass(x)  # (N, T, 2)
    ink = _ink(x).reshape(n * t, 1, h, w)  # (NT, 1, H, W) in [0, 1]
    cy, cx = com.reshape(n * t, 2).unbind(-1)  # (NT,)
    theta = torch.zeros(n * t, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = digit_size / w, digit_size / h
    theta[:, 0, 2], theta[:, 1, 2] = (2 * cx + 1) / w - 1, (2 * cy + 1) / h - 1
    grid = F.affine_grid(theta, (n * t, 1, out, out), align_corners=False)
    crops = F.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return crops * 2.0 - 1.0  # (NT, 1, out, out)


def frame_scores(x: torch.Tensor, digit_size: int, classifier: Any = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per frame: the classifier's probabilities ``(N, T, 10)`` and features ``(N, T, 128)``."""
    if classifier is None:
        classifier = _image_domain().digits_classifier(8)
    n, t = x.shape[:2]
    feats, probs = [], []
    with torch.no_grad():
        for chunk in digit_crops(x, digit_size).split(1024):
            f = classifier.features(chunk)
            feats.append(f)
            probs.append(classifier.head(f).softmax(-1))
    return torch.cat(probs).view(n, t, -1), torch.cat(feats).view(n, t, -1)
