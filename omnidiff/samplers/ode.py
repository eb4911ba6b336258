"""Runge-Kutta samplers on the probability-flow ODE in the schedule's own time t.

dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat (Song et al. 2021; for the ``flow`` schedule this
is the rectified-flow velocity eps - x0, for ``edm`` — where sigma = sigma_max * t — it is
Karras et al.'s (x - D) / sigma up to the constant time scale).
"""

from __future__ import annotations

import torch

from .denoiser import Denoiser

__all__ = ["euler", "heun"]


def euler(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler's method (Karras et al. 2022, Algorithm 1 without the correction)."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        v, _ = denoise.velocity(x, t)
        x = x + (t_next - t) * v
    return x


def heun(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1): two NFE per step."""
    for t, t_next in zip(ts[:-1], ts[1:]):
        v, _ = denoise.velocity(x, t)
        x_pred = x + (t_next - t) * v
        v_next, _ = denoise.velocity(x_pred, t_next)
        x = x + (t_next - t) * 0.5 * (v + v_next)
    return x
