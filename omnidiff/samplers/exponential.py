"""Exponential-integrator samplers in log-SNR time, data-prediction form.

With lambda = log(alpha / sigma) and h = lambda_next - lambda, the probability-flow ODE has the
exact solution ``x_next = (sigma_next / sigma) x + alpha_next * integral(e^{-(lambda_next - l)}
x0_hat(l) dl)``. Approximating x0_hat by a constant gives DDIM (Song et al. 2021), which is
first-order DPM-Solver++ (Lu et al. 2022); a linear extrapolation through the previous step's
x0_hat gives DPM-Solver++(2M).
"""

from __future__ import annotations

import math

import torch

from .denoiser import Denoiser, coefficients

__all__ = ["ddim", "ddpm", "dpmpp_2m"]


def ddim(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, eta: float = 0.0,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) with stochasticity eta in [0, 1].

    x_next = alpha_n x0 + sqrt(sigma_n^2 - c^2) eps + c z, c = eta sigma_n sqrt(1 - e^{-2h}).
    eta = 0 is the deterministic probability-flow step; eta = 1 samples DDPM's posterior
    q(x_next | x, x0_hat) exactly (ancestral sampling, Ho et al. 2020).
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    for t, t_next in zip(ts[:-1], ts[1:]):
        a, s, lam = coefficients(denoise.schedule, t)
        a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
        x0, eps = denoise(x, t)
        c = eta * s_n * math.sqrt(-math.expm1(-2.0 * (lam_n - lam)))
        x = a_n * x0 + math.sqrt(max(s_n * s_n - c * c, 0.0)) * eps
        if c > 0:
            x = x + c * torch.randn(x.shape, generator=generator, device=x.device,
                                    dtype=x.dtype)
    return x


def ddpm(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2): DDIM with eta = 1."""
    return ddim(denoise, x, ts, eta=1.0, generator=generator)


def dpmpp_2m(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, second order.

    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h_i; the first step is DDIM.
    """
    x0_prev, h_prev = None, None
    for t, t_next in zip(ts[:-1], ts[1:]):
        a, s, lam = coefficients(denoise.schedule, t)
        a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
        h = lam_n - lam
        x0, _ = denoise(x, t)
        d = x0 if x0_prev is None else x0 + (h / (2.0 * h_prev)) * (x0 - x0_prev)
        x = (s_n / s) * x - a_n * math.expm1(-h) * d
        x0_prev, h_prev = x0, h
    return x
