"""Training plots with matplotlib's object API (``Figure``, never pyplot: safe in a library)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any, Sequence

from omnidiff.io import atomic_save_figure

__all__ = ["read_csv_log", "loss_figure", "plot_loss_from_csv", "pick_for_grid", "smooth"]


def read_csv_log(path: str | Path, key: str) -> tuple[list[int], list[float]]:
    """(steps, values) of one column of Lightning's CSVLogger ``metrics.csv``."""
    steps, values = [], []
    with open(path, newline="") as fh:
        for row in csv.DictReader(fh):
            v = row.get(key)
            if v in (None, ""):
                continue
            try:
                val = float(v)
                step = int(float(row.get("step") or len(steps)))
            except ValueError:
                continue
            if math.isfinite(val):
                steps.append(step)
                values.append(val)
    return steps, values


def pick_for_grid(n: int, cond: Any = None, per_class: int = 10, max_items: int = 64,
                  max_classes: int = 10):
    """Indices (a long tensor) of the samples, out of ``n``, that a grid picture should show, so
    that it stays readable at a glance; the rest belong in the raw files only.

    * ``cond`` is class labels (a 1-D integer tensor or array of length ``n``): at most
      ``per_class`` samples of each class (in their order), classes ascending, at most
      ``max_classes`` classes (the smallest labels present);
    * anything else (None, vectors, masks, dicts): the first ``max_items`` samples.
    """
    import torch

    if not isinstance(cond, torch.Tensor) and hasattr(cond, "shape") and hasattr(cond, "dtype"):
        try:  # a numpy array
            cond = torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):
            cond = None
    if (isinstance(cond, torch.Tensor) and cond.dim() == 1 and len(cond) == n
            and not cond.is_floating_point() and not cond.is_complex()
            and cond.dtype != torch.bool):
        c = cond.detach().cpu().long()
        picks = [torch.nonzero(c == k).reshape(-1)[:per_class]
                 for k in torch.unique(c)[:max_classes]]  # unique is sorted
        return torch.cat(picks) if picks else torch.zeros(0, dtype=torch.long)
    return torch.arange(min(n, max_items))


def smooth(values: Sequence[float], window: int) -> list[float]:
    """Trailing moving average."""
    out, acc = [], 0.0
    for i, v in enumerate(values):
        acc += v
        if i >= window:
            acc -= values[i - window]
        out.append(acc / min(i + 1, window))
    return out


def loss_figure(steps: Sequence[int], losses: Sequence[float],
                val: tuple[Sequence[int], Sequence[float]] | None = None, title: str = "loss"):
    """A ``Figure`` with the raw and smoothed training loss (log scale) and validation loss."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6, 4), dpi=120)
    ax = fig.add_subplot()
    ax.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train/loss")
    if len(losses) > 10:
        ax.plot(steps, smooth(losses, max(5, len(losses) // 20)), color="tab:blue", lw=1.6,
                label="train/loss (smoothed)")
    if val is not None and len(val[0]):
        ax.plot(val[0], val[1], "o-", color="tab:orange", lw=1.2, ms=3, label="val/loss")
    if losses and min(losses) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return fig


def plot_loss_from_csv(csv_path: str | Path, dest: str | Path) -> dict[str, Any]:
    """Plot ``train/loss`` (and ``val/loss``) to ``dest``; return a small loss summary."""
    steps, losses = read_csv_log(csv_path, "train/loss")
    val = read_csv_log(csv_path, "val/loss")
    summary: dict[str, Any] = {}
    if not losses:
        return summary
    k = max(1, min(20, len(losses) // 10))
    summary["loss_first"] = sum(losses[:k]) / k  # mean of the first/last k logged values
    summary["loss_last"] = sum(losses[-k:]) / k
    if val[1]:
        summary["val_loss_last"] = val[1][-1]
    atomic_save_figure(loss_figure(steps, losses, val), dest)
    summary["loss_plot"] = str(dest)
    return summary
