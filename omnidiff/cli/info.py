"""``omnidiff info checkpoint=PATH [plot=FILE.png sampler= steps= threads=]``: what a model
is (domain, shapes, condition and class names, schedule, prediction, sampler defaults,
calibrated grids, training) and, with ``plot=``, a picture of its noise schedule with the
sampler's times on it (:mod:`omnidiff.inference.describe`)."""

from __future__ import annotations

from pathlib import Path

from omnidiff.cli.args import key_values, number
from omnidiff.errors import UsageError
from omnidiff.inference.describe import describe, schedule_figure
from omnidiff.inference.pipeline import load
from omnidiff.io import atomic_save_figure

__all__ = ["cmd_info", "INFO_KEYS"]

INFO_KEYS = {"checkpoint", "plot", "sampler", "steps", "grid", "threads"}


def cmd_info(args: list[str]) -> int:
    opts = key_values(args, INFO_KEYS, "info")
    if not opts.get("checkpoint"):
        raise UsageError("info needs checkpoint=PATH (a model.pt, .ckpt or diffusers folder)")
    plot = opts.get("plot")
    if plot is not None and Path(str(plot)).suffix.lower() not in (".png", ".pdf", ".svg"):
        raise UsageError(f"plot={plot!r}: name a .png, .pdf or .svg file to draw the "
                         "schedule into")
    steps = number(opts, "steps", int, None, 1)
    pipe = load(Path(str(opts["checkpoint"])), device="cpu", threads=opts.get("threads"))
    rows = describe(pipe)
    width = max(len(k) for k, _ in rows)
    print(f"{opts['checkpoint']}")
    for key, value in rows:
        print(f"  {key:<{width}}  {value}")
    if plot is not None:
        grid = {"grid": opts["grid"]} if opts.get("grid") is not None else {}
        fig = schedule_figure(pipe, opts.get("sampler"), steps, **grid)
        print(f"wrote {atomic_save_figure(fig, Path(str(plot)).expanduser())} (alpha, sigma "
              "and log-SNR over t; the sampler's times as dots)")
    return 0
