"""Timestep grids: where a sampler evaluates the model.

Each grid returns ``steps + 1`` float64 times, decreasing: ``steps`` evaluation times from the
schedule's ``t_max`` (never later: the forward process was trained only up to it) down to
``t_min``, then a final ``0`` (clean data). The last step, from ``t_min`` to 0, is a denoising
step, so ``steps`` first-order steps cost exactly ``steps`` model evaluations.

* ``uniform``  — uniform in t (DDPM / DDIM "linspace").
* ``logsnr``   — uniform in log-SNR lambda (Lu et al. 2022, DPM-Solver).
* ``karras``   — uniform in (sigma/alpha)^(1/rho), rho = 7 (Karras et al. 2022, EDM).
* ``trailing`` — t_max * (1 - i/steps) (Lin et al. 2023: start exactly at the last trained
  time and space the rest evenly, without landing on t_min).
* ``logsnr_trailing`` — the first ``steps`` of ``steps + 1`` times uniform in log-SNR from
  t_max to t_min: it never lands on t_min. The ``consistency`` sampler's default: it re-noises
  each clean estimate to the next time, and a time at t_min would add nothing. Two steps put
  the second near sigma / alpha = 1 (Song et al. 2023 use 0.82 for data of std 0.5).
* ``diffwave`` — DiffWave's 6-step fast schedule (Kong et al. 2021, sec. 4 / appendix B): the
  inference noise levels beta = 1e-4, 1e-3, 0.01, 0.05, 0.2, 0.5, aligned to the trained
  schedule at the times where alpha^2(t) equals their cumulative product of (1 - beta). With
  ``sampler=ddpm`` it is DiffWave's fast sampler exactly (each ancestral step's variance is
  then the inference beta); with any other sampler it is a 6-point grid. It starts at
  alpha^2 = 0.376 (not from pure noise), as DiffWave does: a strongly conditioned model
  (a vocoder) needs no more.

An explicit grid (a 1D tensor or list of times, see :func:`explicit_grid`) may be passed
instead of a name: any strictly decreasing times in ``[t_min, t_max]``, then the final ``0``
(appended when missing). A calibrated grid (:mod:`~omnidiff.samplers.calibrate`) is one.
"""

from __future__ import annotations

import torch

from omnidiff._util import check_choice
from omnidiff.core.schedules import Schedule
from omnidiff.errors import UserError

__all__ = ["GRIDS", "timesteps", "explicit_grid"]

GRIDS = ("uniform", "logsnr", "karras", "trailing", "logsnr_trailing", "diffwave")
DIFFWAVE_FAST_BETAS = (1e-4, 1e-3, 1e-2, 5e-2, 0.2, 0.5)

# log-SNR grids start no noisier than sigma/alpha = 200 (lambda = -5.3); a zero-terminal-SNR
# schedule (flow at t = 1) would otherwise spend its steps on a near-infinite noise range.
# The first evaluation stays at t_max.
LAMBDA_FLOOR = -5.3


def _f64(x) -> torch.Tensor:
    return torch.as_tensor(x, dtype=torch.float64)


def timesteps(schedule: Schedule, steps: int, grid: str = "uniform", *,
              rho: float = 7.0) -> torch.Tensor:
    """(steps + 1,) float64 times from t_max down to t_min, then 0."""
    check_choice("grid", grid, GRIDS)
    if not isinstance(steps, int) or steps < 1:
        raise UserError(f"steps must be an integer >= 1, got {steps!r}")
    lo, hi = schedule.t_min, schedule.t_max
    if grid == "diffwave":
        return _diffwave(schedule, steps)
    if steps == 1:
        ts = _f64([hi])
    elif grid == "uniform":
        ts = torch.linspace(hi, lo, steps, dtype=torch.float64)
    elif grid == "trailing":
        ts = (hi * (1 - torch.arange(steps, dtype=torch.float64) / steps)).clamp_min(lo)
    else:
        lam_hi = schedule.log_snr(_f64(hi)).clamp_min(LAMBDA_FLOOR)
        lam_lo = schedule.log_snr(_f64(lo))
        if grid == "logsnr":
            lam = torch.linspace(float(lam_hi), float(lam_lo), steps, dtype=torch.float64)
        elif grid == "logsnr_trailing":
            lam = torch.linspace(float(lam_hi), float(lam_lo), steps + 1,
                                 dtype=torch.float64)[:-1]
        else:  # karras: uniform in s^(1/rho) with s = sigma/alpha = exp(-lambda)
            s_hi, s_lo = torch.exp(-lam_hi) ** (1 / rho), torch.exp(-lam_lo) ** (1 / rho)
            ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
            lam = -rho * torch.log(s_hi + ramp * (s_lo - s_hi))
        ts = schedule.t_of_lambda(lam).clamp(lo, hi)
        ts[0] = hi  # exact ends despite round-off in the inverse
        if grid != "logsnr_trailing":
            ts[-1] = lo
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def _diffwave(schedule: Schedule, steps: int) -> torch.Tensor:
    """The times of DiffWave's fast inference schedule on ``schedule`` (see the module doc)."""
    if steps != len(DIFFWAVE_FAST_BETAS):
        raise UserError(f"grid 'diffwave' is DiffWave's {len(DIFFWAVE_FAST_BETAS)}-step fast "
                         f"schedule; pass steps={len(DIFFWAVE_FAST_BETAS)} (got {steps})")
    gamma = torch.cumprod(1 - _f64(DIFFWAVE_FAST_BETAS), 0)  # alpha^2 at each level
    lam = 0.5 * torch.log(gamma / (1 - gamma))  # log-SNR, least noisy first
    ts = schedule.t_of_lambda(lam.flip(0)).clamp(schedule.t_min, schedule.t_max)
    return torch.cat([ts, torch.zeros(1, dtype=torch.float64)])


def explicit_grid(schedule: Schedule, grid) -> torch.Tensor:
    """A user's grid as ``(steps + 1,)`` float64 times ending in 0, checked: strictly
    decreasing, evaluation times inside the trained range ``[t_min, t_max]``, at least one
    step. A final 0 (the denoising step to clean data) is appended when missing."""
    try:
        ts = torch.as_tensor(grid, dtype=torch.float64).detach().cpu()
    except (TypeError, ValueError, RuntimeError):
        raise UserError(f"grid must be a name ({', '.join(GRIDS)}) or a 1D list/tensor of "
                         f"decreasing times, got {type(grid).__name__}") from None
    if ts.ndim != 1:
        raise UserError(f"grid must be 1D (decreasing times), got shape {tuple(ts.shape)}")
    if ts.numel() and ts[-1] != 0:
        ts = torch.cat([ts, torch.zeros(1, dtype=torch.float64)])
    lo, hi = schedule.t_min, schedule.t_max
    if ts.numel() < 2:
        raise UserError("grid needs at least one evaluation time before the final 0, e.g. "
                         f"[{hi:g}, 0]")
    inner = ts[:-1]
    if not torch.isfinite(inner).all():
        raise UserError(f"grid holds a non-finite time: {inner.tolist()}")
    if (inner[1:] >= inner[:-1]).any():
        raise UserError(f"grid times must be strictly decreasing (from t_max = {hi:g} "
                         f"towards 0), got {ts.tolist()}")
    eps = 1e-12
    if inner[0] > hi + eps or inner[-1] < lo - eps:
        raise UserError(f"grid times must lie in the trained range [t_min, t_max] = "
                         f"[{lo:g}, {hi:g}] (then a final 0) on the {schedule.name!r} schedule, "
                         f"got {inner[0].item():g} ... {inner[-1].item():g}")
    return ts
