"""Training losses: time sampling, per-sample MSE in the prediction's space, weightings and
the classifier-free-guidance dropout mask.

Weightings are defined on the x0-space error and carried into the prediction's space with
:func:`omnidiff.core.predictions.x0_scale`, so one definition serves every prediction type:

* ``uniform`` — plain MSE in the prediction space (weight 1);
* ``min_snr`` — Hang et al. 2023: x0-space weight ``min(SNR, gamma)`` (gamma = 5);
  for eps-prediction this is ``min(SNR, gamma) / SNR``, for v ``min(SNR, gamma) / (SNR + 1)``;
* ``edm``     — Karras et al. 2022: x0-space weight ``(s^2 + sd^2) / (s sd)^2`` with
  ``s = sigma / alpha``, ``sd = sigma_data``.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable

import torch

from omnidiff._util import check_choice
from omnidiff.core.forward import add_noise
from omnidiff.core.predictions import PREDICTIONS, target, to_x0_eps, x0_scale
from omnidiff.core.schedules import Schedule
from omnidiff.errors import ConfigError, UserError

__all__ = ["TIME_SAMPLING", "WEIGHTINGS", "sample_time", "loss_weight", "cfg_drop_mask",
           "diffusion_loss", "check_loss_options", "LOSS_KEYS"]

TIME_SAMPLING = ("uniform", "logit_normal", "edm_lognormal")
WEIGHTINGS = ("uniform", "min_snr", "edm")


def sample_time(batch: int, schedule: Schedule, kind: str = "uniform", *,
                generator: torch.Generator | None = None, device=None,
                p_mean: float = -1.2, p_std: float = 1.2) -> torch.Tensor:
    """Training times t: (batch,) float64 in [t_min, t_max].

    ``uniform``; ``logit_normal`` (Esser et al. 2024: t = sigmoid(N(0, 1)), rescaled to the
    range); ``edm_lognormal`` (Karras et al. 2022: ln(sigma/alpha) ~ N(p_mean, p_std^2)).
    """
    check_choice("time sampling", kind, TIME_SAMPLING)
    lo, hi = schedule.t_min, schedule.t_max
    if kind == "uniform":
        u = torch.rand(batch, generator=generator, dtype=torch.float64, device=device)
        return lo + (hi - lo) * u
    n = torch.randn(batch, generator=generator, dtype=torch.float64, device=device)
    if kind == "logit_normal":
        return lo + (hi - lo) * torch.sigmoid(n)
    t = schedule.t_of_lambda(-(p_mean + p_std * n))
    return t.clamp(lo, hi)


def loss_weight(kind: str, t: torch.Tensor, schedule: Schedule, prediction: str, *,
                gamma: float = 5.0, sigma_data: float = 1.0) -> torch.Tensor:
    """Per-sample weight on the prediction-space MSE, (B,) float64."""
    check_choice("weighting", kind, WEIGHTINGS)
    if kind == "uniform":
        return torch.ones_like(t, dtype=torch.float64)
    snr = torch.exp(2.0 * schedule.log_snr(t))
    if kind == "min_snr":
        w_x0 = snr.clamp_max(gamma)
    else:
        s2 = 1.0 / snr  # (sigma / alpha)^2
        w_x0 = (s2 + sigma_data ** 2) / (s2 * sigma_data ** 2)
    return w_x0 * x0_scale(prediction, t, schedule) ** 2


def cfg_drop_mask(batch: int, p_uncond: float, *, generator: torch.Generator | None = None,
                  device=None) -> torch.Tensor:
    """(batch,) bool: True where the condition is replaced by the domain's null condition."""
    if not 0.0 <= p_uncond <= 1.0:
        raise UserError(f"p_uncond must be in [0, 1], got {p_uncond}")
    return torch.rand(batch, generator=generator, device=device) < p_uncond


def diffusion_loss(model: Callable[..., torch.Tensor], x0: torch.Tensor, *, schedule: Schedule,
                   prediction: str = "eps", time_sampling: str = "uniform",
                   weighting: str = "uniform", cond: Any = None,
                   p_uncond: float = 0.1, sigma_data: float = 1.0, min_snr_gamma: float = 5.0,
                   p_mean: float = -1.2, p_std: float = 1.2,
                   generator: torch.Generator | None = None, noise: torch.Tensor | None = None,
                   aux: Callable[..., torch.Tensor] | None = None, aux_weight: float = 1.0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Denoising loss for a batch x0: (B, *event).

    ``model(x_t, t, cond=..., drop=...)`` returns the prediction. Returns (mean loss,
    per-sample loss (B,)). With ``cond`` given (of any kind: labels, a tensor, a dict; passed
    through untouched), a ``p_uncond`` fraction of the batch is trained unconditionally (the
    ``drop`` mask: the network substitutes its own null condition) for classifier-free guidance.
    ``x_t`` and the target stay in ``x0``'s dtype. ``min_snr_gamma`` is the ``min_snr``
    weighting's cap, ``p_mean`` / ``p_std`` the ``edm_lognormal`` time sampling's parameters.
    A training config's ``loss:`` block is passed here whole (every key is one of these).
    ``noise`` (B, *event), when given, is the noise paired with each x0 (reflow's pairs);
    otherwise it is drawn.

    ``aux(x0_hat, x0, cond) -> (B,)``, when given, is an auxiliary loss on the denoised
    estimate (a domain's, e.g. a multi-resolution STFT distance for waveforms: WaveFM,
    MB-MelGAN): ``x0_hat`` is what the sampler's denoiser returns for this ``x_t`` (the
    prediction converted by :func:`~omnidiff.core.predictions.to_x0_eps`, with gradients).
    It is added with weight ``aux_weight`` to every sample's loss.
    """
    check_choice("prediction", prediction, PREDICTIONS)
    b = x0.shape[0]
    t = sample_time(b, schedule, time_sampling, generator=generator, device=x0.device,
                    p_mean=p_mean, p_std=p_std)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
    x_t = add_noise(x0, t, schedule, noise)
    drop = None
    if cond is not None:
        drop = cfg_drop_mask(b, p_uncond, generator=generator, device=x0.device)
    out = model(x_t, t.to(x0.dtype), cond=cond, drop=drop)
    if out.shape != x0.shape:
        raise ValueError(f"model output has shape {tuple(out.shape)}, expected "
                         f"{tuple(x0.shape)}")
    tgt = target(prediction, x0, noise, t, schedule)
    per_sample = (out.float() - tgt.float()).pow(2).flatten(1).mean(1)  # (B,)
    w = loss_weight(weighting, t, schedule, prediction, gamma=min_snr_gamma,
                    sigma_data=sigma_data).to(per_sample.dtype)
    per_sample = w * per_sample
    if aux is not None and aux_weight:
        x0_hat = to_x0_eps(prediction, out, x_t, t, schedule)[0].to(x0.dtype)  # (B, *event)
        per_sample = per_sample + aux_weight * aux(x0_hat, x0, cond).float()
    return per_sample.mean(), per_sample


# the keys of a config's ``loss:`` block: diffusion_loss's settings (not its data)
LOSS_KEYS = tuple(k for k in inspect.signature(diffusion_loss).parameters
                  if k not in ("model", "x0", "schedule", "cond", "generator", "noise"))
# ``aux`` is a name in a config (the domain's auxiliary loss, ``Domain.aux_loss``), resolved
# to the function by the training module


def check_loss_options(options: dict[str, Any]) -> dict[str, Any]:
    """``options`` (a config's ``loss:`` block) after checking that every key is one of
    :func:`diffusion_loss`'s settings."""
    unknown = sorted(set(options) - set(LOSS_KEYS))
    if unknown:
        raise ConfigError(f"loss.{unknown[0]} is not a loss option; choose from: "
                          f"{', '.join(LOSS_KEYS)}")
    return options
