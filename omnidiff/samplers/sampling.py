"""The one entry point :func:`sample` and the table of samplers it chooses from by name.

Every sampler has the signature ``fn(denoise, x, ts, *, generator=None, **options) -> x`` where
``denoise`` is a :class:`~omnidiff.samplers.denoiser.Denoiser`, ``x`` the state (float64 or
float32, see :func:`sample`) at ``ts[0]`` and ``ts`` a decreasing list of times ending at
``t_min``; :func:`sample` adds the final denoising step to t = 0. A sampler never branches on
the prediction type.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from omnidiff._util import check_choice
from omnidiff.core.predictions import PREDICTIONS
from omnidiff.core.schedules import Schedule, get_schedule
from omnidiff.errors import UserError
from omnidiff.samplers.consistency import consistency
from omnidiff.samplers.control import control
from omnidiff.samplers.denoiser import Denoiser, coefficients
from omnidiff.samplers.exponential import (
    ddim,
    ddpm,
    deis,
    dpmpp_2m,
    dpmpp_2m_sde,
    dpmpp_2s_ancestral,
    dpmpp_3m,
    pc,
    unipc,
)
from omnidiff.samplers.grids import GRIDS, explicit_grid, timesteps
from omnidiff.samplers.ode import euler, euler_ancestral, heun, lms, rk45
from omnidiff.samplers.watch import SamplingStep, StepWatch

__all__ = ["SAMPLERS", "STOCHASTIC", "GRIDS", "DEFAULT_STEPS", "register_sampler", "sample",
           "timesteps", "resolve_grid", "default_grid", "check_sampler_options",
           "sampler_option_names",
           "Denoiser"]

SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {
    "ddpm": ddpm,
    "ddim": ddim,
    "dpmpp_2m": dpmpp_2m,
    "dpmpp_3m": dpmpp_3m,
    "dpmpp_2m_sde": dpmpp_2m_sde,
    "dpmpp_2s_ancestral": dpmpp_2s_ancestral,
    "unipc": unipc,
    "deis": deis,
    "euler": euler,
    "euler_ancestral": euler_ancestral,
    "heun": heun,
    "lms": lms,
    "pc": pc,
    "rk45": rk45,
    "consistency": consistency,
}
# samplers that draw fresh noise (their result is a sample, not an ODE solution)
STOCHASTIC = ("ddpm", "dpmpp_2m_sde", "dpmpp_2s_ancestral", "euler_ancestral", "pc",
              "consistency")

DEFAULT_GRID = {"edm": "karras", "flow": "uniform"}  # VP schedules: uniform in log-SNR
SAMPLER_GRID = {"consistency": "logsnr_trailing"}  # samplers with a grid of their own
DEFAULT_STEPS = 20


def register_sampler(name: str, fn: Callable[..., torch.Tensor]) -> None:
    """Add a sampler (same signature as the built-in ones) under ``name``."""
    SAMPLERS[name] = fn


# options sample() itself reads (the rest go to the sampler function)
SAMPLE_OPTIONS = ("grid", "clip_x0", "state_dtype", "stats", "known", "mask", "method",
                  "init", "strength", "guide", "guide_scale")


def sampler_option_names(sampler: str) -> list[str] | None:
    """The options ``sampler`` takes: its keyword arguments and :func:`sample`'s own (None when
    it accepts any keyword)."""
    params = inspect.signature(SAMPLERS[sampler]).parameters.values()
    if any(p.kind is p.VAR_KEYWORD for p in params):
        return None
    own = [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name != "generator"]
    return own + list(SAMPLE_OPTIONS)


def check_sampler_options(sampler: str, options: dict[str, Any]) -> None:
    """One line naming an option that ``sampler`` does not take, and the ones it does."""
    check_choice("sampler", sampler, SAMPLERS)
    names = sampler_option_names(sampler)
    unknown = [k for k in options if names is not None and k not in names]
    if unknown:
        raise UserError(f"sampler {sampler!r} takes no option {unknown[0]!r}; its options: "
                        f"{', '.join(names)}")


def default_grid(schedule: Schedule, sampler: str | None = None) -> str:
    """The named grid used when none is given: the sampler's own (``consistency``:
    logsnr_trailing), else karras for ``edm``, uniform for ``flow``, uniform in log-SNR for
    the VP schedules."""
    return SAMPLER_GRID.get(sampler) or DEFAULT_GRID.get(schedule.name, "logsnr")


def resolve_grid(schedule: Schedule, steps: int | None, grid: Any, sampler: str | None = None
                 ) -> tuple[torch.Tensor, str]:
    """(times, grid label) for :func:`sample`: a named grid (default: :func:`default_grid`),
    or an explicit one checked by :func:`~omnidiff.samplers.grids.explicit_grid` (``steps``,
    if given, must match it)."""
    if grid is None or isinstance(grid, str):
        grid = grid or default_grid(schedule, sampler)
        return timesteps(schedule, DEFAULT_STEPS if steps is None else steps, grid), grid
    ts = explicit_grid(schedule, grid)
    if steps is not None and steps != len(ts) - 1:
        raise UserError(f"steps={steps} does not match the explicit grid's {len(ts) - 1} "
                         "steps; leave steps out (it follows from the grid)")
    return ts, "explicit"


def sample(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], noise: torch.Tensor, *,
           schedule: Schedule | str, prediction: str, sampler: str = "dpmpp_2m",
           steps: int | None = None, grid: Any = None,
           generator: torch.Generator | None = None, stats: dict | None = None,
           state_dtype: torch.dtype | None = None, clip_x0: Any = None,
           known: Any = None, mask: Any = None, method: Any = None, init: Any = None,
           strength: Any = None, guide: Any = None, guide_scale: Any = 1.0,
           callback: Callable[[SamplingStep], Any] | None = None,
           **options: Any) -> torch.Tensor:
    """Draw samples by integrating from ``t_max`` to clean data.

    model: ``model(x_t, t) -> prediction`` with ``x_t: (B, *event)`` and ``t: (B,)`` floats.
    noise: (B, *event) standard normal; the start is ``schedule.prior_std * noise``.
    grid: ``uniform`` | ``logsnr`` | ``karras`` | ``trailing`` | ``diffwave`` (default: karras
    for ``edm``, uniform for ``flow``, logsnr otherwise; ``steps`` defaults to 20), or
    explicit times (a 1D tensor or list, strictly decreasing in ``[t_min, t_max]``, then 0;
    e.g. from :func:`~omnidiff.samplers.calibrate.calibrate_grid`), which fix ``steps``.
    ``stats``, if a dict, receives ``nfe`` (model calls, including the final denoising
    step), ``network_evals`` (samples through the network per sample: 2 per call under
    classifier-free guidance) and any sampler extras (rk45: ``accepted`` / ``rejected``
    steps). ``options`` go to the sampler (e.g. ``eta``,
    ``order``, ``s_churn``, ``rtol``).
    state_dtype: the dtype of the sampler's state x_t (default: float64 for float64 noise,
    float32 otherwise, e.g. for float32 or bf16 noise). Coefficients are always float64
    python floats and the network sees the noise's dtype.
    clip_x0: clip every x0 estimate to the data's range (eps_hat then follows from x_t):
    ``c`` for [-c, c], ``(lo, hi)``, or ``"dynamic"`` / ``"dynamic:p"`` (dynamic thresholding,
    Saharia et al. 2022); e.g. 1.0 for images in [-1, 1]. Off by default.

    Control (:mod:`~omnidiff.samplers.control`), every keyword checked before sampling:
    known, mask: imputation -- the samples equal ``known`` where ``mask`` (bool, one sample
    ``(*event)`` or ``(B, *event)``) is True and follow the model's conditional law elsewhere;
    ``method``: ``tds`` (default), ``smc``, ``replace``, ``repaint`` or ``dps``, or a dict with its
    options, e.g. ``{"name": "tds", "particles": 16}``
    (:mod:`~omnidiff.samplers.imputation`).
    init, strength: editing (SDEdit) -- ``init`` noised to the time ``strength * t_max`` and
    solved back over the grid's times below it; strength in (0, 1], default 0.6.
    guide, guide_scale: guidance by ``guide(x0_hat) -> (B,)`` log-score through the network
    (DPS / universal guidance), ``x0_hat += guide_scale (sigma^2 / alpha) grad``.
    callback: called after every step with a :class:`~omnidiff.samplers.watch.SamplingStep`
    (the step, the time reached, the current clean estimate); it may raise to stop sampling.
    Returns (B, *event) in the noise's dtype.
    """
    schedule = get_schedule(schedule)
    check_sampler_options(sampler, options)
    check_choice("prediction", prediction, PREDICTIONS)
    if prediction == "eps" and coefficients(schedule, schedule.t_max)[0] <= 0:
        raise UserError(f"prediction 'eps' cannot be sampled on the {schedule.name!r} schedule: "
                         "alpha(t_max) = 0 (zero terminal SNR) makes x0 = (x - sigma eps) / "
                         "alpha undefined; train with v, x0 or flow prediction")
    ts, grid = resolve_grid(schedule, steps, grid, sampler)
    if state_dtype is None:
        state_dtype = torch.float64 if noise.dtype == torch.float64 else torch.float32
    ctl = control(schedule, prediction, noise.shape, noise.device, state_dtype, known=known,
                  mask=mask, method=method, init=init, strength=strength, guide=guide,
                  guide_scale=guide_scale)
    ts = ctl.grid(ts)
    steps = len(ts) - 1
    ts = ts.tolist()  # python floats: no device sync in loops
    denoise = Denoiser(ctl.model(model, generator), schedule, prediction, noise.dtype,
                       clip_x0=clip_x0)
    if callback is not None:
        denoise.watch = StepWatch(ts, callback)
    x = ctl.start(noise.to(state_dtype), ts[0], generator)
    x = ctl.run(SAMPLERS[sampler], denoise, x, ts[:-1], generator, **options)
    a0, _, _ = coefficients(schedule, ts[-1])
    x0 = ctl.finish(denoise.combine(x, ts[-2], a0, 0.0))  # final step: t_min to clean data
    if callback is not None:
        denoise.watch.finish(x0)
    if stats is not None:
        stats.update(nfe=denoise.nfe, grid=grid, steps=steps, sampler=sampler,
                     network_evals=ctl.network_evals(denoise.network_evals, denoise.nfe),
                     **ctl.info(), **denoise.info)
    return x0.to(noise.dtype)
