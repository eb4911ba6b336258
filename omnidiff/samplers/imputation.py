"""Imputation: samples that agree with a partial observation ``known`` where ``mask`` is set and
follow the model's law elsewhere (inpainting, outpainting, filling a gap in a waveform,
in-between frames), with no retraining.

The methods (``method=`` of :func:`omnidiff.samplers.sample`), each a change to the denoiser
or to the sampler's loop:

* ``replace`` -- Song et al. 2021 (app. I.2): the network sees the known part of ``x_t``
  replaced by a fresh forward sample ``alpha y + sigma z``, and the known part of ``x0_hat``
  is ``y``. A wrapper: every sampler.
* ``dps`` -- reconstruction guidance on the denoised estimate (DPS, Chung et al. 2023; Ho et
  al. 2022's video in-filling): ``x0_hat`` moves along the gradient, through the network, of
  ``log N(y; m x0_hat(x_t), r_t^2)`` with ``r_t^2 = s^2 / (1 + s^2)``, ``s = sigma / alpha``
  (Song et al. 2023's PiGDM variance for unit-variance data), and its known part is ``y``. A
  wrapper: every sampler; a backward pass per evaluation.
* ``repaint`` -- Lugmayr et al. 2022: ``replace``, and after each block of ``jump`` steps the
  state is re-noised back to the block's start and the block run again, ``resample`` times in
  all (so ``resample`` times the NFE). Every sampler (each block starts a multistep sampler
  afresh).
* ``tds`` -- the twisted diffusion sampler (Wu et al. 2023), in :mod:`~omnidiff.samplers.twisted`:
  sequential Monte Carlo over ``particles`` copies of each sample, proposals twisted like
  ``dps`` and importance weights that make it exact as the particles grow. Its own ancestral
  (DDPM) steps: the ``sampler`` does not apply.
* ``smc`` -- SMCDiff (Trippe et al. 2023), also in :mod:`~omnidiff.samplers.twisted`: the known
  part follows one forward path of the observation, particles are weighted by how likely the
  model's step makes it; no gradients. Its own ancestral steps.

A method's options come with it as a dict: ``method={"name": "repaint", "resample": 10}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch

from omnidiff.core.schedules import Schedule
from omnidiff.core.steering import alpha_sigma, tweedie_step
from omnidiff.errors import UserError
from omnidiff.samplers.denoiser import coefficients, lincomb

__all__ = ["METHODS", "PARTICLE_METHODS", "Observation", "observation", "batch_of",
           "parse_method", "dps_edit", "twist", "repaint", "renoise"]

METHODS = {"replace": {}, "dps": {"scale": 1.0}, "repaint": {"resample": 10, "jump": 1},
           "tds": {"particles": 8, "scale": 1.0, "ess": 0.5, "eta": 1.0},
           "smc": {"particles": 8, "ess": 0.5}}
DEFAULT_METHOD = "tds"
PARTICLE_METHODS = ("tds", "smc")  # run their own loop over `particles` copies per sample


@dataclass
class Observation:
    """known: (B, *event) values, mask: (B, *event) bool (True where known), in the state's
    dtype and device, broadcast to the batch."""
    known: torch.Tensor
    mask: torch.Tensor

    def impose(self, x0: torch.Tensor) -> torch.Tensor:
        """``x0`` with its known part set to the observation."""
        return torch.where(self.mask, self.known.to(x0.dtype), x0)

    def repeat(self, k: int) -> "Observation":
        """Each row ``k`` times in a row (for ``k`` particles per sample)."""
        return Observation(self.known.repeat_interleave(k, 0), self.mask.repeat_interleave(k, 0))


def observation(known: Any, mask: Any, shape: torch.Size, device: torch.device,
                dtype: torch.dtype) -> Observation:
    """``known`` and ``mask`` checked against the samples' ``shape`` (B, *event) and broadcast
    to it: one clear :class:`UserError` for a missing half, a shape that does not fit, or a
    mask that hides nothing or everything."""
    if (known is None) != (mask is None):
        raise UserError("imputation needs both known= (the observed values) and mask= (True "
                        "where they hold); pass both or neither")
    known, mask = (batch_of(name, _one_row(v, shape), shape)
                   for name, v in (("known", known), ("mask", mask)))
    if mask.dtype != torch.bool:
        if not ((mask == 0) | (mask == 1)).all():
            raise UserError("mask must be boolean (or 0/1): True / 1 where known= holds")
        mask = mask != 0
    if bool(mask.all()):
        raise UserError("mask= keeps every value: there is nothing to fill in (set it False "
                        "where the model should generate)")
    if not bool(mask.any()):
        raise UserError("mask= hides every value: nothing is known (drop known= and mask= for "
                        "unconditional samples, or set the mask True where known= holds)")
    known, mask = known.to(device=device, dtype=dtype), mask.to(device)
    if not torch.isfinite(torch.where(mask, known, 0)).all():
        raise UserError("known= holds NaN or inf where the mask is set")
    return Observation(known.contiguous(), mask.contiguous())


def batch_of(name: str, value: Any, shape: torch.Size) -> torch.Tensor:
    """``value``, one sample ``(*event)`` or one per sample ``shape = (B, *event)``, as a
    ``(B, *event)`` tensor (a broadcast view for one sample); one :class:`UserError` naming
    ``name`` and the shapes that fit otherwise."""
    v = torch.as_tensor(value)
    if tuple(v.shape) == tuple(shape[1:]):
        return v.expand(shape)
    if tuple(v.shape) != tuple(shape):
        raise UserError(f"{name} has shape {tuple(v.shape)}; it must be one sample "
                        f"{tuple(shape[1:])} or one per sample {tuple(shape)}")
    return v


def _one_row(value: Any, shape: torch.Size) -> Any:
    """A ``(1, *event)`` observation read as one sample (it broadcasts like one)."""
    v = torch.as_tensor(value)
    return v[0] if v.ndim == len(shape) and v.shape[0] == 1 and v.shape[1:] == shape[1:] else v


def parse_method(method: Any) -> tuple[str, dict[str, Any]]:
    """``"name"`` or ``{"name": ..., option: value}`` -> (name, options over the method's
    defaults); one line for an unknown name or option."""
    if method is None:
        method = DEFAULT_METHOD
    options = dict(method) if isinstance(method, dict) else {"name": method}
    name = options.pop("name", None)
    if name not in METHODS:
        raise UserError(f"unknown imputation method {name!r}; choose one of: "
                        f"{', '.join(METHODS)}")
    unknown = [k for k in options if k not in METHODS[name]]
    if unknown:
        takes = ", ".join(METHODS[name]) or "none"
        raise UserError(f"imputation method {name!r} takes no option {unknown[0]!r}; its "
                        f"options: {takes}")
    return name, {**METHODS[name], **options}


def dps_edit(obs: Observation, schedule: Schedule, scale: float):
    """The ``dps`` change of ``x0_hat`` (module doc), for :func:`steer_x0` with grad."""
    def edit(x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        _, g = twist(x, t, x0, obs, schedule)
        return obs.impose(x0 + scale * tweedie_step(schedule, t, x.ndim) * g)
    return edit


def twist(x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor, obs: Observation,
          schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """``log N(y; m x0_hat(x_t), r_t^2)`` up to a constant, (B,), and its gradient with respect
    to ``x_t`` (B, *event) float64, through the network (``x`` must require grad)."""
    a, s = alpha_sigma(schedule, t, x.ndim)
    snr_inv = (s / a) ** 2
    r2 = snr_inv / (1 + snr_inv)  # PiGDM's r_t^2 for unit-variance data
    resid = torch.where(obs.mask, x0 - obs.known.double(), 0.0)
    log_twist = -(resid * resid / (2 * r2)).flatten(1).sum(1)  # (B,)
    (g,) = torch.autograd.grad(log_twist.sum(), x)
    return log_twist.detach(), g.double()


def renoise(x: torch.Tensor, s: float, t: float, schedule: Schedule,
            generator: torch.Generator | None) -> torch.Tensor:
    """A forward jump ``q(x_t | x_s)`` from the less noisy time ``s`` back to ``t > s``."""
    a_s, sig_s, _ = coefficients(schedule, s)
    a_t, sig_t, _ = coefficients(schedule, t)
    ratio = a_t / a_s
    var = max(sig_t ** 2 - (ratio * sig_s) ** 2, 0.0)
    z = torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return lincomb((ratio, x), (var ** 0.5, z))


def repaint(step: Callable[..., torch.Tensor], denoise: Callable, x: torch.Tensor,
            ts: list[float], *, resample: int, jump: int, schedule: Schedule,
            generator: torch.Generator | None, **options: Any) -> torch.Tensor:
    """RePaint's loop around any sampler ``step(denoise, x, times, generator=, **options)``
    (``denoise`` already replaces the known part): each block of ``jump`` intervals of ``ts``
    is run ``resample`` times, re-noised back to its start in between."""
    for i in range(0, len(ts) - 1, jump):
        block = ts[i:i + jump + 1]
        for r in range(resample):
            x = step(denoise, x, block, generator=generator, **options)
            if r < resample - 1:
                x = renoise(x, block[-1], block[0], schedule, generator)
    return x
