"""Conditions read from files: ``omnidiff sample cond=FILE`` and ``Pipeline.read_condition``.

* ``.npy`` / ``.pt`` (and ``.npz``, a named set: one array per field) hold either a condition of
  the model's specification, or data of the model's kind, which the domain turns into its
  condition (``Pipeline.condition``: a waveform's mel spectrogram, a clip's first frames);
* any other format (``.wav``, ``.png``, ...) is read by the domain's data module, where it
  defines ``read_condition(path) -> condition``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omnidiff.errors import ConditionError, PipelineError

__all__ = ["read_condition_file", "CONDITION_SUFFIXES"]

CONDITION_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


def _load(path: Path) -> Any:
    import numpy as np

    suffix = path.suffix.lower()
    if suffix == ".npy":
        return torch.as_tensor(np.load(path, allow_pickle=False))
    if suffix == ".npz":
        with np.load(path, allow_pickle=False) as z:
            return {k: torch.as_tensor(z[k]) for k in z.files}
    return torch.load(path, map_location="cpu", weights_only=True)


def _from_data(pipe: Any, obj: Any) -> Any | None:
    """``obj`` read as data of the model's kind -> its condition, or None if it is not."""
    if not isinstance(obj, torch.Tensor) or not obj.is_floating_point():
        return None
    rank = len(pipe.sample_shape)
    if obj.dim() not in (rank, rank + 1) or getattr(pipe.data(), "condition", None) is None:
        return None
    x = obj if obj.dim() == rank + 1 else obj[None]
    fixed = not pipe.cond_spec.variable_shape
    if fixed and tuple(x.shape[1:]) != pipe.sample_shape:
        return None
    try:
        return pipe.condition(x.float())
    except (ValueError, RuntimeError, TypeError, IndexError):
        return None  # not data this domain computes a condition from


def read_condition_file(pipe: Any, path: Path) -> Any:
    """The condition held by ``path`` for ``pipe``'s model (one clear line if none)."""
    spec = pipe.cond_spec
    if not spec.conditional:
        raise PipelineError("this model is unconditional: drop cond=")
    if not path.is_file():
        raise PipelineError(f"cond file {str(path)!r} not found")
    if path.suffix.lower() not in CONDITION_SUFFIXES:
        reader = getattr(pipe.data(), "read_condition", None)
        if reader is None:
            raise PipelineError(f"the {pipe.domain_name!r} domain cannot read {path.suffix} "
                                f"files; pass a .npy / .pt holding {spec.describe()}")
        return reader(path)
    try:
        obj = _load(path)
    except Exception as exc:
        raise PipelineError(f"cannot read {path} ({type(exc).__name__}); pass a .npy / .pt "
                            f"holding {spec.describe()}") from None
    try:
        spec.check(obj)
        return obj
    except ConditionError as exc:
        cond = _from_data(pipe, obj)
        if cond is None:
            shape = ", ".join(map(str, pipe.sample_shape))
            raise PipelineError(f"{path}: {exc}" + (
                f" (or data (n, {shape}) to compute it from)"
                if getattr(pipe.data(), "condition", None) is not None else "")) from None
        return cond
