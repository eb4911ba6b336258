"""Optimisation: AdamW with a linear learning-rate warm-up and an optional cosine decay, and the
EMA's averaging rule.

A training config's ``optim:`` block is passed whole: ``ema_decay`` / ``ema_warmup`` to the
EMA callback (:data:`EMA_KEYS`), every other key to :func:`adamw` (so ``+optim.betas=[0.9,0.99]``
works without touching the training module). Pure torch; no Lightning.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Callable, Iterable

import torch

from omnidiff.errors import ConfigError

__all__ = ["EMA_KEYS", "OPTIM_KEYS", "adamw", "lr_factor", "optimizer_args", "ema_decay_at",
           "ema_update"]

EMA_KEYS = ("ema_decay", "ema_warmup")


def lr_factor(step: int, warmup: int = 0, decay_steps: int = 0, final_lr: float = 0.0
              ) -> float:
    """The learning rate's multiplier at optimizer step ``step``: a linear warm-up over
    ``warmup`` steps, then 1, or with ``decay_steps`` a cosine from 1 down to ``final_lr`` at
    step ``decay_steps`` (held there after it)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if decay_steps <= warmup:
        return 1.0
    progress = min(1.0, (step - warmup) / (decay_steps - warmup))
    return final_lr + (1.0 - final_lr) * 0.5 * (1.0 + math.cos(math.pi * progress))


def adamw(params: Iterable[torch.nn.Parameter], *, lr: float = 1e-3, weight_decay: float = 0.0,
          warmup: int = 0, decay_steps: int = 0, final_lr: float = 0.0,
          betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8) -> dict[str, Any]:
    """AdamW (weight decay on matrices only: biases and norm gains are not decayed) with the
    schedule of :func:`lr_factor` (``decay_steps`` 0: constant after the warm-up), in
    Lightning's ``configure_optimizers`` form."""
    _check_decay(decay_steps, final_lr, warmup)
    decay, no_decay = [], []
    for p in params:
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": float(weight_decay)},
                             {"params": no_decay, "weight_decay": 0.0}], lr=float(lr),
                            betas=tuple(float(b) for b in betas), eps=float(eps))
    shape = {"warmup": max(0, int(warmup)), "decay_steps": int(decay_steps),
             "final_lr": float(final_lr)}
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, **shape))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _check_decay(decay_steps: Any, final_lr: Any, warmup: Any = 0) -> None:
    if int(decay_steps) < 0 or not 0.0 <= float(final_lr) <= 1.0:
        raise ConfigError(f"optim.decay_steps={decay_steps!r} / optim.final_lr={final_lr!r}: "
                          "give steps >= 0 (0: no decay) and a fraction of lr in [0, 1]")
    if 0 < int(decay_steps) <= int(warmup or 0):
        raise ConfigError(f"optim.decay_steps={decay_steps} ends before optim.warmup={warmup} "
                          f"does, so nothing would decay: give more steps than the warm-up "
                          f"(0: no decay)")


# the keys of a config's ``optim:`` block: adamw's settings and the EMA's
OPTIM_KEYS = tuple(p for p in inspect.signature(adamw).parameters if p != "params") + EMA_KEYS


def optimizer_args(optim: dict[str, Any]) -> dict[str, Any]:
    """The ``optim:`` block without the EMA's keys, checked against :data:`OPTIM_KEYS` (and its
    decay's values)."""
    unknown = sorted(set(optim) - set(OPTIM_KEYS))
    if unknown:
        raise ConfigError(f"optim.{unknown[0]} is not an optimizer option; choose from: "
                          f"{', '.join(OPTIM_KEYS)}")
    _check_decay(optim.get("decay_steps", 0), optim.get("final_lr", 0.0),
                 optim.get("warmup", 0))  # before any work
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
