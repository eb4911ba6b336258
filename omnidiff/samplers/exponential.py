"""Exponential-integrator samplers in log-SNR time, data-prediction form.

With lambda = log(alpha / sigma) and h = lambda_next - lambda, the probability-flow ODE has the
exact solution ``x_next = (sigma_next / sigma) x + alpha_next * integral(e^{-(lambda_next - l)}
x0_hat(l) dl)``. Approximating x0_hat by a constant gives DDIM (Song et al. 2021), which is
first-order DPM-Solver++ (Lu et al. 2022); a linear extrapolation through the previous step's
x0_hat gives DPM-Solver++(2M), a quadratic one DPM-Solver++(3M). Integrating the Lagrange
extrapolant exactly against the exponential weight is DEIS's tAB (Zhang & Chen 2023) in
lambda with data prediction; for order 3 that is the same update as DPM-Solver++(3M) (its
D1, D2 are the Newton divided differences of the same quadratic), for order 2 it differs from
2M only in using phi_2 where 2M uses phi_1 / 2. UniPC (Zhao et al. 2023) adds a corrector that
reuses the next model evaluation.

A multistep sampler keeps its history as a newest-first list of (lambda, x0_hat).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from omnidiff.errors import UserError
from omnidiff.samplers.denoiser import Denoiser, coefficients, lincomb
from omnidiff.samplers.helpers import (
    ancestral_split,
    exp_moments,
    exp_step,
    lagrange_integrals,
    langevin,
    lowers_final_order,
    multistep_order,
    randn,
    time_of,
)

__all__ = ["ddim", "ddpm", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_3m", "dpmpp_2s_ancestral",
           "deis", "unipc", "pc"]


def _pairs(ts: list[float]):
    return zip(ts[:-1], ts[1:])


def _push(history: list, lam: float, x0: torch.Tensor, order: int) -> list:
    """Newest-first multistep history of (lambda, x0_hat), at most ``order`` long."""
    return [(lam, x0)] + history[:order - 1]


def ddim_step(denoise: Denoiser, x: torch.Tensor, t: float, t_next: float, eta: float,
              generator: torch.Generator | None) -> torch.Tensor:
    """One DDIM step (Song et al. 2021, eq. 12): x_next = alpha_n x0 + sigma_down eps + sigma_up
    z."""
    _, _, lam = coefficients(denoise.schedule, t)
    a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
    s_down, s_up = ancestral_split(s_n, lam, lam_n, eta)
    x = denoise.combine(x, t, a_n, s_down)
    if s_up > 0:
        x.add_(randn(x, generator), alpha=s_up)
    return x


def ddim(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, eta: float = 0.0,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """DDIM (Song et al. 2021, eq. 12) with stochasticity eta in [0, 1].

    x_next = alpha_n x0 + sqrt(sigma_n^2 - c^2) eps + c z, c = eta sigma_n sqrt(1 - e^{-2h}).
    eta = 0 is the deterministic probability-flow step; eta = 1 samples DDPM's posterior
    q(x_next | x, x0_hat) exactly (ancestral sampling, Ho et al. 2020).
    """
    if not 0.0 <= eta <= 1.0:
        raise UserError(f"eta must be in [0, 1], got {eta}")
    for t, t_next in _pairs(ts):
        x = ddim_step(denoise, x, t, t_next, eta, generator)
    return x


def ddpm(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """Ancestral DDPM sampling (Ho et al. 2020, Algorithm 2): DDIM with eta = 1."""
    return ddim(denoise, x, ts, eta=1.0, generator=generator)


def dpmpp_2m_sde(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, eta: float = 1.0,
                 s_noise: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) SDE (Lu et al. 2022, eq. 18; k-diffusion's midpoint form).

    x_n = (sigma_n/sigma) e^{-eta h} x + alpha_n (1 - e^{-(1+eta)h}) D
          + sigma_n sqrt(1 - e^{-2 eta h}) s_noise z,
    D = x0_i + (1/(2r)) (x0_i - x0_{i-1}), r = h_{i-1} / h. eta = 0 is DPM-Solver++(2M).
    """
    x0_prev, h_prev = None, None
    for t, t_next in _pairs(ts):
        _, s, lam = coefficients(denoise.schedule, t)
        a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
        h = lam_n - lam
        x0 = denoise.x0(x, t)
        c = -a_n * math.expm1(-(1.0 + eta) * h)  # exp_step's weight on D, with the SDE's h
        r = 0.0 if x0_prev is None else h / (2.0 * h_prev)  # r = 0: the first step is DDIM
        prev = x0 if x0_prev is None else x0_prev
        x = lincomb((math.exp(-eta * h) * s_n / s, x), ((1.0 + r) * c, x0), (-r * c, prev))
        if eta > 0:
            up = s_n * s_noise * math.sqrt(-math.expm1(-2.0 * eta * h))
            x.add_(randn(x, generator), alpha=up)
        x0_prev, h_prev = x0, h
    return x


def dpmpp_2m(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al. 2022, Algorithm 2): multistep, second order.

    D = (1 + 1/(2r)) x0_i - 1/(2r) x0_{i-1}, r = h_{i-1} / h_i; the first step is DDIM.
    (The deterministic case of :func:`dpmpp_2m_sde`.)
    """
    return dpmpp_2m_sde(denoise, x, ts, eta=0.0, generator=generator)


def dpmpp_3m(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
             lower_order_final: bool | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(3M) (Lu et al. 2022, Appendix B / diffusers' third-order update).

    x_n = (sigma_n/sigma) x - alpha_n (e^{-h} - 1) D0 + alpha_n ((e^{-h} - 1)/h + 1) D1
          - alpha_n ((e^{-h} - 1 + h)/h^2 - 1/2) D2,
    D1, D2 the divided differences through the last three x0_hat; warm-up: DDIM, then 2M;
    ``lower_order_final`` (default: on grids of < 15 steps) ends with 2M, then DDIM.
    """
    hist: list = []
    lof = lowers_final_order(lower_order_final, ts)
    for i, (t, t_next) in enumerate(_pairs(ts)):
        _, s, lam = coefficients(denoise.schedule, t)
        a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
        h = lam_n - lam
        x0 = denoise.x0(x, t)
        hist = _push(hist, lam, x0, 3)
        p = multistep_order(3, i, len(ts), lof)
        em = math.expm1(-h)
        w = np.zeros(3)  # weights on the newest-first history x0_i, x0_{i-1}, x0_{i-2}
        w[0] = -a_n * em
        if p == 2:
            r = (lam - hist[1][0]) / h
            w[:2] += -a_n * em * (0.5 / r) * np.array([1.0, -1.0])
        elif p == 3:  # D1, D2 as weight vectors over the history
            r0, r1 = (lam - hist[1][0]) / h, (hist[1][0] - hist[2][0]) / h
            d1_0, d1_1 = np.array([1.0, -1.0, 0.0]) / r0, np.array([0.0, 1.0, -1.0]) / r1
            d1 = d1_0 + (r0 / (r0 + r1)) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            w += a_n * (em / h + 1.0) * d1 - a_n * ((em + h) / h ** 2 - 0.5) * d2
        x = lincomb((s_n / s, x), *((float(wj), m) for wj, (_, m) in zip(w[:p], hist)))
    return x


def deis(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, order: int = 3,
         lower_order_final: bool | None = None,
         generator: torch.Generator | None = None) -> torch.Tensor:
    """DEIS tAB-``order`` (Zhang & Chen 2023, eq. 14) in lambda with data prediction.

    x_n = (sigma_n/sigma) x + alpha_n sum_j w_j x0_{i-j},
    w_j = int_{lambda}^{lambda_n} e^{-(lambda_n - l)} L_j(l) dl in closed form (phi functions),
    L_j the Lagrange basis through the last ``order`` log-SNRs (lower order while warming up).
    Order 1 is DDIM; order 3 is DPM-Solver++(3M)'s update (see the module docstring).
    """
    if order < 1:
        raise UserError(f"deis order must be >= 1, got {order}")
    hist: list = []
    lof = lowers_final_order(lower_order_final, ts)
    for i, (t, t_next) in enumerate(_pairs(ts)):
        _, s, lam = coefficients(denoise.schedule, t)
        a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
        x0 = denoise.x0(x, t)
        hist = _push(hist, lam, x0, order)
        use = hist[:multistep_order(order, i, len(ts), lof)]
        w = lagrange_integrals([l for l, _ in use], lam_n, exp_moments(lam_n - lam, len(use)))
        x = lincomb((s_n / s, x), *((a_n * wj, mj) for wj, (_, mj) in zip(w, use)))
    return x


def _unipc_coeffs(rks: list[float], h: float, variant: str) -> tuple[np.ndarray, np.ndarray,
                                                                      float, float]:
    """UniPC's linear system (Zhao et al. 2023, Algorithm 2 / diffusers ``uni_p_bh_update``):
    R[i, k] = r_k^i, b_i = (i+1)! phi_{i+2}(-h) h / B(h), i < p; returns (R, b, phi_1, B(h))."""
    hh = -h
    h_phi_1 = math.expm1(hh)
    h_phi_k = h_phi_1 / hh - 1.0
    b_h = hh if variant == "bh1" else math.expm1(hh)
    fact, rows, b = 1, [], []
    for i in range(1, len(rks) + 1):
        rows.append([r ** (i - 1) for r in rks])
        b.append(h_phi_k * fact / b_h)
        fact *= i + 1
        h_phi_k = h_phi_k / hh - 1.0 / fact
    return np.array(rows), np.array(b), h_phi_1, b_h


def _differences(ds: list, x0: torch.Tensor, weights) -> list:
    """Terms of sum_k w_k (m_k - x0) / r_k for :func:`lincomb`, ``ds`` = [(r_k, m_k)]."""
    terms = [(float(w) / r, m) for w, (r, m) in zip(weights, ds)]
    return terms + [(-sum(c for c, _ in terms), x0)] if terms else []


def unipc(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, order: int = 2,
          variant: str = "bh2", corrector: bool = True, lower_order_final: bool | None = None,
          generator: torch.Generator | None = None) -> torch.Tensor:
    """UniPC (Zhao et al. 2023): predictor UniP-p and corrector UniC, data prediction.

    Predictor (UniP-p, p = ``order``, fewer while warming up):
      x_n = (sigma_n/sigma) x - alpha_n (e^{-h}-1) x0_i - alpha_n B(h) sum_k a_k D_k,
      D_k = (x0_{i-k} - x0_i) / r_k, r_k = (lambda_{i-k} - lambda_i) / h.
    Corrector (UniC, order p+1): once the model is evaluated at x_n, the same update is redone
    with D_n = x0_n - x0_i included (coefficients c from the full system); the model output at
    the uncorrected x_n is reused as history, so UniC costs no NFE. ``variant``: bh1 (B(h) = h)
    or bh2 (B(h) = e^h - 1). The last step (to t_min) is not corrected. ``lower_order_final``
    as in :func:`dpmpp_3m`.
    """
    if variant not in ("bh1", "bh2"):
        raise UserError(f"unipc variant must be 'bh1' or 'bh2', got {variant!r}")
    hist: list = []
    last = None  # what UniC needs from the previous predictor step
    lof = lowers_final_order(lower_order_final, ts)
    for i, (t, t_next) in enumerate(_pairs(ts)):
        _, s, lam = coefficients(denoise.schedule, t)
        a_n, s_n, lam_n = coefficients(denoise.schedule, t_next)
        x0 = denoise.x0(x, t)
        if last is not None and corrector:  # UniC on the previous step, with D_n = x0 - m0
            xp, base, ds, rhs_scale, (R, b) = last
            c = [0.5] if len(ds) == 0 else np.linalg.solve(R, b)
            # x = base - rhs_scale (sum_k c_k D_k + c_n (x0 - xp)), D_k = (m_k - xp) / r_k
            x = lincomb(*base, *_differences(ds, xp, [-rhs_scale * ck for ck in c[:-1]]),
                        (-rhs_scale * c[-1], x0), (rhs_scale * c[-1], xp))
        hist = _push(hist, lam, x0, order)
        h = lam_n - lam
        older = hist[1:multistep_order(order, i, len(ts), lof)]
        rks = [(l - lam) / h for l, _ in older]
        ds = [(r, m) for r, (_, m) in zip(rks, older)]  # D_k = (m_k - x0) / r_k, kept lazy
        R, b, h_phi_1, b_h = _unipc_coeffs(rks + [1.0], h, variant)
        base = [(s_n / s, x), (-a_n * h_phi_1, x0)]  # (s_n/s) x - alpha_n phi_1 x0, lazy
        a = [] if not ds else [0.5] if len(ds) == 1 else np.linalg.solve(R[:-1, :-1], b[:-1])
        x = lincomb(*base, *_differences(ds, x0, [-a_n * b_h * ak for ak in a]))
        last = (x0, base, ds, a_n * b_h, (R, b))
    return x


def dpmpp_2s_ancestral(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
                       eta: float = 1.0, s_noise: float = 1.0,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """DPM-Solver++(2S) ancestral (Lu et al. 2022, Algorithm 1 with r = 1/2; k-diffusion's
    ``sample_dpmpp_2s_ancestral``): a two-stage exponential step to log-SNR
    log(alpha_n / sigma_down), then fresh noise sigma_up (:func:`ancestral_split`). 2 NFE per
    step; eta = 0 is the deterministic single-step DPM-Solver++(2S).
    """
    sched = denoise.schedule
    for t, t_next in _pairs(ts):
        _, s, lam = coefficients(sched, t)
        a_n, s_n, lam_n = coefficients(sched, t_next)
        s_down, s_up = ancestral_split(s_n, lam, lam_n, eta)
        h = math.log(a_n / s_down) - lam
        x0 = denoise.x0(x, t)
        t_mid = min(max(time_of(sched, lam + 0.5 * h), 0.0), t)
        a_m, s_m, lam_m = coefficients(sched, t_mid)
        x0_mid = denoise.x0(exp_step(x, s, a_m, s_m, lam_m - lam, x0), t_mid)
        x = exp_step(x, s, a_n, s_down, h, x0_mid)
        if s_up > 0:
            x.add_(randn(x, generator), alpha=s_up * s_noise)
    return x


def pc(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, snr: float = 0.16,
       corrector_steps: int = 1, generator: torch.Generator | None = None) -> torch.Tensor:
    """Predictor-corrector sampling (Song et al. 2021, Algorithm 1 / their ``pc_sampler``):
    at each t, ``corrector_steps`` Langevin steps with signal-to-noise ratio ``snr``
    (:func:`~omnidiff.samplers.helpers.langevin`), then the ancestral (reverse-diffusion)
    predictor step to the next t. 1 + corrector_steps NFE per step.
    """
    for t, t_next in _pairs(ts):
        x = langevin(denoise, x, t, snr=snr, n_steps=corrector_steps, generator=generator)
        x = ddim_step(denoise, x, t, t_next, 1.0, generator)
    return x
