"""The denoiser view of a model that samplers use, with exact NFE accounting."""

from __future__ import annotations

import functools
from typing import Callable

import torch

from .._util import check_choice
from ..predictions import PREDICTIONS, invert
from ..schedules import Schedule

__all__ = ["Denoiser", "coefficients", "derivatives"]


@functools.lru_cache(maxsize=8192)
def coefficients(schedule: Schedule, t: float) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) at a scalar time, as python floats (CPU float64, no device sync).
    Memoised per (schedule, t): a sampler asks for each grid time twice, a benchmark often."""
    tt = torch.tensor(t, dtype=torch.float64)
    a, s = schedule.alpha_sigma(tt)
    return float(a), float(s), float(schedule.log_snr(tt))


@functools.lru_cache(maxsize=8192)
def derivatives(schedule: Schedule, t: float) -> tuple[float, float]:
    """(alpha'(t), sigma'(t)) as python floats, memoised like :func:`coefficients`."""
    da, ds = schedule.derivatives(torch.tensor(t, dtype=torch.float64))
    return float(da), float(ds)


class Denoiser:
    """Turns ``model(x_t, t) -> prediction`` into ``D(x, t) -> (x0_hat, eps_hat)``.

    The sampler's state ``x`` is float64; it is cast to ``dtype`` (the noise's dtype) at the
    network boundary and the output is cast back. ``nfe`` counts calls of ``model``;
    ``network_evals`` counts samples passed through the network per sample (2 per call under
    classifier-free guidance, whose wrapper sets ``cfg_batches = 2``).
    """

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 schedule: Schedule, prediction: str, dtype: torch.dtype):
        self.model, self.schedule, self.dtype = model, schedule, dtype
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.nfe = 0
        self.network_evals = 0
        self.info: dict = {}  # extra statistics a sampler reports (e.g. rk45's step counts)

    def __call__(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        b = x.shape[0]
        t_vec = torch.full((b,), t, dtype=self.dtype, device=x.device)  # (B,)
        out = self.model(x.to(self.dtype), t_vec)
        self.nfe += 1
        self.network_evals += getattr(self.model, "cfg_batches", 1)
        a, s, _ = coefficients(self.schedule, float(t))
        da, ds = derivatives(self.schedule, float(t))  # memoised; only ``flow`` uses them
        return invert(self.prediction, out, x, a, s, da, ds)

    def velocity(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(dx/dt of the probability-flow ODE, x0_hat): dx/dt = alpha'(t) x0 + sigma'(t) eps."""
        x0, eps = self(x, t)
        da, ds = derivatives(self.schedule, float(t))
        return da * x0 + ds * eps, x0
