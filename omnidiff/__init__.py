"""omnidiff: a multimodal diffusion toolkit with one domain-agnostic core.

The package is built in layers, each importing only those below it (checked by the
import-linter contract in ``pyproject.toml``)::

    cli/         the `omnidiff` command
    tasks/       config composition, train, distill, sweeps, compare, demo (DictConfig stops here)
    inference/   Pipeline, load                 training/   LightningModules, callbacks, run
    folders model_file   the model.pt format methods/     latent diffusion, consistency, reflow,
    distillation options plugins/     the domain contract, registry, data helpers, the contract
    check nn/          shared network blocks          samplers/   solvers, grids, likelihood,
    generation core/        schedules, forward process, predictions, conditions, losses, guidance
    errors, _util, io, plots                    base
"""

import importlib

from omnidiff._legacy import MOVED, SPLIT, install_old_paths
from omnidiff._version import __version__

__all__ = ["__version__", "load", "Pipeline"]

install_old_paths()


def __getattr__(name: str):
    # lazy: `import omnidiff` stays light; omnidiff.load / omnidiff.Pipeline import on first use
    if name in ("load", "Pipeline"):
        from omnidiff.inference import pipeline

        return getattr(pipeline, name)
    if f"omnidiff.{name}" in MOVED or f"omnidiff.{name}" in SPLIT:  # omnidiff.pipeline.load
        return importlib.import_module(f"omnidiff.{name}")
    raise AttributeError(f"module 'omnidiff' has no attribute {name!r}")
