"""Files people look at for the points domain: scatter-plot PNGs plus the raw samples.

* points ``(n, 2)``: one scatter ``<prefix>.png`` (coloured by class when ``cond`` is given);
* clouds ``(n, N, 2)``: a grid ``<prefix>.png`` of small scatters, each titled by its class
  label when ``cond`` is given, capped so it reads at a glance
  (:func:`omnidiff.plots.pick_for_grid`): the first :data:`MAX_GRID` clouds (8 x 8), or with
  labels at most :data:`GRID_PER_CLASS` clouds of each of the first :data:`GRID_MAX_CLASSES`
  classes, in class order;
* always ``<prefix>.npy`` (all the samples, float32) and ``<prefix>_cond.npy`` when labels are
  given; with affine conditions also ``<prefix>_affine.npy`` and ``<prefix>_normalised.png``
  (the samples mapped back by their own condition).

Matplotlib is used through ``matplotlib.figure.Figure`` with the Agg canvas (never pyplot);
every file is written atomically through :mod:`omnidiff.io`.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from omnidiff.io import atomic_save_figure, atomic_save_npy
from omnidiff.plots import pick_for_grid

from .affine import split_cond, undo_affine

__all__ = ["MAX_GRID", "GRID_PER_CLASS", "GRID_MAX_CLASSES", "save_artifacts", "scatter_figure",
           "cloud_grid_figure"]

MAX_GRID = 64  # cloud grids: at most this many clouds (8 x 8) ...
GRID_PER_CLASS = 6  # ... or, with class labels, at most this many of each class
GRID_MAX_CLASSES = 10  # ... of at most this many classes (the smallest labels)


def _new_figure(width: float, height: float):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def scatter_figure(points: np.ndarray, cond: np.ndarray | None = None, title: str | None = None):
    """A square scatter of ``points: (n, 2)``, coloured by ``cond: (n,)`` when given."""
    fig = _new_figure(5, 5)
    ax = fig.add_subplot(1, 1, 1)
    size = float(np.clip(2000 / max(len(points), 1), 0.5, 12))
    if cond is None:
        ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.6, linewidths=0, color="C0")
    else:
        sc = ax.scatter(points[:, 0], points[:, 1], s=size, alpha=0.7, linewidths=0,
                        c=cond, cmap="tab10", vmin=-0.5, vmax=9.5)
        if len(np.unique(cond)) <= 10:
            fig.colorbar(sc, ax=ax, ticks=np.unique(cond), fraction=0.046, pad=0.04)
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(alpha=0.2)
    if title:
        ax.set_title(title)
    fig.tight_layout()
    return fig


def cloud_grid_figure(clouds: np.ndarray, cond: np.ndarray | None = None):
    """A grid (8 columns at most) of small scatters, one per cloud ``clouds: (n, N, 2)``, all of
    them (callers pass the few to show); titles from ``cond``."""
    n = len(clouds)
    cols = min(8, max(1, math.ceil(math.sqrt(n))))
    rows = math.ceil(n / cols)
    fig = _new_figure(1.5 * cols, 1.5 * rows + (0.2 * rows if cond is not None else 0))
    finite = clouds[np.isfinite(clouds).all(-1)]
    lim = float(np.abs(finite).max()) * 1.05 if finite.size else 1.0
    size = float(np.clip(300 / max(clouds.shape[1], 1), 0.5, 6))
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.scatter(clouds[i, :, 0], clouds[i, :, 1], s=size, linewidths=0, color="C0")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
        if cond is not None:
            ax.set_title(str(int(cond[i])), fontsize=8, pad=2)
    fig.tight_layout(pad=0.3)
    return fig


def _figure(x: np.ndarray, labels: np.ndarray | None, title: str):
    if x.ndim == 2:
        return scatter_figure(x, labels, title=f"{len(x)} {title}")
    keep = pick_for_grid(len(x), labels, per_class=GRID_PER_CLASS, max_items=MAX_GRID,
                         max_classes=GRID_MAX_CLASSES).numpy()
    return cloud_grid_figure(x[keep], None if labels is None else labels[keep])


def save_artifacts(samples: torch.Tensor, out_dir: str | Path, cond: Any = None,
                   prefix: str = "samples") -> list[Path]:
    """Write ``<prefix>.png``, ``<prefix>.npy`` (and ``<prefix>_cond.npy``) into ``out_dir``.

    ``samples``: ``(n, 2)`` points (``(n, D)``: the scatter shows the first two coordinates)
    or ``(n, N, 2)`` clouds; ``cond``: ``(n,)`` labels, ``(n, 3)``
    affine vectors, a dict of both, or None. With affine conditions the samples are also drawn
    mapped back by their own condition (``<prefix>_normalised.png``: one shape when the model
    follows its conditions) and the vectors saved as ``<prefix>_affine.npy``. Cloud grids show
    a capped selection (see the module docstring); the ``.npy`` files hold every sample.
    Returns the written paths.
    """
    x = samples.detach().cpu().float().numpy()
    if (x.ndim not in (2, 3) or x.shape[-1] < 2 or (x.ndim == 3 and x.shape[-1] != 2)
            or len(x) == 0):
        raise ValueError(f"points artifacts take (n, D >= 2) points or (n, N, 2) clouds with "
                         f"n >= 1; got samples of shape {tuple(x.shape)}")
    labels, affine = split_cond(cond)
    c = a = None
    if labels is not None:
        c = labels.detach().cpu().long().numpy()
        if c.shape != (len(x),):
            raise ValueError(f"cond must have shape ({len(x)},) to match the samples; got "
                             f"{tuple(c.shape)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    title = "samples" if x.shape[-1] == 2 else f"samples (coordinates 1-2 of {x.shape[-1]})"
    paths = [atomic_save_figure(_figure(x[..., :2], c, title), out / f"{prefix}.png", dpi=100)]
    if affine is not None:
        a = affine.detach().cpu().float()
        back = undo_affine(samples.detach().cpu().double(), a.double()).float().numpy()
        paths.append(atomic_save_figure(_figure(back, c, "samples, mapped back by their "
                                                "condition"),
                                        out / f"{prefix}_normalised.png", dpi=100))
        a = a.numpy()
    for name, arr in ((f"{prefix}.npy", x), (f"{prefix}_cond.npy", c),
                      (f"{prefix}_affine.npy", a)):
        if arr is None:
            continue
        paths.append(atomic_save_npy(arr, out / name))
    return paths
