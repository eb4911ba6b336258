"""Tiny tensor helpers used across the core (the core only ever touches the batch dimension)."""

from __future__ import annotations

import math

import torch

from .errors import UserError

__all__ = ["append_dims", "check_choice", "is_number"]


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Right-pad ``v: (B,)`` with singleton dims to broadcast against a ``(B, *event)`` tensor."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def check_choice(kind: str, value: str, choices) -> str:
    if value not in choices:
        raise UserError(f"unknown {kind} {value!r}; choose one of: {', '.join(choices)}")
    return value


def is_number(value, kind: type, low: float) -> bool:
    """Whether ``value`` is an ``int`` (``kind=int``: a whole number) or a finite number
    (``kind=float``) of at least ``low``; booleans, NaN and inf are not numbers (user
    options)."""
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value) and value >= low
            and (kind is float or float(value).is_integer()))
