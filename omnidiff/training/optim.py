"""Optimisation: AdamW with a linear learning-rate warm-up, and the EMA's averaging rule.

A training config's ``optim:`` block is passed whole: ``ema_decay`` / ``ema_warmup`` to the
EMA callback (:data:`EMA_KEYS`), every other key to :func:`adamw` (so ``+optim.betas=[0.9,0.99]``
works without touching the training module). Pure torch; no Lightning.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Iterable

import torch

from omnidiff.errors import ConfigError

__all__ = ["EMA_KEYS", "OPTIM_KEYS", "adamw", "optimizer_args", "ema_decay_at", "ema_update"]

EMA_KEYS = ("ema_decay", "ema_warmup")


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float = 1e-3, weight_decay: float = 0.0,
          warmup: int = 0, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8
          ) -> dict[str, Any]:
    """AdamW (weight decay on matrices only: biases and norm gains are not decayed) and a
    linear warm-up over ``warmup`` optimizer steps, in Lightning's ``configure_optimizers``
    form."""
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(weight_decay)},
                             {"params": no_decay, "weight_decay": 0.0}], lr=float(lr),
                            betas=tuple(float(b) for b in betas), eps=float(eps))
    steps = max(0, int(warmup))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: min(1.0, (step + 1) / steps) if steps else 1.0)
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


# the keys of a config's ``optim:`` block: adamw's settings and the EMA's
OPTIM_KEYS = tuple(p for p in inspect.signature(adamw).parameters if p != "params") + EMA_KEYS


def optimizer_args(optim: dict[str, Any]) -> dict[str, Any]:
    """The ``optim:`` block without the EMA's keys, checked against :data:`OPTIM_KEYS`."""
    unknown = sorted(set(optim) - set(OPTIM_KEYS))
    if unknown:
        raise ConfigError(f"optim.{unknown[0]} is not an optimizer option; choose from: "
                          f"{', '.join(OPTIM_KEYS)}")
    return {k: v for k, v in optim.items() if k not in EMA_KEYS}


def ema_decay_at(n: int, decay: float, warmup: bool = True) -> float:
    """The EMA decay for the update after ``n`` earlier ones: ``decay``, or with ``warmup``
    ``min(decay, (1 + n) / (10 + n))`` so that the average of a short run is not dominated by
    its untrained start (the first update keeps 10%, the 100th 92%, and from about
    ``10 / (1 - decay)`` updates on the full ``decay``)."""
    return min(float(decay), (1.0 + n) / (10.0 + n)) if warmup else float(decay)


def ema_update(decay: float, warmup: bool = True) -> Callable[..., None]:
    """A ``multi_avg_fn`` for :class:`torch.optim.swa_utils.AveragedModel`: moves the averaged
    tensors toward the model's by ``1 - ema_decay_at(n_averaged, decay, warmup)``."""
    if not 0.0 <= float(decay) <= 1.0:
        raise ConfigError(f"optim.ema_decay={decay!r}: give a number in [0, 1] (or null for no "
                          "EMA)")

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor],
               n_averaged: torch.Tensor) -> None:
        weight = 1.0 - ema_decay_at(int(n_averaged), decay, warmup)
        floats = [(a, c) for a, c in zip(averaged, current) if a.is_floating_point()]
        if floats:
            torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], weight)
        for a, c in zip(averaged, current):
            if not a.is_floating_point():
                a.copy_(c)  # integer buffers (counters) follow the model

    return update
