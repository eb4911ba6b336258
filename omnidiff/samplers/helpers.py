"""Steps shared by several samplers (house rule 3: helpers, never copies).

* :func:`time_of` / :func:`sigma_tilde` — scalar conversions between t, log-SNR lambda and the
  EDM noise level sigma~ = sigma / alpha = exp(-lambda) (python floats, CPU only).
* :func:`exp_step` — one exponential-integrator step in log-SNR with a data estimate ``d``
  (DPM-Solver++ / DDIM); valid for any target (alpha', sigma'), on the schedule or not.
* :func:`ancestral_split` — DDPM's posterior split of sigma_next into a deterministic part
  sigma_down and fresh noise sigma_up (Ho et al. 2020; k-diffusion's ``get_ancestral_step``).
* :func:`churn` — EDM's stochastic churn (Karras et al. 2022, Algorithm 2, lines 4-6).
* :func:`langevin` — Song et al. 2021's Langevin corrector (Algorithm 5 / 6).
* :func:`lagrange_integrals` — integrated Lagrange coefficients for linear multistep methods
  (LMS in any time variable; DEIS / exponential Adams-Bashforth with weight e^{-(l_n - l)}).
* :class:`OdeCoordinates` — the probability-flow ODE written in one time variable: ``t`` (the
  schedule's own), ``sigma`` (Karras' sigma~ with state x / alpha: dy/dsigma~ = eps_hat) or
  ``lambda`` (state x / sigma: dy/dlambda = e^lambda x0_hat).
* :func:`dopri5` — Dormand-Prince 5(4) with error control (the adaptive solver's core; also
  used by the likelihood ODE).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
from numpy.polynomial import polynomial as P

from omnidiff.errors import UserError
from omnidiff.samplers.denoiser import Denoiser, coefficients, lincomb

__all__ = ["randn", "time_of", "sigma_tilde", "exp_step", "ancestral_split", "churn",
           "churn_gamma", "lowers_final_order", "multistep_order", "langevin",
           "lagrange_integrals", "exp_moments",
           "poly_moments", "OdeCoordinates", "CHARTS", "dopri5"]


def randn(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x: (B, *event), from the explicit generator."""
    return torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def time_of(schedule, lam: float) -> float:
    """t with log-SNR ``lam`` (python float; CPU float64)."""
    return float(schedule.t_of_lambda(torch.tensor(lam, dtype=torch.float64)))


def sigma_tilde(lam: float) -> float:
    """EDM's noise level sigma / alpha = exp(-lambda)."""
    return math.exp(-lam)


def exp_step(x: torch.Tensor, s: float, a_n: float, s_n: float, h: float,
             d: torch.Tensor) -> torch.Tensor:
    """x_next = (sigma_n / sigma) x - alpha_n (e^{-h} - 1) d, h = lambda_n - lambda
    (Lu et al. 2022, DPM-Solver++ eq. 9, first order in the data estimate ``d``)."""
    return lincomb((s_n / s, x), (-a_n * math.expm1(-h), d))


def ancestral_split(s_n: float, lam: float, lam_n: float, eta: float = 1.0
                    ) -> tuple[float, float]:
    """(sigma_down, sigma_up) with sigma_down^2 + sigma_up^2 = sigma_n^2.

    sigma_up = eta sigma_n sqrt(1 - e^{-2h}) is DDPM's posterior std (eta = 1) scaled by eta
    (DDIM eq. 16); the deterministic part lands on log-SNR log(alpha_n / sigma_down).
    """
    q = max(-math.expm1(-2.0 * (lam_n - lam)), 0.0)  # 1 - e^{-2h}
    # sigma_down = sigma_n sqrt(1 - eta^2 q), written without cancellation when q ~ 1
    down = s_n * math.sqrt(max(math.exp(-2.0 * (lam_n - lam)) + (1.0 - eta * eta) * q, 0.0))
    return down, eta * s_n * math.sqrt(q)


def lowers_final_order(lower_order_final: bool | None, ts: list[float]) -> bool:
    """``None``: lower the order of the final steps on short grids (< 15 steps, as diffusers;
    ``ts`` ends at t_min, so the final denoising step makes ``len(ts)`` steps in all)."""
    return len(ts) < 15 if lower_order_final is None else bool(lower_order_final)


def multistep_order(order: int, i: int, n: int, lower_order_final: bool) -> int:
    """Order of step ``i`` of ``n`` for a multistep method: at most ``i + 1`` (warm-up) and,
    with ``lower_order_final``, at most the number of steps left (diffusers' rule: the last
    steps of a short grid are its largest in log-SNR, where high-order extrapolation is
    unstable). ``n`` counts the final denoising step to clean data (first order), as
    diffusers' schedulers count theirs, so the step before it is at most second order."""
    return max(1, min(order, i + 1, n - i if lower_order_final else order))


def churn_gamma(t: float, schedule, n_steps: int, s_churn: float, s_tmin: float,
                s_tmax: float) -> float:
    """EDM's gamma_i = min(S_churn / N, sqrt 2 - 1) if sigma~ in [S_tmin, S_tmax], else 0."""
    if s_churn <= 0:
        return 0.0
    sig = sigma_tilde(coefficients(schedule, t)[2])
    return min(s_churn / n_steps, math.sqrt(2.0) - 1.0) if s_tmin <= sig <= s_tmax else 0.0


def churn(denoise: Denoiser, x: torch.Tensor, t: float, gamma: float, s_noise: float,
          generator: torch.Generator | None) -> tuple[torch.Tensor, float]:
    """Raise the noise level sigma~ by a factor (1 + gamma) with fresh noise (Karras et al.
    2022, Algorithm 2 lines 5-6), never past the schedule's t_max. Returns (x_hat, t_hat)."""
    if gamma <= 0:
        return x, t
    sched = denoise.schedule
    a, _, lam = coefficients(sched, t)
    t_hat = min(time_of(sched, lam - math.log1p(gamma)), sched.t_max)
    if t_hat <= t:
        return x, t
    a_h, _, lam_h = coefficients(sched, t_hat)
    extra = a_h * s_noise * math.sqrt(max(sigma_tilde(lam_h) ** 2 - sigma_tilde(lam) ** 2, 0.0))
    return lincomb((a_h / a, x), (extra, randn(x, generator))), t_hat


def langevin(denoise: Denoiser, x: torch.Tensor, t: float, *, snr: float, n_steps: int,
             generator: torch.Generator | None) -> torch.Tensor:
    """Langevin corrector at fixed t (Song et al. 2021, Algorithms 4-5): score = -eps_hat / sigma,
    step = 2 (snr ||z|| / ||score||)^2 with the norms averaged over the batch (as in their
    code: a per-sample ratio explodes where the score vanishes), x += step score + sqrt(2 step) z.
    """
    _, s, _ = coefficients(denoise.schedule, t)
    for _ in range(n_steps):
        score = denoise.combine(x, t, 0.0, -1.0 / s)  # -eps_hat / sigma
        z = randn(x, generator)
        g = score.flatten(1).norm(dim=1).mean()  # () tensor: no host sync
        step = 2.0 * (snr * z.flatten(1).norm(dim=1).mean() / g.clamp_min(1e-12)) ** 2
        x = x + step * score + torch.sqrt(2.0 * step) * z
    return x


# ---- linear multistep coefficients --------------------------------------------------------

def poly_moments(h: float, m: int) -> list[float]:
    """M_k = int_{-h}^{0} s^k ds, k < m (plain Lagrange integration, e.g. LMS)."""
    return [-((-h) ** (k + 1)) / (k + 1) for k in range(m)]


def exp_moments(h: float, m: int) -> list[float]:
    """M_k = int_{-h}^{0} e^{s} s^k ds, k < m (exponential integrators: the phi functions),
    by the recursion M_k = -(-h)^k e^{-h} - k M_{k-1} (0^0 = 1), M_0 = 1 - e^{-h}."""
    out, e = [-math.expm1(-h)], math.exp(-h)
    for k in range(1, m):
        out.append(-((-h) ** k) * e - k * out[-1])
    return out


def lagrange_integrals(nodes: list[float], end: float, moments: list[float]) -> list[float]:
    """w_j = int w(u) L_j(u) du over the step ending at ``end``, L_j the Lagrange basis on
    ``nodes``; ``moments[k]`` = int w(u) (u - end)^k du. Exact for polynomials of degree
    < len(nodes) (Adams-Bashforth / k-diffusion's LMS, DEIS's tAB with the exponential weight).
    """
    s = [u - end for u in nodes]
    out = []
    for j, sj in enumerate(s):
        c = np.array([1.0])
        for k, sk in enumerate(s):
            if k != j:
                c = P.polymul(c, np.array([-sk, 1.0]) / (sj - sk))
        out.append(float(sum(ck * mk for ck, mk in zip(c, moments))))
    return out


# ---- the probability-flow ODE in a chosen time variable ------------------------------------

CHARTS = ("t", "sigma", "lambda")


class OdeCoordinates:
    """The PF-ODE dy/du = f(y, u) in time variable ``u``, and the maps between x and y.

    * ``t``      — u = t, y = x, f = alpha'(t) x0_hat + sigma'(t) eps_hat (Song et al. 2021).
    * ``sigma``  — u = sigma~ = sigma / alpha, y = x / alpha, f = eps_hat (Karras et al. 2022,
      eq. 4 with s = 1; the k-diffusion / diffusers ``Euler*`` form).
    * ``lambda`` — u = lambda, y = x / sigma, f = e^lambda x0_hat (Lu et al. 2022, eq. 5).
    """

    def __init__(self, denoise: Denoiser, time: str):
        if time not in CHARTS:
            raise UserError(f"unknown time variable {time!r}; choose one of: {', '.join(CHARTS)}")
        self.denoise, self.time, self.schedule = denoise, time, denoise.schedule

    def u(self, t: float) -> float:
        a, s, lam = coefficients(self.schedule, t)
        if self.time == "t":
            return t
        if self.time == "sigma":
            if a <= 0:
                raise UserError("time='sigma' needs alpha > 0, but this schedule has zero "
                                 "SNR at t_max (flow): use time='t' or time='lambda'")
            return s / a
        return lam

    def t(self, u: float) -> float:
        if self.time == "t":
            return u
        return time_of(self.schedule, -math.log(u) if self.time == "sigma" else u)

    def scale(self, t: float) -> float:
        """x = scale(t) * y."""
        a, s, _ = coefficients(self.schedule, t)
        return 1.0 if self.time == "t" else (a if self.time == "sigma" else s)

    def f(self, y: torch.Tensor, t: float) -> torch.Tensor:
        """dy/du at time t: one model evaluation, two elementwise kernels after it."""
        if self.time == "t":
            return self.denoise.velocity(y, t)
        _, _, lam = coefficients(self.schedule, t)
        x = self.to_x(y, t)
        if self.time == "sigma":
            return self.denoise.combine(x, t, 0.0, 1.0)
        return self.denoise.combine(x, t, math.exp(lam), 0.0)

    def to_y(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """y = x / scale(t) (no kernel when the scale is 1)."""
        c = self.scale(t)
        return x if c == 1.0 else x * (1.0 / c)

    def to_x(self, y: torch.Tensor, t: float) -> torch.Tensor:
        """x = scale(t) y (no kernel when the scale is 1)."""
        c = self.scale(t)
        return y if c == 1.0 else y * c


def dopri5(f: Callable[[torch.Tensor, float], torch.Tensor], y: torch.Tensor, u0: float,
           u1: float, *, rtol: float, atol: float, h0: float | None = None,
           err_scale: Callable[[float], float] = lambda u: 1.0, max_steps: int = 10_000
           ) -> tuple[torch.Tensor, dict]:
    """Dormand & Prince (1980) RK5(4) with FSAL and a PI-free standard step controller.

    Integrates dy/du = f(y, u) from u0 to u1 (either direction); ``y`` is a batch ``(B, ...)``.
    The error of each step is measured in units of ``err_scale(u) * y`` (e.g. x-space) against
    atol + rtol |.|, RMS over each sample, and a step is accepted only when *every* sample's
    error is within tolerance: the samples share steps, so adding samples to a batch refines
    the steps of the others but never loosens any sample's error control (an RMS over the
    whole batch let one hard sample drift far off among many easy ones). The accept/reject
    decision needs one host-side scalar per step: the only host sync in the samplers, inherent
    to adaptive step size control.
    Returns (y(u1), {"accepted", "rejected"}).
    """
    A = [[], [1 / 5], [3 / 40, 9 / 40], [44 / 45, -56 / 15, 32 / 9],
         [19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729],
         [9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656],
         [35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84]]
    C = [0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0, 1.0]
    E = [71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40]
    span = u1 - u0
    direction = 1.0 if span > 0 else -1.0
    h = abs(h0) if h0 else abs(span) / 20
    u, k1 = u0, f(y, u0)
    acc = rej = 0
    while direction * (u1 - u) > 1e-12 * abs(span):
        h = min(h, abs(u1 - u))
        hs = direction * h
        ks = [k1]
        for i in range(1, 7):
            yi = y + hs * sum(a * k for a, k in zip(A[i], ks) if a != 0.0)
            ks.append(f(yi, u + C[i] * hs))
        y_new = yi  # the 7th stage is the 5th-order solution (FSAL)
        err = hs * sum(e * k for e, k in zip(E, ks) if e != 0.0)
        sc = err_scale(u + hs)
        tol = atol + rtol * torch.maximum(y.abs(), y_new.abs()) * sc
        ratio = float(((err * sc / tol) ** 2).reshape(len(y), -1).mean(1).sqrt().max())
        if ratio <= 1.0 or h < 1e-10 * abs(span):
            u, y, k1 = u + hs, y_new, ks[-1]
            acc += 1
        else:
            rej += 1
        h *= min(5.0, max(0.2, 0.9 * (ratio + 1e-16) ** -0.2))
        if acc + rej > max_steps:
            raise RuntimeError(f"rk45 did not reach the end in {max_steps} steps; loosen "
                               "rtol/atol")
    return y, {"accepted": acc, "rejected": rej}
