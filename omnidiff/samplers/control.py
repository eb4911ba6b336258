"""Control at sampling time, for :func:`omnidiff.samplers.sample`: imputation (``known=``,
``mask=``, ``method=``), editing (``init=``, ``strength=``, SDEdit) and guidance by a function
of the denoised estimate (``guide=``, ``guide_scale=``), each checked before any sampling.

A :class:`Control` changes four things and nothing else: the grid (editing starts part-way),
the model (a wrapper of :mod:`omnidiff.core.steering`), the start state, and the loop
(RePaint's resampling, TDS's particles); the samplers themselves stay untouched.

Editing (SDEdit, Meng et al. 2022): ``init`` is noised to the time ``t0 = strength * t_max``
(SDEdit's t0 on the schedule's own time axis), ``x = alpha init + sigma noise``, and solved
back over the grid's times below ``t0`` (strength 1: the whole grid from ``t_max``, where little
of ``init`` is left). On a grid uniform in t this is diffusers' image-to-image, which runs the
last ``strength * steps`` of the steps; on other grids it stays the same noise level.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from omnidiff._util import is_number
from omnidiff.core.schedules import Schedule
from omnidiff.core.steering import alpha_sigma, score_edit, steer_x0
from omnidiff.errors import UserError
from omnidiff.samplers.denoiser import coefficients, lincomb
from omnidiff.samplers.imputation import (
    PARTICLE_METHODS,
    Observation,
    batch_of,
    dps_edit,
    observation,
    parse_method,
    repaint,
)
from omnidiff.samplers.twisted import smc, tds

__all__ = ["Control", "control"]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Control:
    """What :func:`control` checked; :func:`sample` asks it for each of the four changes."""
    schedule: Schedule
    prediction: str
    obs: Observation | None = None
    method: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    init: torch.Tensor | None = None
    strength: float | None = None
    guide: Callable[[torch.Tensor], torch.Tensor] | None = None
    guide_scale: float = 1.0

    @property
    def particles(self) -> int:
        return int(self.options["particles"]) if self.method in PARTICLE_METHODS else 1

    def grid(self, ts: torch.Tensor) -> torch.Tensor:
        """When editing: the grid's times below ``t0 = strength * t_max``, with ``t0`` first
        (strength 1 keeps the whole grid)."""
        if self.init is None:
            return ts
        t0 = max(self.strength * self.schedule.t_max, self.schedule.t_min)
        later = ts[:-1][ts[:-1] < t0 * (1 - 1e-9)]
        return torch.cat([ts.new_tensor([t0]), later, ts[-1:]])

    def model(self, model: Model, generator: torch.Generator | None) -> Model:
        """The model the denoiser sees: one :func:`steer_x0` wrapper holding every edit of
        ``x0_hat`` (so gradients through the network are taken once)."""
        if self.particles > 1:
            model = per_particle(model, self.particles, self.obs.known.shape[0])
        edits, grad, inputs = [], False, None
        if self.guide is not None:
            edits.append(score_edit(self.guide, self.guide_scale, self.schedule))
            grad = True
        if self.obs is not None and self.method not in PARTICLE_METHODS:
            if self.method == "dps":
                edits.append(dps_edit(self.obs, self.schedule, float(self.options["scale"])))
                grad = True
            else:  # replace, repaint
                inputs = self._fresh(generator)
                edits.append(lambda _x, _t, x0: self.obs.impose(x0))
        if not edits:
            return model

        def edit(x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
            for e in edits:
                x0 = e(x, t, x0)
            return x0
        return steer_x0(model, self.schedule, self.prediction, edit, grad=grad, inputs=inputs)

    def _fresh(self, generator: torch.Generator | None) -> Model:
        """x_t with its known part drawn afresh from q(x_t | y) (``replace``)."""
        obs, schedule = self.obs, self.schedule

        def fresh(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            a, s = alpha_sigma(schedule, t, x_t.ndim)  # (B, 1, ...) float64
            z = torch.randn(x_t.shape, generator=generator, device=x_t.device,
                            dtype=x_t.dtype)
            noisy = (a * obs.known + s * z).to(x_t.dtype)  # a draw of q(x_t | y)
            return torch.where(obs.mask, noisy, x_t)
        return fresh

    def start(self, noise: torch.Tensor, t0: float, generator: torch.Generator | None
              ) -> torch.Tensor:
        """The state at the grid's first time: ``prior_std * noise``, or ``alpha init + sigma
        noise`` when editing; ``particles`` rows per sample for ``tds`` and ``smc``."""
        k = self.particles
        if k > 1:
            more = torch.randn((noise.shape[0], k - 1, *noise.shape[1:]), generator=generator,
                               device=noise.device, dtype=noise.dtype)
            noise = torch.cat([noise[:, None], more], 1).flatten(0, 1)  # (B K, *event)
        if self.init is None:
            return noise * self.schedule.prior_std
        a, s, _ = coefficients(self.schedule, t0)
        init = self.init.to(noise.dtype).repeat_interleave(k, 0)
        return lincomb((a, init), (s, noise))

    def run(self, sampler: Callable[..., torch.Tensor], denoise: Callable, x: torch.Tensor,
            ts: list[float], generator: torch.Generator | None, **options: Any
            ) -> torch.Tensor:
        """The loop from ``ts[0]`` to ``ts[-1]``: the sampler, or RePaint / TDS around it."""
        if self.method == "repaint":
            return repaint(sampler, denoise, x, ts, resample=int(self.options["resample"]),
                           jump=int(self.options["jump"]), schedule=self.schedule,
                           generator=generator, **options)
        if self.method == "tds":
            return tds(denoise, x, ts, obs=self.obs.repeat(self.particles),
                       schedule=self.schedule, particles=self.particles,
                       scale=float(self.options["scale"]), ess=float(self.options["ess"]),
                       eta=float(self.options["eta"]), generator=generator)
        if self.method == "smc":
            return smc(denoise, x, ts, obs=self.obs.repeat(self.particles),
                       schedule=self.schedule, particles=self.particles,
                       ess=float(self.options["ess"]), generator=generator)
        return sampler(denoise, x, ts, generator=generator, **options)

    def finish(self, x0: torch.Tensor) -> torch.Tensor:
        """The clean samples, exactly equal to the observation where it is known."""
        return x0 if self.obs is None else self.obs.impose(x0)

    def info(self) -> dict[str, Any]:
        """What :func:`sample` reports in ``stats``: the imputation method, the edit strength."""
        out: dict[str, Any] = {}
        if self.obs is not None:
            out["method"] = self.method
        if self.init is not None:
            out["strength"] = self.strength
        return out

    def network_evals(self, counted: int, nfe: int) -> int:
        """Network passes per sample from the denoiser's count (``tds``: every call but the
        last runs one pass per particle)."""
        return counted + (counted // max(nfe, 1)) * (nfe - 1) * (self.particles - 1)


def per_particle(model: Model, k: int, b: int) -> Model:
    """``model`` called once per particle on the rows ``j::k`` (each particle of every sample,
    in sample order), so a model bound to one condition per sample (a closure over ``b``
    rows) serves ``b k`` particles; a call on ``b`` rows (the final step) goes through."""
    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if x_t.shape[0] != b * k:
            return model(x_t, t)
        outs = [model(x_t[j::k], t[j::k]) for j in range(k)]  # k of (B, *event)
        return torch.stack(outs, 1).flatten(0, 1)  # (B k, *event), sample-major
    fn.cfg_batches = getattr(model, "cfg_batches", 1)
    return fn


def control(schedule: Schedule, prediction: str, shape: torch.Size, device: torch.device,
            dtype: torch.dtype, *, known: Any = None, mask: Any = None, method: Any = None,
            init: Any = None, strength: Any = None, guide: Any = None,
            guide_scale: Any = 1.0) -> Control:
    """The control keywords of :func:`sample`, checked against the samples' ``shape`` (B,
    *event): one :class:`UserError` per mistake, before any sampling."""
    ctl = Control(schedule, prediction)
    if known is not None or mask is not None:
        ctl.obs = observation(known, mask, shape, device, dtype)
        ctl.method, ctl.options = parse_method(method)
    elif method is not None:
        raise UserError("method= picks how to impute known values: pass known= and mask= "
                        "too (or drop method=)")
    if init is not None or strength is not None:
        ctl.init, ctl.strength = _edit(init, strength, shape, device, dtype)
    if guide is not None:
        if not callable(guide):
            raise UserError("guide= takes a function fn(x0_hat) -> (B,) log-score")
        if not is_number(guide_scale, float, 0):
            raise UserError(f"guide_scale must be a finite number >= 0, got {guide_scale!r}")
        if ctl.method == "tds":
            raise UserError("guide= cannot be combined with method='tds' (its weights assume "
                            "the model's own law); use method='dps' or 'replace'")
        ctl.guide, ctl.guide_scale = guide, float(guide_scale)
    return ctl


def _edit(init: Any, strength: Any, shape: torch.Size, device: torch.device,
          dtype: torch.dtype) -> tuple[torch.Tensor, float]:
    """``init`` (one sample or a batch like the samples) and ``strength`` in (0, 1], checked."""
    if init is None:
        raise UserError("strength= sets how far init= is noised before it is solved back: "
                        "pass init= (the samples to edit) too")
    strength = 0.6 if strength is None else strength
    if not is_number(strength, float, 0) or not 0 < strength <= 1:
        raise UserError(f"strength must be in (0, 1] (1: noise init fully, small: keep most "
                        f"of it), got {strength!r}")
    init = batch_of("init", init, shape).to(device=device, dtype=dtype).contiguous()
    if not torch.isfinite(init).all():
        raise UserError("init= holds NaN or inf")
    return init, float(strength)
