"""The denoiser view of a model that samplers use, with exact NFE accounting."""

from __future__ import annotations

import functools
from typing import Any, Callable

import torch

from omnidiff._util import append_dims, check_choice
from omnidiff.core.predictions import PREDICTIONS, check_output, prediction_coefficients
from omnidiff.core.schedules import Schedule
from omnidiff.errors import UserError

__all__ = ["Denoiser", "coefficients", "derivatives", "lincomb", "parse_clip"]


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


@functools.lru_cache(maxsize=8192)
def _inverse(schedule: Schedule, prediction: str, t: float) -> tuple[float, float, float, float]:
    a, s, _ = coefficients(schedule, t)
    da, ds = derivatives(schedule, t) if prediction == "flow" else (None, None)
    return prediction_coefficients(prediction, a, s, da, ds)


def lincomb(*terms: tuple[float, torch.Tensor]) -> torch.Tensor:
    """``sum_i c_i x_i`` for python-float ``c_i``, one elementwise kernel per nonzero term (a
    scaled copy, then fused multiply-adds into it); repeated tensors are merged and zero
    coefficients cost nothing. Always a new tensor, so callers may update it in place."""
    merged: dict[int, list] = {}  # the same tensor twice is one term
    for c, x in terms:
        if id(x) in merged:
            merged[id(x)][0] += float(c)
        else:
            merged[id(x)] = [float(c), x]
    live = [(c, x) for c, x in merged.values() if c != 0.0]
    if not live:
        return torch.zeros_like(terms[0][1])
    (c0, x0), rest = live[0], live[1:]
    if rest and c0 == 1.0:
        (c1, x1), rest = rest[0], rest[1:]
        out = torch.add(x0, x1, alpha=c1)
    else:
        out = x0 * c0
    for c, x in rest:
        out.add_(x, alpha=c)
    return out


def parse_clip(spec: Any) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """``clip_x0``: None (off), ``c`` (clamp x0_hat to [-c, c]), ``(lo, hi)``, or ``"dynamic"`` /
    ``"dynamic:p"`` (Saharia et al. 2022's dynamic thresholding for data in [-1, 1]: per
    sample, s = max(1, p-quantile of |x0_hat|), x0_hat -> clamp(x0_hat, -s, s) / s; p = 0.995),
    or a function ``x0_hat -> clipped x0_hat`` (a model with a prior clips in data space)."""
    if spec is None or spec is False:
        return None
    if callable(spec):
        return spec
    if isinstance(spec, str) and spec.split(":")[0] == "dynamic":
        try:
            p = float(spec.split(":", 1)[1]) if ":" in spec else 0.995
        except ValueError:
            p = -1.0
        if not 0.0 < p <= 1.0:
            raise UserError(f"clip_x0={spec!r}: the quantile must be in (0, 1], e.g. "
                             "'dynamic:0.995'")

        def dynamic(x0: torch.Tensor) -> torch.Tensor:
            q = torch.quantile(x0.detach().flatten(1).abs().float(), p, dim=1)
            lim = append_dims(q.clamp_min(1.0).to(x0.dtype), x0.ndim)
            return torch.maximum(torch.minimum(x0, lim), -lim) / lim
        return dynamic
    try:
        lo, hi = ((-float(spec), float(spec)) if isinstance(spec, (int, float))
                  else (float(spec[0]), float(spec[1])))
    except (TypeError, ValueError, IndexError):
        lo, hi = 1.0, 0.0
    if not lo < hi:
        raise UserError(f"clip_x0={spec!r} is not a clip range: give c > 0 (for [-c, c]), "
                         "[lo, hi] with lo < hi, or 'dynamic' / 'dynamic:0.995'")
    return lambda x0: x0.clamp(lo, hi)


class Denoiser:
    """Turns ``model(x_t, t) -> prediction`` into ``D(x, t) -> (x0_hat, eps_hat)``.

    The sampler's state ``x`` may be float64 or float32 (:func:`~omnidiff.samplers.sample`
    picks); it is cast to ``dtype`` (the network's) at the network boundary and the output is
    cast back. All coefficients are python floats computed in float64. ``nfe`` counts calls of
    ``model``; ``network_evals`` counts samples passed through the network per sample (2 per
    call under classifier-free guidance, whose wrapper sets ``cfg_batches = 2``).
    """

    def __init__(self, model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 schedule: Schedule, prediction: str, dtype: torch.dtype,
                 clip_x0: Any = None):
        self.model, self.schedule, self.dtype = model, schedule, dtype
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.clip = parse_clip(clip_x0)
        self.nfe = 0
        self.network_evals = 0
        self.info: dict = {}  # extra statistics a sampler reports (e.g. rk45's step counts)
        self.watch: Any = None  # a StepWatch (omnidiff.samplers.watch): sees every x0_hat

    def _predict(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, tuple]:
        """(network output in x's dtype, (c1, c2, c3, c4) of :func:`prediction_coefficients`)."""
        t_vec = torch.full((x.shape[0],), t, dtype=self.dtype, device=x.device)  # (B,)
        out = self.model(x.to(self.dtype), t_vec)
        check_output(out, x)
        self.nfe += 1
        self.network_evals += getattr(self.model, "cfg_batches", 1)
        out, coefs = out.to(x.dtype), _inverse(self.schedule, self.prediction, float(t))
        if self.watch is not None:  # the clean estimate, computed only for a watcher
            x0 = lincomb((coefs[0], x), (coefs[1], out))
            self.watch.seen(float(t), x0 if self.clip is None else self.clip(x0))
        return out, coefs

    def _clipped(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, float, float]:
        """(clipped x0_hat, alpha, sigma): eps_hat then follows from x = alpha x0 + sigma eps."""
        out, (c1, c2, _, _) = self._predict(x, t)
        a, s, _ = coefficients(self.schedule, float(t))
        return self.clip(lincomb((c1, x), (c2, out))), a, s

    def __call__(self, x: torch.Tensor, t: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(x0_hat, eps_hat), each (B, *event) in x's dtype."""
        if self.clip is not None:
            x0, a, s = self._clipped(x, t)
            return x0, lincomb((1.0 / s, x), (-a / s, x0))
        out, (c1, c2, c3, c4) = self._predict(x, t)
        return lincomb((c1, x), (c2, out)), lincomb((c3, x), (c4, out))

    def x0(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """x0_hat alone (what the exponential integrators need): two kernels at most."""
        if self.clip is not None:
            return self._clipped(x, t)[0]
        out, (c1, c2, _, _) = self._predict(x, t)
        return lincomb((c1, x), (c2, out))

    def combine(self, x: torch.Tensor, t: float, p: float, q: float) -> torch.Tensor:
        """``p x0_hat + q eps_hat`` in two kernels, whatever the prediction type (e.g. a DDIM
        step ``alpha_n x0 + sigma_n eps``, or the ODE velocity)."""
        if self.clip is not None:
            x0, a, s = self._clipped(x, t)
            return lincomb((p - q * a / s, x0), (q / s, x))
        out, (c1, c2, c3, c4) = self._predict(x, t)
        return lincomb((p * c1 + q * c3, x), (p * c2 + q * c4, out))

    def velocity(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """dx/dt of the probability-flow ODE: alpha'(t) x0_hat + sigma'(t) eps_hat."""
        da, ds = derivatives(self.schedule, float(t))
        return self.combine(x, t, da, ds)
