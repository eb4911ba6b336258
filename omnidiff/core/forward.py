"""The forward (noising) process.

* :func:`add_noise` — the closed form ``x_t = alpha(t) x0 + sigma(t) eps`` at any t (the
  "shortcut" that makes training cheap: no need to run the chain).
* :func:`markov_step` — one transition of the discrete DDPM chain,
  ``q(x_n | x_{n-1}) = N(sqrt(1 - beta_n) x_{n-1}, beta_n I)``; iterating it from x0 gives the
  same marginal as :func:`add_noise` at t = n / N for the ``linear`` schedule.
"""

from __future__ import annotations

import torch

from omnidiff._util import append_dims
from omnidiff.core.schedules import Schedule
from omnidiff.errors import UserError

__all__ = ["add_noise", "markov_step"]


def add_noise(x0: torch.Tensor, t: torch.Tensor, schedule: Schedule,
             noise: torch.Tensor) -> torch.Tensor:
    """x0, noise: (B, *event); t: (B,) -> x_t: (B, *event), in x0's dtype.

    Only the per-sample coefficients are computed in float64; the batch is never upcast (a
    float64 copy of a video batch would double its memory).
    """
    if t.shape != x0.shape[:1]:
        raise UserError(f"t must have shape (B,) = {tuple(x0.shape[:1])}, got {tuple(t.shape)}")
    alpha, sigma = schedule.alpha_sigma(t)  # (B,) float64
    a = append_dims(alpha.to(x0.dtype), x0.ndim)
    s = append_dims(sigma.to(x0.dtype), x0.ndim)
    return torch.addcmul(a * x0, s, noise.to(x0.dtype))


def markov_step(x_prev: torch.Tensor, beta: torch.Tensor | float,
                noise: torch.Tensor) -> torch.Tensor:
    """One DDPM step: x_n = sqrt(1 - beta) x_{n-1} + sqrt(beta) noise (beta scalar or (B,))."""
    beta = torch.as_tensor(beta, dtype=torch.float64, device=x_prev.device)
    if beta.ndim:
        beta = append_dims(beta, x_prev.ndim)
    return (torch.sqrt(1 - beta) * x_prev.double() + torch.sqrt(beta) * noise.double()
            ).to(x_prev.dtype)


q_sample = add_noise  # the name before 0.2 (DDPM's q(x_t | x0)), kept for plugins that use it
