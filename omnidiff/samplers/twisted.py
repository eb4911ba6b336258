"""The twisted diffusion sampler (TDS, Wu et al. 2023, alg. 1) for imputation.

Sequential Monte Carlo over ``K`` particles per sample. Each particle takes an ancestral (DDPM)
step whose mean is computed from the twisted estimate ``x0_hat + scale (sigma^2 / alpha) grad
log p~_t(y | x_t)``, with the twist ``p~_t(y | x_t) = N(y; m x0_hat(x_t), r_t^2)`` of
:func:`~omnidiff.samplers.imputation.twist`; its importance weight is

    w = p(x_s | x_t) p~_s(y | x_s) / (q(x_s | x_t) p~_t(y | x_t)),

``p`` the model's own ancestral step and ``q`` the twisted one, and a sample's particles are
resampled (systematic resampling) when their effective sample size falls below ``ess K``. As
``K`` grows the result follows the model's exact conditional law; at ``K = 1`` it is ``dps``
with ancestral steps. One network evaluation with a backward pass per particle and step.
"""

from __future__ import annotations

import torch

from omnidiff.core.schedules import Schedule
from omnidiff.samplers.denoiser import Denoiser, coefficients, lincomb
from omnidiff.samplers.imputation import Observation, twist

__all__ = ["tds", "smc", "forward_path", "systematic_resample"]


def _estimate(denoise: Denoiser, x: torch.Tensor, t: float, obs: Observation,
              schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x0_hat detached, log twist (N,), its gradient (N, *event)) at ``x``, all float64."""
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        x0 = denoise.x0(xg, t).double()  # (N, *event)
        t_vec = torch.full((x.shape[0],), t, dtype=torch.float64, device=x.device)
        log_twist, g = twist(xg, t_vec, x0, obs, schedule)
    return x0.detach(), log_twist, g


def systematic_resample(log_w: torch.Tensor, generator: torch.Generator | None
                        ) -> torch.Tensor:
    """Ancestor indices (B, K) within each row of ``log_w: (B, K)``, one uniform per row."""
    b, k = log_w.shape
    cdf = log_w.softmax(-1).cumsum(-1)  # (B, K)
    u = torch.rand((b, 1), generator=generator, device=log_w.device, dtype=log_w.dtype)
    points = (u + torch.arange(k, device=log_w.device, dtype=log_w.dtype)) / k  # (B, K)
    return torch.searchsorted(cdf, points).clamp_max(k - 1)


def _gather(v: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
    """Rows of ``v: (B k, ...)`` (groups of ``k``) picked by ``idx: (B, m)``, indices within
    each group: (B m, ...)."""
    b = idx.shape[0]
    flat = (idx + k * torch.arange(b, device=idx.device)[:, None]).reshape(-1)  # (B m,)
    return v[flat]


def tds(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, obs: Observation,
        schedule: Schedule, particles: int, scale: float, ess: float, eta: float,
        generator: torch.Generator | None) -> torch.Tensor:
    """Run TDS from ``x: (B K, *event)`` (``K = particles`` consecutive rows per sample) at
    ``ts[0]`` to ``ts[-1]`` (``obs`` repeated likewise); returns one particle per sample
    (B, *event), drawn by its final weight."""
    k = particles
    b = x.shape[0] // k
    x0, log_twist, g = _estimate(denoise, x, ts[0], obs, schedule)
    log_w = log_twist.view(b, k).clone()  # the first target is p~_T(y | x_T) p(x_T)
    for t, s in zip(ts[:-1], ts[1:]):
        a_t, sig_t, _ = coefficients(schedule, t)
        a_s, sig_s, _ = coefficients(schedule, s)
        cx, c0, var = _step_coefficients(a_t, sig_t, a_s, sig_s, eta)
        xd = x.double()
        mean_p = lincomb((cx, xd), (c0, x0))  # the model's step
        shift = lincomb((c0 * scale * sig_t ** 2 / a_t, g))  # twisted minus plain mean
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        x_new = mean_p + shift + var ** 0.5 * z  # (B K, *event)
        x0, new_twist, g = _estimate(denoise, x_new.to(x.dtype), s, obs, schedule)
        # log p(x_new | x) - log q(x_new | x): q's residual is sqrt(var) z
        d_p = x_new - mean_p
        log_ratio = -((d_p * d_p).flatten(1).sum(1) - var * (z * z).flatten(1).sum(1)) / (
            2 * var)
        log_w = log_w + (log_ratio + new_twist - log_twist).view(b, k)
        log_twist, x = new_twist, x_new.to(x.dtype)
        log_w, (x, x0, log_twist, g) = _maybe_resample(log_w, (x, x0, log_twist, g), ess,
                                                        generator)
    return _pick_one(x, log_w, k, generator)


def _step_coefficients(a_t: float, sig_t: float, a_s: float, sig_s: float, eta: float
                       ) -> tuple[float, float, float]:
    """(cx, c0, var) of the stochastic DDIM step from t to s (Song et al. 2021, eq. 12):
    ``x_s ~ N(cx x_t + c0 x0_hat, var)``, with ``var`` ``eta^2`` times the ancestral (DDPM)
    posterior variance; ``eta = 1`` is DDPM's step, smaller is closer to the ODE."""
    ratio = a_t / a_s
    var = eta ** 2 * (sig_t ** 2 - (ratio * sig_s) ** 2) * sig_s ** 2 / sig_t ** 2
    d = max(sig_s ** 2 - var, 0.0) ** 0.5  # the share of eps_hat kept
    return d / sig_t, a_s - d * a_t / sig_t, var


def _pick_one(x: torch.Tensor, log_w: torch.Tensor, k: int,
              generator: torch.Generator | None) -> torch.Tensor:
    """One particle per sample of ``x: (B k, *event)``, drawn by its weight: (B, *event)."""
    pick = torch.multinomial(log_w.softmax(-1).float(), 1, generator=generator)  # (B, 1)
    return _gather(x, pick, k)


def _maybe_resample(log_w: torch.Tensor, state: tuple[torch.Tensor, ...], ess: float,
                    generator: torch.Generator | None
                    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """Resample the groups whose effective sample size is below ``ess K`` (their weights
    reset to equal); the others keep their particles and weights."""
    b, k = log_w.shape
    w = log_w.softmax(-1)
    low = 1.0 / (w * w).sum(-1) < ess * k  # (B,)
    idx = torch.where(low[:, None], systematic_resample(log_w, generator),
                      torch.arange(k, device=log_w.device).expand(b, k))
    log_w = torch.where(low[:, None], torch.zeros_like(log_w), log_w)
    log_w = log_w - log_w.logsumexp(-1, keepdim=True)  # keep the numbers small
    return log_w, tuple(_gather(v, idx, k) for v in state)


def forward_path(known: torch.Tensor, ts: list[float], schedule: Schedule,
                 generator: torch.Generator | None) -> list[torch.Tensor]:
    """One trajectory of the forward process from the observation ``known`` (B, *event): the
    noisy observation at each of ``ts`` (decreasing), drawn as a Markov chain upwards from
    the least noisy time (a path, not independent draws)."""
    a, s, _ = coefficients(schedule, ts[-1])
    z = torch.randn(known.shape, generator=generator, device=known.device, dtype=known.dtype)
    path = [lincomb((a, known), (s, z))]
    for lo, hi in zip(ts[::-1][:-1], ts[::-1][1:]):
        a_lo, s_lo, _ = coefficients(schedule, lo)
        a_hi, s_hi, _ = coefficients(schedule, hi)
        ratio = a_hi / a_lo
        z = torch.randn(known.shape, generator=generator, device=known.device, dtype=known.dtype)
        path.append(lincomb((ratio, path[-1]), (max(s_hi ** 2 - (ratio * s_lo) ** 2, 0.0) ** 0.5,
                                                 z)))
    return path[::-1]  # aligned with ts


def smc(denoise: Denoiser, x: torch.Tensor, ts: list[float], *, obs: Observation,
        schedule: Schedule, particles: int, ess: float, generator: torch.Generator | None
        ) -> torch.Tensor:
    """SMCDiff (Trippe et al. 2023, alg. 1): the known part of every particle follows one
    forward path of the observation; the rest takes the model's ancestral steps, and each
    particle is weighted by how likely the model's step makes the path's next known values
    (resampled like :func:`tds`). No gradients; exact as the particles grow when the model's
    steps are. ``x``: (B K, *event) like :func:`tds`; returns (B, *event)."""
    k = particles
    b = x.shape[0] // k
    path = forward_path(obs.known[::k].double(), ts, schedule, generator)  # per sample
    mask = obs.mask
    x = torch.where(mask, path[0].repeat_interleave(k, 0).to(x.dtype), x)
    log_w = torch.zeros(b, k, dtype=torch.float64, device=x.device)
    for i, (t, s) in enumerate(zip(ts[:-1], ts[1:])):
        a_t, sig_t, _ = coefficients(schedule, t)
        a_s, sig_s, _ = coefficients(schedule, s)
        cx, c0, var = _step_coefficients(a_t, sig_t, a_s, sig_s, 1.0)
        mean = lincomb((cx, x.double()), (c0, denoise.x0(x, t).double()))  # (B K, *event)
        nxt = path[i + 1].repeat_interleave(k, 0)
        z = torch.randn(x.shape, generator=generator, device=x.device, dtype=torch.float64)
        d = torch.where(mask, nxt - mean, 0.0)
        log_w = log_w - (d * d).flatten(1).sum(1).view(b, k) / (2 * var)
        x = torch.where(mask, nxt, mean + var ** 0.5 * z).to(x.dtype)
        log_w, (x,) = _maybe_resample(log_w, (x,), ess, generator)
    return _pick_one(x, log_w, k, generator)
