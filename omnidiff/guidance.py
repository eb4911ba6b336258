"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a conditional model.

``guided = classifier_free(model, cond, scale)`` is a plain ``guided(x_t, t) -> prediction``
callable for the samplers. It evaluates the conditional and unconditional halves in one batched
call (``drop`` marks the unconditional half; the domain's network substitutes its own null
condition) and returns ``u + scale * (c - u)``. Because every prediction type is an affine
function of (x0, eps) at fixed (x_t, t), guiding the prediction equals guiding eps.
Scale 1 is the conditional model, scale 0 the unconditional one.
"""

from __future__ import annotations

from typing import Callable

import torch

__all__ = ["classifier_free", "conditional"]


def conditional(model: Callable[..., torch.Tensor], cond: torch.Tensor | None
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Bind a condition without guidance: ``fn(x_t, t) = model(x_t, t, cond=cond)``."""
    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x_t, t, cond=cond, drop=None)
    return fn


def classifier_free(model: Callable[..., torch.Tensor], cond: torch.Tensor | None,
                    scale: float | None) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model(x_t, t, cond=, drop=)`` -> guided ``fn(x_t, t)``; ``scale=None``: no guidance."""
    if scale is None:
        return conditional(model, cond)
    if cond is None:
        raise ValueError("guidance needs a condition: pass cond=... (class labels), or "
                         "guidance=None for an unconditional model")
    scale = float(scale)

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        drop = torch.cat([torch.zeros(b, dtype=torch.bool, device=x_t.device),
                          torch.ones(b, dtype=torch.bool, device=x_t.device)])
        out = model(torch.cat([x_t, x_t]), torch.cat([t, t]), cond=torch.cat([cond, cond]),
                    drop=drop)
        c, u = out.chunk(2)
        return u + scale * (c - u)
    fn.cfg_batches = 2  # for NFE accounting: one call evaluates the network on 2 halves
    return fn
