"""Video artifacts: an animated GIF per clip (Pillow), one frame-strip PNG (a row per clip,
its prompt, class or "given k" named on the left; capped at a glanceable number of rows, see
:func:`frame_strip`), and the raw tensors of all clips (``.pt``, ``.npy``), all written
atomically."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from omnidiff.io import atomic_path, atomic_save_figure, save_raw
from omnidiff.plots import pick_for_grid

__all__ = ["save_artifacts", "frame_strip", "write_gif"]

GIF_SCALE = 4  # nearest-neighbour upscaling of small clips, so a GIF is big enough to watch
FRAME_MS = 125  # 8 frames per second
STRIP_ROWS = 16  # the frame strip shows at most this many clips ...
STRIP_PER_CLASS = 2  # ... or, with class labels, at most this many of each class
STRIP_MAX_CLASSES = 10  # ... of at most this many classes (the smallest labels)


def _uint8(x: torch.Tensor) -> np.ndarray:
    """``(..., C, H, W)`` in [-1, 1] -> ``(..., H, W, C)`` uint8."""
    y = ((x.float().clamp(-1, 1) + 1.0) * 127.5).round().to(torch.uint8)
    return y.movedim(-3, -1).numpy()


def write_gif(clip: torch.Tensor, path: Path, scale: int = GIF_SCALE) -> Path:
    """One clip ``(T, C, H, W)`` -> an animated, looping GIF."""
    from PIL import Image

    frames = _uint8(clip)  # (T, H, W, C)
    frames = frames.repeat(scale, 1).repeat(scale, 2)
    mode = "L" if frames.shape[-1] == 1 else "RGB"
    ims = [Image.fromarray(f[..., 0] if mode == "L" else f, mode) for f in frames]
    with atomic_path(path) as tmp:
        ims[0].save(tmp, format="GIF", save_all=True, append_images=ims[1:],
                    duration=FRAME_MS, loop=0)
    return path


def _row_names(cond: Any, n: int, classes: list[str] | None,
               captions: Sequence[str] | None = None) -> list[str]:
    """Each clip's name: its prompt (``captions``), class and "given k" (frames given)."""
    labels = cond.get("label") if isinstance(cond, dict) else cond
    masks = cond.get("mask") if isinstance(cond, dict) else None
    names = []
    for i in range(n):
        parts = [captions[i]] if captions is not None else []
        if isinstance(labels, torch.Tensor) and labels.dim() == 1:
            c = int(labels[i])
            parts.append(classes[c] if classes and c < len(classes) else str(c))
        if masks is not None and float(masks[i].sum()) > 0:
            parts.append(f"given {int(masks[i].sum())}")
        names.append(" ".join(parts))
    return names


def _file_tag(name: str, limit: int = 48) -> str:
    """A row name as part of a file name: its letters and digits, runs of others as ``_``."""
    return re.sub(r"[^A-Za-z0-9]+", "_", name).strip("_")[:limit]


def frame_strip(samples: torch.Tensor, cond: Any = None, classes: list[str] | None = None,
                max_rows: int = STRIP_ROWS, per_class: int = STRIP_PER_CLASS,
                max_classes: int = STRIP_MAX_CLASSES,
                captions: Sequence[str] | None = None, known: torch.Tensor | None = None):
    """A ``Figure`` of clips ``(N, T, C, H, W)``: one row per clip, one column per frame;
    frames that were given are outlined.

    Only some clips are drawn (:func:`omnidiff.plots.pick_for_grid`): with class labels
    (``cond`` (N,) or ``cond["label"]``) at most ``per_class`` of each of the first
    ``max_classes`` classes, in class order (20 rows by default); otherwise the first
    ``max_rows`` (16). ``captions``: each clip's prompt, named on the left of its row.
    ``known`` (N, T, C, H, W) bool, for imputed clips: the frames given (any of it) are
    outlined like the given frames of a continuation."""
    from matplotlib.figure import Figure

    labels = cond.get("label") if isinstance(cond, dict) else cond
    keep = pick_for_grid(len(samples), labels, per_class=per_class, max_items=max_rows,
                         max_classes=max_classes)
    n, t = len(keep), samples.shape[1]
    imgs = _uint8(samples[keep])  # (n, T, H, W, C)
    names = _row_names(cond, len(samples), classes, captions)
    names = [names[int(i)] for i in keep]
    masks = cond.get("mask") if isinstance(cond, dict) else None
    if known is not None:
        masks = known.flatten(2).any(-1).float()  # (N, T): frames given
    if masks is not None:
        masks = masks[keep]
    label_w = 0.8 + 0.055 * max((len(s) for s in names), default=0)  # inches, 8-pt text
    fig = Figure(figsize=(0.9 * t + label_w, 0.9 * n))
    axes = fig.subplots(n, t, squeeze=False)
    for i in range(n):
        for j in range(t):
            ax = axes[i, j]
            im = imgs[i, j]
            ax.imshow(im[..., 0] if im.shape[-1] == 1 else im, cmap="gray", vmin=0, vmax=255)
            ax.set_xticks([])
            ax.set_yticks([])
            given = masks is not None and float(masks[i, j]) > 0
            for s in ax.spines.values():
                s.set_edgecolor("tab:orange" if given else "none")
                s.set_linewidth(2.5 if given else 0)
            if j == 0 and names[i]:
                ax.set_ylabel(names[i], rotation=0, ha="right", va="center", fontsize=8)
            if i == 0:
                ax.set_title(f"t={j}", fontsize=7)
    fig.tight_layout(pad=0.3)
    return fig


def save_artifacts(samples: torch.Tensor, out_dir: str | Path, cond: Any = None,
                   prefix: str = "samples", data: Any = None,
                   captions: Sequence[str] | None = None,
                   known: torch.Tensor | None = None) -> list[Path]:
    """``<prefix>.png`` (frame strips of some clips, see :func:`frame_strip`),
    ``<prefix>_gif/NNN[_<name>].gif`` (every clip), ``.pt`` and ``.npy`` (every clip).
    ``captions``: one prompt per clip (``Pipeline.save`` passes a prompted run's prompts;
    evaluation, the data module's ``captions_of(cond)``), naming rows and GIFs. ``known``:
    imputed clips' given part (:func:`frame_strip`)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    x = samples.detach().float().cpu()
    classes = getattr(data, "classes", None) if data is not None else None
    names = _row_names(cond, len(x), classes, captions)
    gif_dir = out / f"{prefix}_gif"
    gif_dir.mkdir(exist_ok=True)
    strip = frame_strip(x, cond, classes, captions=captions, known=known)
    paths = [atomic_save_figure(strip, out / f"{prefix}.png", dpi=80)]
    for i, clip in enumerate(x):
        tag = _file_tag(names[i])
        paths.append(write_gif(clip, gif_dir / (f"{i:03d}_{tag}.gif" if tag else f"{i:03d}.gif")))
    return paths + save_raw(x, cond, out, prefix)
