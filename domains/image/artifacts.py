"""Image artifacts: a PNG grid people look at (capped at a glanceable size), plus all the raw
samples (``.pt`` and ``.npy``)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw
from torchvision.utils import make_grid

from omnidiff.io import atomic_path, save_raw
from omnidiff.plots import pick_for_grid

__all__ = ["save_artifacts", "image_grid", "captioned_grid", "class_grid", "outline_filled",
           "MIN_TILE",
           "GRID_MAX",
           "GRID_PER_CLASS",
           "GRID_MAX_CLASSES"]

MIN_TILE = 32  # tiles smaller than this are upscaled (nearest neighbour) to at least this size
MIN_GRID = 256  # ... and small grids until they are at least this wide
MAX_UP = 16  # never upscaled more than this
GRID_MAX = 64  # unconditional grid: at most this many tiles (8 x 8)
GRID_PER_CLASS = 10  # class-conditional grid: at most this many tiles per row (class) ...
GRID_MAX_CLASSES = 10  # ... and at most this many rows (the smallest labels)


def image_grid(samples: torch.Tensor, cond: torch.Tensor | None = None, padding: int = 2
               ) -> np.ndarray:
    """samples (B, C, H, W) in [-1, 1] -> uint8 grid (Hg, Wg, C) (C is 1 or 3; 1 is squeezed
    by the caller).

    The grid is capped so it reads at a glance (:func:`omnidiff.plots.pick_for_grid`): without
    ``cond``, the first :data:`GRID_MAX` samples (at most 8 x 8), laid as square as possible;
    with ``cond`` (B,), one row per class present (ascending, at most :data:`GRID_MAX_CLASSES`
    rows), at most :data:`GRID_PER_CLASS` of its samples left to right, blank tiles padding
    short rows. The other samples are not drawn (they stay in the raw files).
    """
    if samples.ndim != 4:
        raise ValueError(f"image artifacts need samples (B, C, H, W), got {tuple(samples.shape)}")
    x = samples.detach().float().cpu().clamp(-1, 1).add(1).div(2)  # (B, C, H, W) in [0, 1]
    if x.shape[1] not in (1, 3):
        raise ValueError(f"image artifacts need 1 or 3 channels, got {x.shape[1]}")
    c = None
    if cond is not None and len(x):
        c = cond.detach().cpu().long().reshape(-1)
        if len(c) != len(x):
            raise ValueError(f"cond has {len(c)} labels for {len(x)} samples")
    keep = pick_for_grid(len(x), c, per_class=GRID_PER_CLASS, max_items=GRID_MAX,
                         max_classes=GRID_MAX_CLASSES)
    x = x[keep]
    if c is not None and len(torch.unique(c[keep])) == 1:
        c = None  # one class: laid out square, not as one long row
    h, w = x.shape[-2:]
    up = max(1, math.ceil(MIN_TILE / min(h, w)), math.ceil(MIN_GRID / (_columns(x, c, keep) * w)))
    x = F.interpolate(x, scale_factor=min(up, MAX_UP), mode="nearest") if up > 1 else x
    if c is not None:
        c = c[keep]
        classes = torch.unique(c)  # sorted
        per_row = max(int((c == k).sum()) for k in classes)
        blank = torch.zeros_like(x[:1])
        tiles = []
        for k in classes:
            row = x[c == k]
            tiles.append(torch.cat([row, blank.expand(per_row - len(row), -1, -1, -1)]))
        x, nrow = torch.cat(tiles), per_row
    else:
        nrow = max(1, math.ceil(math.sqrt(len(x))))
    grid = make_grid(x, nrow=nrow, padding=padding, pad_value=0.5)  # (3, Hg, Wg)
    if samples.shape[1] == 1:
        grid = grid[:1]
    return (grid.mul(255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy())


def _columns(x: torch.Tensor, c: torch.Tensor | None, keep: Any) -> int:
    """Tiles across the grid: the fullest class row, or the side of a square layout."""
    if c is None:
        return max(1, math.ceil(math.sqrt(len(x))))
    return int(torch.unique(c[keep], return_counts=True)[1].max())


def captioned_grid(samples: torch.Tensor, captions: Sequence[str], padding: int = 2
                   ) -> np.ndarray:
    """One row per distinct caption (in order of first appearance, at most
    :data:`GRID_MAX_CLASSES` rows of :data:`GRID_PER_CLASS` samples, as :func:`image_grid`
    lays classes out), each labelled with its caption on the left: samples (B, C, H, W) in
    [-1, 1] -> uint8 (Hg, Wg, 3)."""
    texts = list(dict.fromkeys(captions))
    ids = torch.tensor([texts.index(c) for c in captions])
    return _labelled_rows(image_grid(samples, ids, padding=padding), texts, padding)


def class_grid(samples: torch.Tensor, labels: torch.Tensor, names: Sequence[str],
               padding: int = 2) -> np.ndarray:
    """:func:`image_grid`'s rows of classes, each labelled with its class name on the left
    (one class alone is laid out square, unlabelled)."""
    grid = image_grid(samples, labels, padding=padding)
    present = torch.unique(labels.detach().cpu().long().reshape(-1)).tolist()
    if len(present) < 2:
        return grid
    return _labelled_rows(grid, [names[k] for k in present], padding)


def _labelled_rows(grid: np.ndarray, texts: Sequence[str], padding: int) -> np.ndarray:
    """``grid`` (Hg, Wg, C) with ``texts`` written left of its rows: uint8 (Hg, Wg', 3)."""
    shown = [t[:60] for t in texts[:GRID_MAX_CLASSES]]
    row_h = (grid.shape[0] - padding) / len(shown)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = int(max(probe.textlength(t) for t in shown)) + 10
    page = Image.new("RGB", (label_w + grid.shape[1], grid.shape[0]), (255, 255, 255))
    page.paste(Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).convert("RGB"),
               (label_w, 0))
    draw = ImageDraw.Draw(page)
    for i, text in enumerate(shown):
        draw.text((4, int(padding + (i + 0.5) * row_h) - 5), text, fill=(0, 0, 0))
    return np.asarray(page)


def outline_filled(grid: np.ndarray, known_grid: np.ndarray) -> np.ndarray:
    """``grid`` (Hg, Wg, C) as RGB with the border of the filled-in part drawn in red:
    ``known_grid`` (Hg, Wg) is the mask laid out the same way (255 known, 0 filled, the
    padding between)."""
    rgb = np.repeat(grid, 3, axis=-1) if grid.shape[-1] == 1 else grid.copy()
    filled, known = known_grid < 64, known_grid > 192
    near = np.zeros_like(known)
    near[1:] |= known[:-1]
    near[:-1] |= known[1:]
    near[:, 1:] |= known[:, :-1]
    near[:, :-1] |= known[:, 1:]
    rgb[filled & near] = (230, 40, 40)
    return rgb


def save_artifacts(samples: torch.Tensor, out_dir: str | Path, cond: Any = None,
                   prefix: str = "samples", captions: Sequence[str] | None = None,
                   known: torch.Tensor | None = None,
                   class_names: Sequence[str] | None = None) -> list[Path]:
    """Write ``<prefix>.png`` (a grid of at most 10 x 10 samples, see :func:`image_grid`;
    with captions, one labelled row per prompt: :func:`captioned_grid`), ``<prefix>.pt``
    ({"samples", "cond"}) and ``<prefix>.npy`` (all samples as float32 (B, C, H, W) in
    [-1, 1]) into ``out_dir``, atomically; returns the paths. ``captions``: one per sample
    (``Pipeline.save`` passes a prompted run's prompts; evaluation, the data module's
    ``captions_of(cond)``). ``known`` (B, C, H, W) bool, for imputed samples: the border of
    the filled-in part is drawn in red. ``class_names`` (one per label): rows of classes
    are labelled with them.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if captions is not None:
        grid = captioned_grid(samples, captions)
    else:
        labels = cond.get("label") if isinstance(cond, dict) else cond
        grid = (class_grid(samples, labels, class_names)
                if class_names and labels is not None and known is None
                else image_grid(samples, labels))
        if known is not None:  # imputation: where the model filled in, outlined
            mask_img = known.float().amax(1, keepdim=True) * 2 - 1  # (B, 1, H, W) in {-1, 1}
            grid = outline_filled(grid, image_grid(mask_img, labels)[..., 0])
    png = out_dir / f"{prefix}.png"
    with atomic_path(png) as tmp:
        Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid).save(tmp, format="PNG")
    return [png, *save_raw(samples, cond, out_dir, prefix)]
