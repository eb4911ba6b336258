"""Samplers that integrate the probability-flow ODE in one time variable (a
:class:`OdeCoordinates`).

dx/dt = alpha'(t) x0_hat + sigma'(t) eps_hat (Song et al. 2021; for the ``flow`` schedule this
is the rectified-flow velocity eps - x0, for ``edm`` — where sigma = sigma_max * t — it is
Karras et al.'s (x - D) / sigma up to the constant time scale). ``time="t"`` (the default of
euler / heun / euler_ancestral) integrates in the schedule's own t; ``time="sigma"`` in Karras'
sigma~ = sigma / alpha on x / alpha (k-diffusion's form for any schedule; the default of
``lms``, except on zero-terminal-SNR schedules); ``time="lambda"`` in log-SNR on x / sigma.
Stochastic churn (EDM Algorithm 2) is the :func:`~omnidiff.samplers.helpers.churn` helper.
"""

from __future__ import annotations

import math

import torch

from omnidiff.samplers.denoiser import Denoiser, coefficients, lincomb
from omnidiff.samplers.helpers import (
    OdeCoordinates,
    ancestral_split,
    churn,
    churn_gamma,
    dopri5,
    lagrange_integrals,
    lowers_final_order,
    multistep_order,
    poly_moments,
    randn,
    time_of,
)

__all__ = ["euler", "heun", "euler_ancestral", "lms", "rk45"]

_INF = float("inf")


def _pairs(ts: list[float]):
    return zip(ts[:-1], ts[1:])


def _default_time(denoise: Denoiser) -> str:
    """``sigma`` unless the schedule reaches zero SNR at t_max (flow), where x / alpha is
    undefined; then ``t``."""
    a, _, _ = coefficients(denoise.schedule, denoise.schedule.t_max)
    return "sigma" if a > 0 else "t"


def _ode(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, heun_correct: bool,
         time: str, s_churn: float, s_tmin: float, s_tmax: float, s_noise: float,
         generator: torch.Generator | None) -> torch.Tensor:
    """Karras et al. 2022, Algorithm 2 (Algorithm 1 when s_churn = 0) in time variable
    ``time``; ``heun_correct=False`` drops the second-order correction (Euler)."""
    ch = OdeCoordinates(denoise, time)
    for t, t_next in _pairs(ts):
        gamma = churn_gamma(t, denoise.schedule, len(ts), s_churn, s_tmin, s_tmax)
        x, t = churn(denoise, x, t, gamma, s_noise, generator)
        du = ch.u(t_next) - ch.u(t)
        y = ch.to_y(x, t)
        d = ch.f(y, t)
        y_n = torch.add(y, d, alpha=du)
        if heun_correct:
            d_n = ch.f(y_n, t_next)
            y_n = lincomb((1.0, y), (0.5 * du, d), (0.5 * du, d_n))
        x = ch.to_x(y_n, t_next)
    return x


def euler(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, time: str = "t",
          s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = _INF,
          s_noise: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler's method (Karras et al. 2022, Algorithm 1 without the correction; with
    ``s_churn > 0`` Algorithm 2's churn). One NFE per step."""
    return _ode(denoise, x, ts, heun_correct=False, time=time, s_churn=s_churn,
                s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, generator=generator)


def heun(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, time: str = "t",
         s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = _INF,
         s_noise: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """Heun's second-order method (Karras et al. 2022, Algorithm 1; Algorithm 2 with
    ``s_churn, s_tmin, s_tmax, s_noise``): two NFE per step. Every step ends at t_min > 0, so
    the correction is always taken; :func:`~omnidiff.samplers.sample`'s final denoising step
    adds one NFE (2 (steps - 1) + 1 in all)."""
    return _ode(denoise, x, ts, heun_correct=True, time=time, s_churn=s_churn,
                s_tmin=s_tmin, s_tmax=s_tmax, s_noise=s_noise, generator=generator)


def euler_ancestral(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, eta: float = 1.0,
                    s_noise: float = 1.0, time: str = "t",
                    generator: torch.Generator | None = None) -> torch.Tensor:
    """Euler ancestral (k-diffusion's ``sample_euler_ancestral``; Karras et al. 2022 sec. 4):
    an Euler step to the deterministic part sigma_down of the DDPM posterior
    (:func:`ancestral_split`), then fresh noise sigma_up. eta = 0 is :func:`euler`."""
    ch = OdeCoordinates(denoise, time)
    sched = denoise.schedule
    for t, t_next in _pairs(ts):
        _, _, lam = coefficients(sched, t)
        a_n, s_n, lam_n = coefficients(sched, t_next)
        s_down, s_up = ancestral_split(s_n, lam, lam_n, eta)
        # the state at log-SNR lam_down, on the schedule (t_down), rescaled to alpha_n
        t_down = time_of(sched, math.log(a_n / s_down)) if s_up > 0 else t_next
        y = ch.to_y(x, t)
        d = ch.f(y, t)
        c = (a_n / coefficients(sched, t_down)[0]) * ch.scale(t_down)
        x = lincomb((c, y), (c * (ch.u(t_down) - ch.u(t)), d))
        if s_up > 0:
            x.add_(randn(x, generator), alpha=s_up * s_noise)
    return x


def lms(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, order: int = 4,
        time: str | None = None, lower_order_final: bool | None = None,
        generator: torch.Generator | None = None) -> torch.Tensor:
    """Linear multistep (Adams-Bashforth with integrated Lagrange coefficients; k-diffusion's
    ``sample_lms``, diffusers' LMSDiscreteScheduler): y_n = y + sum_j w_j f_{i-j},
    w_j = int_u^{u_n} L_j, in closed form. ``time``: ``sigma`` (default) or ``t`` (default
    on zero-terminal-SNR schedules) or ``lambda``. One NFE per step. ``lower_order_final``
    as in :func:`~omnidiff.samplers.exponential.dpmpp_3m`."""
    ch = OdeCoordinates(denoise, time or _default_time(denoise))
    hist: list = []  # newest first: (u, dy/du)
    lof = lowers_final_order(lower_order_final, ts)
    for i, (t, t_next) in enumerate(_pairs(ts)):
        u, u_n = ch.u(t), ch.u(t_next)
        y = ch.to_y(x, t)
        d = ch.f(y, t)
        hist = [(u, d)] + hist[:order - 1]
        use = hist[:multistep_order(order, i, len(ts), lof)]
        w = lagrange_integrals([uj for uj, _ in use], u_n, poly_moments(u_n - u, len(use)))
        c = ch.scale(t_next)
        x = lincomb((c, y), *((c * wj, dj) for wj, (_, dj) in zip(w, use)))
    return x


def rk45(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, rtol: float = 1e-4,
         atol: float = 1e-4, time: str = "lambda",
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Adaptive Dormand-Prince RK5(4) (Dormand & Prince 1980; the ``RK45`` black-box solver of
    Song et al. 2021) from ts[0] to ts[-1], error-controlled in x-space with ``rtol, atol``;
    the grid's interior points only set the first step size. NFE is whatever the controller
    needs (see ``stats`` of :func:`sample`; accepted / rejected steps too).

    What is promised: every sample's local error is within tolerance at every accepted step
    (:func:`~omnidiff.samplers.helpers.dopri5`). The samples of a batch share their steps, so
    the results depend on the batch they are solved in, by about the tolerance (a fixed-step
    sampler gives the same bits for any batch size); a sample solved alone takes the coarsest
    steps, and at a loose tolerance a trajectory near the boundary of two modes can end in the
    other one (rtol = atol = 1e-3 on a narrow 2D mixture: 17 of 256 samples solved one at a
    time, none in batches of 16 or more)."""
    ch = OdeCoordinates(denoise, time)
    u0, u1 = ch.u(ts[0]), ch.u(ts[-1])

    def f(y: torch.Tensor, u: float) -> torch.Tensor:
        return ch.f(y, ch.t(u))

    h0 = abs(ch.u(ts[1]) - u0) if len(ts) > 2 else None
    y, info = dopri5(f, ch.to_y(x, ts[0]), u0, u1, rtol=rtol, atol=atol, h0=h0,
                     err_scale=lambda u: ch.scale(ch.t(u)))
    denoise.info.update(info)
    return ch.to_x(y, ts[-1])
