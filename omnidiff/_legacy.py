"""The import paths of omnidiff before its layers (0.1.0), kept working for now.

Plugin authors were told to import ``omnidiff.domain``, ``omnidiff.data``,
``omnidiff.conditions``, ``omnidiff.testing`` and others, which now live in the layer
subpackages. A finder at the end of ``sys.meta_path`` answers those names: a module that moved
whole is the new module itself (the same object, so monkeypatching and ``isinstance`` keep
working); a module that was split by layer becomes a small module whose attributes are looked
up in the new ones. Each old path warns once (``DeprecationWarning``) with its new name.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings
from typing import Any

__all__ = ["MOVED", "SPLIT", "install_old_paths"]

# old path -> the module it became
MOVED = {
    "omnidiff.schedules": "omnidiff.core.schedules",
    "omnidiff.forward": "omnidiff.core.forward",
    "omnidiff.predictions": "omnidiff.core.predictions",
    "omnidiff.conditions": "omnidiff.core.conditions",
    "omnidiff.model": "omnidiff.core.model",
    "omnidiff.losses": "omnidiff.core.losses",
    "omnidiff.guidance": "omnidiff.core.guidance",
    "omnidiff.toy": "omnidiff.core.gaussian_mixture",
    "omnidiff.likelihood": "omnidiff.samplers.likelihood",
    "omnidiff.domain": "omnidiff.plugins.contract",
    "omnidiff.registry": "omnidiff.plugins.registry",
    "omnidiff.data": "omnidiff.plugins.data",
    "omnidiff.testing": "omnidiff.plugins.check",
    "omnidiff.autoencoder": "omnidiff.methods.latent.autoencoder",
    "omnidiff.latent": "omnidiff.methods.latent.domain",
    "omnidiff.latent_data": "omnidiff.methods.latent.data",
    "omnidiff.reconstruction": "omnidiff.methods.latent.losses",
    "omnidiff.consistency": "omnidiff.methods.consistency",
    "omnidiff.reflow": "omnidiff.methods.reflow",
    "omnidiff.condition_files": "omnidiff.inference.condition_files",
    "omnidiff.autoencoder_training": "omnidiff.training.autoencoder_module",
    "omnidiff.callbacks": "omnidiff.training.callbacks",
    "omnidiff.checkpointing": "omnidiff.training.checkpoints",
    "omnidiff.optim": "omnidiff.training.optim",
    "omnidiff.runs": "omnidiff.training.run_folder",
    "omnidiff.tensorboard": "omnidiff.training.tensorboard",
    "omnidiff.compare": "omnidiff.tasks.compare",
}
# old path -> the modules its names went to, searched in this order
SPLIT = {
    "omnidiff.checkpoint": ("omnidiff.model_file", "omnidiff.io",
                            "omnidiff.methods.distill_options"),
    "omnidiff.pipeline": ("omnidiff.inference.pipeline", "omnidiff.samplers.generate"),
    "omnidiff.config": ("omnidiff.tasks.config", "omnidiff.plugins.configs"),
    "omnidiff.distillation": ("omnidiff.training.distill_module",
                              "omnidiff.methods.distill_options", "omnidiff.tasks.distill"),
    "omnidiff.sweeps": ("omnidiff.tasks.sweeps", "omnidiff.training.run_folder"),
    "omnidiff.demo": ("omnidiff.tasks.demo",),
}


def _split_module(module: types.ModuleType, targets: tuple[str, ...]) -> None:
    """Give ``module`` the attributes of ``targets`` (looked up on first use)."""

    def __getattr__(attr: str) -> Any:
        for target in targets:
            new = importlib.import_module(target)
            if hasattr(new, attr):
                return getattr(new, attr)
        raise AttributeError(f"{module.__name__}.{attr} is gone; its code now lives in "
                             f"{', '.join(targets)}")

    module.__getattr__ = __getattr__  # type: ignore[attr-defined]


class _OldPaths(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name in MOVED or name in SPLIT:
            return importlib.util.spec_from_loader(name, self)
        return None

    def create_module(self, spec: Any) -> None:
        return None  # the default module; exec_module fills or replaces it

    def exec_module(self, module: types.ModuleType) -> None:
        name = module.__name__
        new = MOVED.get(name) or " / ".join(SPLIT[name])
        warnings.warn(f"{name} is now {new}; the old path will be removed in a later release",
                      DeprecationWarning, stacklevel=2)
        if name in MOVED:  # the import system returns what sys.modules holds after exec
            sys.modules[name] = importlib.import_module(MOVED[name])
        else:
            _split_module(module, SPLIT[name])


def install_old_paths() -> None:
    """Answer the old import paths (once per interpreter)."""
    if not any(isinstance(f, _OldPaths) for f in sys.meta_path):
        sys.meta_path.append(_OldPaths())
