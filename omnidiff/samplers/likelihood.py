"""Exact log-likelihood through the probability-flow ODE (Song et al. 2021, sec. 4.3 / App. D.2).

Along the ODE dx/dt = v(x, t) the log-density obeys d log p_t(x_t) / dt = -div v(x_t, t)
(the instantaneous change of variables, Chen et al. 2018), so integrating x and the divergence
from t_eps (default: the schedule's t_min) up to t_max gives

    log p_{t_eps}(x) = log N(x_T; 0, prior_std^2 I) + int_{t_eps}^{t_max} div v(x_t, t) dt,

which is the data's log-density up to the (tiny) noise sigma(t_eps). The divergence is exact
(autograd, one backward pass per dimension: for small events) or Hutchinson's unbiased
estimate z^T (dv/dx) z with Rademacher z drawn once per trajectory from an explicit
``torch.Generator`` (Grathwohl et al. 2019). The ODE is solved with the adaptive Dormand-Prince
solver of the samplers (``solver="rk45"``) or Heun on a fixed log-SNR grid (``"heun"``).

For discrete data (e.g. 8-bit images scaled to [-1, 1]) ``dequantize=levels`` adds uniform
noise over each bin of width delta = 2 / (levels - 1) and reports the variational bound
log P(x) >= E log p(x + delta (u - 1/2)) + D log delta (Theis et al. 2016; Ho et al. 2020).
Bits per dimension = -log-likelihood / (D ln 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from omnidiff._util import check_choice, nonfinite_rows
from omnidiff.core.predictions import PREDICTIONS
from omnidiff.core.schedules import Schedule, get_schedule
from omnidiff.errors import DataError
from omnidiff.samplers.denoiser import Denoiser
from omnidiff.samplers.grids import timesteps
from omnidiff.samplers.helpers import dopri5

__all__ = ["LogLikelihood", "log_likelihood", "DIVERGENCES", "SOLVERS"]

DIVERGENCES = ("auto", "exact", "hutchinson")
SOLVERS = ("rk45", "heun")
EXACT_MAX_DIM = 16  # "auto" uses the exact divergence up to this many dimensions


@dataclass
class LogLikelihood:
    """nats: (B,) log-likelihood per sample (nats); bits_per_dim: (B,) = -nats / (D ln 2);
    nfe: velocity evaluations (each also costs D or 1 backward passes for the divergence);
    space: where the density lives ("latent" for a latent model: D is the latents' size, and
    the autoencoder's change of volume is not included)."""

    nats: torch.Tensor
    bits_per_dim: torch.Tensor
    nfe: int
    space: str = "data"  # "latent": of the autoencoder's latents (a latent diffusion model)


def _rademacher(shape, generator, device) -> torch.Tensor:
    z = torch.randint(0, 2, shape, generator=generator, dtype=torch.int64)
    return (2 * z - 1).to(device=device, dtype=torch.float64)


def _drift(denoise: Denoiser, x: torch.Tensor, t: float, z: torch.Tensor | None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(v(x, t), div v(x, t)): (B, *event), (B,). z: Rademacher probe, or None for exact."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        v = denoise.velocity(x, t)
        if z is not None:
            g, = torch.autograd.grad((v * z).sum(), x)
            div = (g * z).flatten(1).sum(1)
        else:
            vf, d = v.flatten(1), x[0].numel()
            div = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
            for i in range(d):  # one backward pass per dimension
                g, = torch.autograd.grad(vf[:, i].sum(), x, retain_graph=i < d - 1)
                div = div + g.flatten(1)[:, i]
    return v.detach(), div.detach()


def _check_data(x: Any, dtype: torch.dtype) -> None:
    """Data ``(n >= 1, *event)``, floating and finite in the network's ``dtype``, before any
    solving (NaN data would otherwise run to the solver's step limit)."""
    if not isinstance(x, torch.Tensor) or x.dim() < 2 or x.shape[0] < 1:
        raise DataError(f"likelihood needs data of shape (n >= 1, *event); got "
                        f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    rows = nonfinite_rows(x.detach().to(dtype if dtype.is_floating_point else torch.float32))
    if rows:
        raise DataError(f"the data holds NaN or inf (or values out of range for {dtype}) in "
                        f"{rows} of {x.shape[0]} samples; drop or fix those rows")


def log_likelihood(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   x: torch.Tensor, *, schedule: Schedule | str, prediction: str,
                   divergence: str = "auto", solver: str = "rk45", steps: int = 50,
                   rtol: float = 1e-5, atol: float = 1e-5, t_eps: float | None = None,
                   dequantize: int | None = None, generator: torch.Generator | None = None,
                   dtype: torch.dtype | None = None) -> LogLikelihood:
    """Log-likelihood of data ``x: (B, *event)`` under ``model(x_t, t) -> prediction``.

    divergence: ``exact`` | ``hutchinson`` | ``auto`` (exact up to 16 dimensions).
    solver: ``rk45`` (adaptive, ``rtol``/``atol``) or ``heun`` (``steps`` steps, uniform in
    log-SNR). ``generator`` drives the Hutchinson probe and the dequantisation noise.
    ``dtype``: the network's dtype (default: ``x``'s); arithmetic is float64.
    """
    schedule = get_schedule(schedule)
    check_choice("prediction", prediction, PREDICTIONS)
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("solver", solver, SOLVERS)
    _check_data(x, dtype or x.dtype)
    x = x.double()
    d = x[0].numel()
    if divergence == "auto":
        divergence = "exact" if d <= EXACT_MAX_DIM else "hutchinson"
    offset = 0.0
    if dequantize:
        delta = 2.0 / (int(dequantize) - 1)
        u = torch.rand(x.shape, generator=generator, dtype=torch.float64).to(x.device)
        x = x + delta * (u - 0.5)
        offset = d * math.log(delta)
    z = _rademacher(x.shape, generator, x.device) if divergence == "hutchinson" else None
    denoise = Denoiser(model, schedule, prediction, dtype or torch.float32)
    t0 = schedule.t_min if t_eps is None else float(t_eps)
    t1 = schedule.t_max
    b = x.shape[0]

    def f(y: torch.Tensor, t: float) -> torch.Tensor:  # y: (B, D + 1) = [x, delta log p]
        v, div = _drift(denoise, y[:, :d].reshape(x.shape), t, z)
        return torch.cat([v.reshape(b, d), div[:, None]], 1)

    y = torch.cat([x.reshape(b, d), torch.zeros(b, 1, dtype=torch.float64, device=x.device)], 1)
    if solver == "rk45":
        y, _ = dopri5(f, y, t0, t1, rtol=rtol, atol=atol)
    else:
        ts = timesteps(schedule, int(steps) + 1, "logsnr").tolist()[:-1][::-1]  # increasing
        ts[0] = t0
        for ta, tb in zip(ts[:-1], ts[1:]):
            k1 = f(y, ta)
            k2 = f(y + (tb - ta) * k1, tb)
            y = y + (tb - ta) * 0.5 * (k1 + k2)
    x_T, delta = y[:, :d], y[:, d]
    ps = schedule.prior_std
    prior = -0.5 * (x_T ** 2).sum(1) / ps ** 2 - 0.5 * d * math.log(2 * math.pi * ps ** 2)
    nats = prior + delta + offset
    return LogLikelihood(nats=nats, bits_per_dim=-nats / (d * math.log(2)), nfe=denoise.nfe)
