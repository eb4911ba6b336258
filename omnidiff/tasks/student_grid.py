"""The end of an ``omnidiff distill`` run: a multistep consistency student's sampling times.

A consistency student is accurate at the noise levels it was trained on and less so between
them, and how far down its second step should re-noise depends on the data (a narrow-mode
mixture wants a low level, digits a higher one). So once the run is done, its default number
of steps and twice as many each get a grid whose inner times are training levels, chosen by
the domain's main metric (:meth:`~omnidiff.inference.pipeline.Pipeline.calibrate`); model.pt
keeps them as the consistency sampler's calibrated grids, which
:meth:`~omnidiff.inference.pipeline.Pipeline.generate` uses by default
(``grid="logsnr_trailing"`` still asks for the plain one).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnidiff.inference.pipeline import load
from omnidiff.methods.distill_options import distill_options
from omnidiff.model_file import write_grids
from omnidiff.tasks.config import to_plain

__all__ = ["choose_student_grid"]


def choose_student_grid(cfg: Any, run_dir: Path) -> dict[str, Any] | None:
    """Choose and store the grids of a CD / CT student for its default steps and twice as many
    (``distill.steps``, at least 2) on ``distill.grid_samples`` samples (default
    ``eval.n_samples``; 0: none). Returns what was chosen per step count (for metrics.json),
    or None where nothing applies."""
    opts = distill_options(to_plain(cfg.distill))
    steps, n = int(opts["steps"]), opts["grid_samples"]
    n = int(cfg.eval.get("n_samples") or 0) if n is None else int(n)
    if opts["method"] == "reflow" or int(opts["segments"]) > 1 or n <= 0:
        return None
    model = run_dir / "model.pt"
    pipe = load(model)
    chosen = {}
    for k in (max(steps, 2), 2 * max(steps, 2)):
        st: dict[str, Any] = {}
        grid = pipe.calibrate("consistency", k, n=n, stats=st)
        times = ", ".join(f"{t:.3f}" for t in grid.tolist())
        print(f"omnidiff: {k}-step grid chosen among the student's noise levels: t = [{times}] "
              f"({st['metric']} {st['start_value']:.4g} on {st['start']} -> {st['value']:.4g}, "
              f"{n} samples, {st['seconds']:.0f} s)", flush=True)
        chosen[str(k)] = {"times": grid.tolist(), **{key: st[key] for key in (
            "metric", "start", "start_value", "value", "n", "seconds")}}
    write_grids(model, pipe.info["grids"])
    print(f"omnidiff: {model} samples on these grids by default (grid=logsnr_trailing: the "
          "plain one)", flush=True)
    return chosen
