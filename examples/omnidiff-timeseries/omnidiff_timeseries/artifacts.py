"""Files people look at: a grid of line plots ``<prefix>.png`` plus ``<prefix>.npy``.

Matplotlib through ``matplotlib.figure.Figure`` (never pyplot); every file is written
atomically through :mod:`omnidiff.io`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from omnidiff.io import atomic_save_figure, atomic_save_npy

__all__ = ["MAX_GRID", "grid_figure", "save_artifacts"]

MAX_GRID = 16


def grid_figure(x: np.ndarray, cond: np.ndarray | None = None, names: tuple[str, ...] = ()):
    """One small line plot per series ``x: (n, C, L)`` (one line per channel)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(x)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.6 * cols, 1.6 * rows), dpi=100)
    FigureCanvasAgg(fig)
    finite = x[np.isfinite(x)]
    lim = float(np.abs(finite).max()) * 1.05 if finite.size else 1.0
    for i in range(n):
        ax = fig.add_subplot(rows, cols, i + 1)
        for c in range(x.shape[1]):
            ax.plot(x[i, c], lw=1.0, color=f"C{c % 10}")
        ax.set_ylim(-lim, lim)
        ax.set_xticks([])
        ax.set_yticks([])
        if cond is not None:
            k = int(cond[i])
            ax.set_title(names[k] if k < len(names) else str(k), fontsize=8, pad=2)
    fig.tight_layout(pad=0.3)
    return fig


def save_artifacts(samples: torch.Tensor, out_dir: str | Path, cond: torch.Tensor | None = None,
                   prefix: str = "samples") -> list[Path]:
    """Write ``<prefix>.png`` (at most :data:`MAX_GRID` series), ``<prefix>.npy`` and, with
    ``cond``, ``<prefix>_cond.npy``. ``samples: (n, C, L)``, ``cond: (n,)``."""
    from .data import WAVEFORMS

    x = samples.detach().cpu().float().numpy()
    if x.ndim != 3 or len(x) == 0:
        raise ValueError(f"timeseries artifacts take samples (n, channels, length) with n >= 1; "
                         f"got {tuple(x.shape)}")
    c = None if cond is None else cond.detach().cpu().long().numpy()
    if c is not None and c.shape != (len(x),):
        raise ValueError(f"cond must have shape ({len(x)},); got {tuple(c.shape)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k = min(len(x), MAX_GRID)
    fig = grid_figure(x[:k], None if c is None else c[:k], WAVEFORMS)
    paths = [atomic_save_figure(fig, out / f"{prefix}.png", dpi=100)]
    for name, arr in ((f"{prefix}.npy", x), (f"{prefix}_cond.npy", c)):
        if arr is not None:
            paths.append(atomic_save_npy(arr, out / name))
    return paths
