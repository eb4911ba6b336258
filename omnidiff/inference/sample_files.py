"""Samples and masks read from files, for ``omnidiff sample known=FILE mask=... init=FILE``.

* ``.npy`` / ``.pt``: samples ``(*event)`` or ``(n, *event)`` of the model's kind, and masks of
  the same shape (bool, or 0/1: **True where known**), for every domain;
* other formats through the domain's data module, where it defines them:
  ``read_sample(path) -> (*event)`` (an image PNG, a WAV, a GIF or frame folder) and
  ``read_mask(value) -> (*event) bool`` (a mask PNG, white where the model fills in; a gap in
  seconds ``0.10-0.13``; the given frames ``0,1,6,7``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omnidiff.errors import PipelineError

__all__ = ["read_samples", "read_mask"]

ARRAY_SUFFIXES = (".npy", ".pt", ".pth")


def _array(path: Path, what: str) -> torch.Tensor:
    import numpy as np

    try:
        if path.suffix.lower() == ".npy":
            return torch.as_tensor(np.load(path, allow_pickle=False))
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise PipelineError(f"cannot read {path} as {what} ({type(exc).__name__})") from None
    if not isinstance(obj, torch.Tensor):
        raise PipelineError(f"{path} holds a {type(obj).__name__}, not a tensor of {what}")
    return obj


def read_samples(pipe: Any, value: Any, what: str = "known") -> torch.Tensor:
    """``value`` (a file) as samples of ``pipe``'s model, ``(*event)`` or ``(n, *event)``."""
    path = Path(str(value)).expanduser()
    if not path.exists():
        raise PipelineError(f"{what}={str(value)!r} is not a file; pass a .npy / .pt of samples"
                            f" {tuple(pipe.sample_shape)}, or a file the domain reads")
    if path.suffix.lower() in ARRAY_SUFFIXES:
        return _array(path, "samples").float()
    reader = getattr(pipe.data(), "read_sample", None)
    if reader is None:
        raise PipelineError(f"the {pipe.domain_name!r} domain cannot read {path.suffix or 'a '}"
                            f" files as samples; pass {what}= a .npy / .pt of shape "
                            f"{tuple(pipe.sample_shape)}")
    return reader(path)


def read_mask(pipe: Any, value: Any) -> torch.Tensor:
    """``mask=``: a .npy / .pt (True where known), or what the domain's ``read_mask`` takes."""
    text = str(value)
    path = Path(text).expanduser()
    if path.suffix.lower() in ARRAY_SUFFIXES:
        if not path.is_file():
            raise PipelineError(f"mask={text!r} is not a file")
        return _array(path, "a mask")
    reader = getattr(pipe.data(), "read_mask", None)
    if reader is None:
        raise PipelineError(f"mask={text!r}: the {pipe.domain_name!r} domain reads no masks of "
                            "its own; pass a .npy / .pt of bools, True where known= holds")
    return reader(value)
