"""Noise schedules: the Gaussian path ``x_t = alpha(t) * x0 + sigma(t) * eps`` for t in [0, 1].

Every schedule gives ``alpha(t)``, ``sigma(t)``, the log-SNR ``lambda(t) = log(alpha / sigma)``
and its inverse ``t_of_lambda``; arithmetic is float64. All schedules have alpha(0) = 1 and
sigma(0) = 0 (clean data at t = 0); ``[t_min, t_max]`` is the range a network is trained on and
a sampler integrates over (a final step then lands on t = 0).

* ``linear``  — DDPM (Ho et al. 2020): beta from 1e-4 to 0.02 over 1000 steps, read as
  continuous time by interpolating log(alpha) piecewise linearly between t_n = n / 1000
  (as DPM-Solver does for discrete models), so alpha(n / 1000)**2 equals DDPM's alpha-bar_n.
* ``discrete`` — any discrete-time DDPM model's betas as the DDPM code bases (diffusers) name
  them: linear, scaled_linear (Stable Diffusion), squaredcos_cap_v2, optionally rescaled to zero
  terminal SNR; computed in float32 as those code bases do and read as continuous time like
  ``linear``. A network trained at discrete timesteps k = 0..N-1 sees k = N t - 1.
* ``cosine``  — Nichol & Dhariwal 2021: alpha-bar(t) = f(t) / f(0), f = cos((t+s)/(1+s) pi/2)^2;
  ``shift`` > 1 lowers the log-SNR everywhere by ``log(shift)`` (the "shifted cosine" of
  Hoogeboom et al. 2023, shift = resolution / 64; the same factor as SD3's timestep shift):
  more of training and sampling at high noise, where redundant data (large images, clips
  whose frames repeat one another) decides its global layout.
* ``sigmoid`` — Chen 2023 / Jabri et al. 2023: alpha-bar from a shifted, scaled sigmoid.
* ``edm``     — variance exploding (Karras et al. 2022): alpha = 1, sigma(t) = sigma_max * t, so
  that t is EDM's sigma up to a constant and the Karras rho-grid picks the steps.
* ``flow``    — rectified flow / flow matching: alpha = 1 - t, sigma = t.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from omnidiff.errors import UserError

__all__ = ["Schedule", "VPSchedule", "LinearSchedule", "DiscreteSchedule", "BETA_SCHEDULES",
           "CosineSchedule", "SigmoidSchedule", "EDMSchedule", "FlowSchedule", "SCHEDULES",
           "get_schedule"]

_TINY = 1e-12  # floor for alpha and sigma inside log-SNR, so lambda stays finite


def _f64(t: torch.Tensor | float) -> torch.Tensor:
    return torch.as_tensor(t, dtype=torch.float64)


class Schedule:
    """Base class: subclasses implement ``alpha_sigma`` and ``t_of_lambda``."""

    name: str = ""
    t_min: float = 1e-3
    t_max: float = 1.0

    def alpha_sigma(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def t_of_lambda(self, lam: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def config(self) -> dict[str, Any]:
        """Plain-python arguments that rebuild this schedule with ``get_schedule(**cfg)``."""
        return {"name": self.name}

    # ---- derived quantities -------------------------------------------------------------
    def alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_sigma(t)[0]

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        return self.alpha_sigma(t)[1]

    def log_snr(self, t: torch.Tensor) -> torch.Tensor:
        """lambda(t) = log(alpha / sigma), kept finite at the ends (floor 1e-12)."""
        a, s = self.alpha_sigma(t)
        return torch.log(a.clamp_min(_TINY)) - torch.log(s.clamp_min(_TINY))

    def derivatives(self, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(d alpha / dt, d sigma / dt), exact by automatic differentiation (float64)."""
        t = _f64(t).detach().clone().requires_grad_(True)
        with torch.enable_grad():
            a, s = self.alpha_sigma(t)
            a, s = a + 0 * t, s + 0 * t  # constant parts still join the graph
            da, = torch.autograd.grad(a.sum(), t, retain_graph=True)
            ds, = torch.autograd.grad(s.sum(), t)
        return da, ds

    @property
    def prior_std(self) -> float:
        """Std of x at t_max for unit-variance data: the scale of the starting noise."""
        a, s = self.alpha_sigma(_f64(self.t_max))
        return float(torch.sqrt(a * a + s * s))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items() if k != "name")
        return f"{type(self).__name__}({args})"


def _vp_lambda(log_alpha: torch.Tensor) -> torch.Tensor:
    """Log-SNR of a VP point from its log(alpha): ``log alpha - log(1 - alpha^2) / 2``."""
    return log_alpha - 0.5 * torch.log((-torch.expm1(2.0 * log_alpha)).clamp_min(_TINY ** 2))


def _vp_log_alpha(lam: torch.Tensor) -> torch.Tensor:
    """log(alpha) of the VP point of log-SNR ``lam`` (alpha^2 = sigmoid(2 lambda))."""
    return 0.5 * torch.nn.functional.logsigmoid(2.0 * lam)


class VPSchedule(Schedule):
    """Variance preserving: alpha^2 + sigma^2 = 1. Subclasses give log(alpha) and its inverse."""

    def log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def t_of_log_alpha(self, log_alpha: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def alpha_sigma(self, t):
        la = self.log_alpha(_f64(t))
        alpha = torch.exp(la)
        sigma = torch.sqrt(-torch.expm1(2.0 * la).clamp_max(0.0))  # sqrt(1 - alpha^2)
        return alpha, sigma

    def log_snr(self, t):
        return _vp_lambda(self.log_alpha(_f64(t)))

    def t_of_lambda(self, lam):
        return self.t_of_log_alpha(_vp_log_alpha(_f64(lam)))


class _KnotSchedule(VPSchedule):
    """A discrete-time model's N betas read as continuous time: log(alpha) is interpolated
    piecewise linearly between the knots t_n = n / N (n = 0..N, log alpha_0 = 0), as
    DPM-Solver does for discrete models, so alpha(n / N)**2 is the model's alpha-bar_n and the
    network's discrete timestep (0-based) at time t is ``N t - 1``. t_min = 1 / N, t_max = 1."""

    def _set_betas(self, betas: torch.Tensor, alphas_cumprod: torch.Tensor | None = None
                   ) -> None:
        """The knots of ``betas`` (N,); ``alphas_cumprod`` (N,) when the model's own alpha-bars
        differ from the float64 product of the betas (float32 round-off, a floored end)."""
        self.betas = betas.to(torch.float64)
        n = len(betas)
        if alphas_cumprod is None:  # DDPM's alpha-bar_n, n = 1..N, and its log
            self.alphas_cumprod = torch.cumprod(1.0 - self.betas, 0)
            log_abar = torch.cumsum(torch.log1p(-self.betas), 0)  # without round-off
        else:
            self.alphas_cumprod = alphas_cumprod.to(torch.float64)
            log_abar = torch.log(self.alphas_cumprod)
        # knots t_n = n / N, n = 0..N, with log alpha_0 = 0 (clean data)
        self._knots_t = torch.arange(n + 1, dtype=torch.float64) / n
        self._knots_la = torch.cat([torch.zeros(1, dtype=torch.float64), 0.5 * log_abar])
        self.t_min = 1.0 / n
        self.t_max = 1.0

    @staticmethod
    def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
        """Piecewise-linear interpolation (xp increasing), extrapolating the end segments."""
        xp, fp = xp.to(x.device), fp.to(x.device)
        idx = torch.searchsorted(xp, x.detach().contiguous()).clamp(1, len(xp) - 1)
        x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
        return f0 + (x - x0) * (f1 - f0) / (x1 - x0)

    def log_alpha(self, t):
        return self._interp(t, self._knots_t, self._knots_la)

    def t_of_log_alpha(self, log_alpha):
        # log alpha decreases in t: interpolate on the reversed (increasing) knots
        return self._interp(log_alpha, self._knots_la.flip(0), self._knots_t.flip(0))


class LinearSchedule(_KnotSchedule):
    name = "linear"

    def __init__(self, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000):
        self.beta_start, self.beta_end, self.num_steps = beta_start, beta_end, num_steps
        self._set_betas(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))

    def config(self):
        return {"name": self.name, "beta_start": self.beta_start, "beta_end": self.beta_end,
                "num_steps": self.num_steps}


BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
ZERO_SNR_FLOOR = 2.0 ** -24  # alpha-bar of the last step after zero-terminal-SNR rescaling


def discrete_betas(beta_schedule: str, beta_start: float, beta_end: float,
                   num_steps: int) -> torch.Tensor:
    """(num_steps,) float32 betas as the DDPM code bases compute them (in float32, so that a
    model trained on them is sampled on its own alpha-bars): ``linear`` in beta,
    ``scaled_linear`` linear in sqrt(beta) (Stable Diffusion), ``squaredcos_cap_v2`` the
    betas of Nichol & Dhariwal's cosine alpha-bar (s = 0.008), capped at 0.999."""
    if beta_schedule == "linear":
        return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float32)
    if beta_schedule == "scaled_linear":
        return torch.linspace(beta_start ** 0.5, beta_end ** 0.5, num_steps,
                              dtype=torch.float32) ** 2
    if beta_schedule == "squaredcos_cap_v2":
        f = [math.cos((i / num_steps + 0.008) / 1.008 * math.pi / 2) ** 2
             for i in range(num_steps + 1)]
        return torch.tensor([min(1 - f[i + 1] / f[i], 0.999) for i in range(num_steps)],
                            dtype=torch.float32)
    raise UserError(f"unknown beta_schedule {beta_schedule!r}; choose one of: "
                    f"{', '.join(BETA_SCHEDULES)}")


def rescale_zero_terminal_snr(betas: torch.Tensor) -> torch.Tensor:
    """Betas rescaled so that the last step is pure noise (Lin et al. 2023, Algorithm 1):
    sqrt(alpha-bar) shifted to end at 0 and scaled to keep its first value (float32)."""
    root = torch.cumprod(1.0 - betas, 0).sqrt()
    first, last = root[0].clone(), root[-1].clone()
    root = (root - last) * (first / (first - last))
    abar = root ** 2
    return 1.0 - torch.cat([abar[:1], abar[1:] / abar[:-1]])


class DiscreteSchedule(_KnotSchedule):
    """A discrete-time DDPM model's schedule, named as the DDPM code bases (diffusers) name it:
    ``beta_schedule`` linear | scaled_linear | squaredcos_cap_v2 over ``num_steps`` training
    steps, optionally rescaled to zero terminal SNR (``zero_terminal_snr``; its last alpha-bar,
    0, is floored at 2**-24 so that x0 stays defined, as diffusers' multistep solvers do)."""

    name = "discrete"

    def __init__(self, beta_schedule: str = "linear", beta_start: float = 1e-4,
                 beta_end: float = 0.02, num_steps: int = 1000,
                 zero_terminal_snr: bool = False):
        if not (isinstance(num_steps, int) and num_steps >= 2):
            raise UserError(f"discrete schedule: num_steps must be an integer >= 2, got "
                            f"{num_steps!r}")
        self.beta_schedule, self.num_steps = beta_schedule, num_steps
        self.beta_start, self.beta_end = float(beta_start), float(beta_end)
        self.zero_terminal_snr = bool(zero_terminal_snr)
        betas = discrete_betas(beta_schedule, self.beta_start, self.beta_end, num_steps)
        if self.zero_terminal_snr:
            betas = rescale_zero_terminal_snr(betas)
        abar = torch.cumprod(1.0 - betas, 0)  # float32: the values the model saw
        if self.zero_terminal_snr:
            abar[-1] = ZERO_SNR_FLOOR
        self._set_betas(betas, abar)

    def config(self):
        return {"name": self.name, "beta_schedule": self.beta_schedule,
                "beta_start": self.beta_start, "beta_end": self.beta_end,
                "num_steps": self.num_steps, "zero_terminal_snr": self.zero_terminal_snr}


class CosineSchedule(VPSchedule):
    name = "cosine"

    def __init__(self, s: float = 0.008, t_max: float = 0.9946, shift: float = 1.0):
        if not shift > 0:
            raise UserError(f"schedule.shift={shift} must be positive (1: Nichol & Dhariwal's "
                             f"cosine; above 1: noisier)")
        self.s, self.shift = s, float(shift)
        self.t_max = t_max  # alpha-bar reaches 0 at t = 1; stop where it is still resolvable
        self.t_min = 1e-3
        self._log_cos0 = math.log(math.cos(s / (1 + s) * math.pi / 2))

    def config(self):
        extra = {"shift": self.shift} if self.shift != 1.0 else {}  # old checkpoints unchanged
        return {"name": self.name, "s": self.s, "t_max": self.t_max} | extra

    def log_alpha(self, t):
        phi = (t + self.s) / (1 + self.s) * (math.pi / 2)
        la = torch.log(torch.cos(phi).clamp_min(_TINY)) - self._log_cos0
        return self._moved(la, -math.log(self.shift))

    def t_of_log_alpha(self, log_alpha):
        la = self._moved(log_alpha, math.log(self.shift))
        phi = torch.arccos(torch.exp(la + self._log_cos0).clamp(-1.0, 1.0))
        return phi * 2 / math.pi * (1 + self.s) - self.s

    @staticmethod
    def _moved(log_alpha: torch.Tensor, d_lambda: float) -> torch.Tensor:
        """log(alpha) of the VP point whose log-SNR is ``d_lambda`` above ``log_alpha``'s."""
        if d_lambda == 0.0:
            return log_alpha
        return _vp_log_alpha(_vp_lambda(log_alpha) + d_lambda)


class SigmoidSchedule(VPSchedule):
    """alpha-bar(t) = (v_end - sigmoid((t (end - start) + start) / tau)) / (v_end - v_start)."""

    name = "sigmoid"

    def __init__(self, start: float = -3.0, end: float = 3.0, tau: float = 1.0,
                 t_max: float = 0.999):
        self.start, self.end, self.tau, self.t_max = start, end, tau, t_max
        self.t_min = 1e-3
        self._v0 = 1 / (1 + math.exp(-start / tau))
        self._v1 = 1 / (1 + math.exp(-end / tau))

    def config(self):
        return {"name": self.name, "start": self.start, "end": self.end, "tau": self.tau,
                "t_max": self.t_max}

    def log_alpha(self, t):
        u = (t * (self.end - self.start) + self.start) / self.tau
        abar = (self._v1 - torch.sigmoid(u)) / (self._v1 - self._v0)
        return 0.5 * torch.log(abar.clamp_min(_TINY ** 2))

    def t_of_log_alpha(self, log_alpha):
        abar = torch.exp(2.0 * log_alpha)
        v = (self._v1 - abar * (self._v1 - self._v0)).clamp(1e-15, 1 - 1e-15)
        u = torch.log(v) - torch.log1p(-v)
        return (u * self.tau - self.start) / (self.end - self.start)


class EDMSchedule(Schedule):
    """Variance exploding with sigma(t) = sigma_max * t on [sigma_min / sigma_max, 1]."""

    name = "edm"

    def __init__(self, sigma_min: float = 0.002, sigma_max: float = 80.0):
        if not 0 < sigma_min < sigma_max:
            raise UserError(f"edm schedule needs 0 < sigma_min < sigma_max, got "
                             f"sigma_min={sigma_min}, sigma_max={sigma_max}")
        self.sigma_min, self.sigma_max = sigma_min, sigma_max
        self.t_min = sigma_min / sigma_max
        self.t_max = 1.0

    def config(self):
        return {"name": self.name, "sigma_min": self.sigma_min, "sigma_max": self.sigma_max}

    def alpha_sigma(self, t):
        t = _f64(t)
        return torch.ones_like(t), self.sigma_max * t

    def t_of_lambda(self, lam):
        return torch.exp(-_f64(lam)) / self.sigma_max


class FlowSchedule(Schedule):
    """Rectified flow: alpha = 1 - t, sigma = t (pure noise at t = 1)."""

    name = "flow"

    def __init__(self, t_min: float = 1e-3, t_max: float = 1.0):
        self.t_min, self.t_max = t_min, t_max

    def config(self):
        return {"name": self.name, "t_min": self.t_min, "t_max": self.t_max}

    def alpha_sigma(self, t):
        t = _f64(t)
        return 1.0 - t, t

    def t_of_lambda(self, lam):
        return torch.sigmoid(-_f64(lam))  # alpha / sigma = (1 - t) / t = exp(lambda)


SCHEDULES: dict[str, type[Schedule]] = {
    c.name: c for c in (LinearSchedule, DiscreteSchedule, CosineSchedule, SigmoidSchedule,
                        EDMSchedule, FlowSchedule)
}


def get_schedule(name: str | Schedule, **kwargs: Any) -> Schedule:
    """Build a schedule by name: ``get_schedule("cosine")``, ``get_schedule(**sched.config())``."""
    if isinstance(name, Schedule):
        return name
    if name not in SCHEDULES:
        raise UserError(f"unknown schedule {name!r}; choose one of: {', '.join(SCHEDULES)}")
    try:
        return SCHEDULES[name](**kwargs)
    except TypeError as exc:
        raise UserError(f"bad arguments for schedule {name!r}: {exc}") from None
