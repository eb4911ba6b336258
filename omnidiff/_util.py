"""Tiny tensor helpers used across the core (the core only ever touches the batch dimension)."""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import torch

from omnidiff.errors import UserError

__all__ = ["append_dims", "check_choice", "is_number", "number_problem", "INT64_MAX",
           "nonfinite_rows", "map_cond"]

INT64_MAX = 2 ** 63 - 1  # the largest seed a torch.Generator takes


def append_dims(v: torch.Tensor, ndim: int) -> torch.Tensor:
    """Right-pad ``v: (B,)`` with singleton dims to broadcast against a ``(B, *event)`` tensor."""
    return v.reshape(v.shape + (1,) * (ndim - v.ndim))


def nonfinite_rows(x: torch.Tensor) -> int:
    """How many samples of ``x: (B, ...)`` hold a NaN or inf."""
    return int((~torch.isfinite(x)).reshape(x.shape[0], -1).any(1).sum())


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


def number_problem(key: str, value, kind: type, low: float, high: float | None = None
                   ) -> str | None:
    """None when ``value`` is a number for ``key`` (:func:`is_number`, and at most ``high``);
    otherwise the one-line message naming the key, the value and what to give."""
    if is_number(value, kind, low) and (high is None or value <= high):
        return None
    what = "an integer" if kind is int else "a number"
    if high is None or high == INT64_MAX and not is_number(value, kind, low):
        span = f">= {low:g}"  # the int64 bound is named only when it is the one broken
    elif high == INT64_MAX:
        span = f">= {low:g} below 2**63"
    else:
        span = f"in [{low:g}, {high:g}]"
    return f"{key}={value!r}: give {what} {span}"


def map_cond(fn: Callable[[torch.Tensor], torch.Tensor], cond: Any) -> Any:
    """Apply ``fn`` to every tensor of a condition: a tensor, ``None`` (stays ``None``) or a
    mapping of them (re-exported by :mod:`omnidiff.core.conditions`)."""
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        return {k: map_cond(fn, v) for k, v in cond.items()}
    return fn(cond)
