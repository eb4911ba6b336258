"""Steering a trained model at sampling time by changing its denoised estimate.

Every control here is a wrapper ``fn(x_t, t) -> prediction`` around a model of the same
signature, so it works with every sampler and every prediction type, like classifier-free
guidance (:mod:`omnidiff.core.guidance`). It reads the model's ``x0_hat``, changes it, and
returns the prediction that implies the new ``x0_hat`` at the same ``x_t`` (``eps_hat``
follows from ``x_t = alpha x0 + sigma eps``).

A change of the score by ``g`` is a change of ``x0_hat`` by ``(sigma^2 / alpha) g`` (Tweedie's
formula, ``x0_hat = (x_t + sigma^2 grad log p_t(x_t)) / alpha``), so guidance by any
log-density is one line over :func:`steer_x0`:

* :func:`guided_by_x0` -- a differentiable ``fn(x0_hat) -> log-score`` of the denoised
  estimate, differentiated through the network (DPS, Chung et al. 2023; universal guidance,
  Bansal et al. 2023);
* :func:`guided_by_xt` -- a ``fn(x_t, t) -> log-score`` of the noisy sample itself, e.g. the
  log-probability a noise-aware classifier gives a label (classifier guidance, Dhariwal &
  Nichol 2021, sec. 4): no gradient through the network.
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch

from omnidiff._util import append_dims
from omnidiff.core.predictions import target, to_x0_eps
from omnidiff.core.schedules import Schedule, get_schedule

__all__ = ["steer_x0", "score_edit", "guided_by_x0", "guided_by_xt", "tweedie_step",
           "alpha_sigma", "Edit", "LogScore"]

Model = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
# edit(x_t, t, x0_hat) -> new x0_hat, all (B, *event); x_t requires grad when steer_x0(grad=True)
Edit = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
LogScore = Callable[..., torch.Tensor]  # (B, *event) [, t] -> (B,) log-density up to a constant


def alpha_sigma(schedule: Schedule, t: torch.Tensor, ndim: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """alpha(t), sigma(t) as float64 ``(B, 1, ...)`` for a ``(B,)`` time."""
    a, s = schedule.alpha_sigma(t.double())
    return append_dims(a, ndim), append_dims(s, ndim)


def steer_x0(model: Model, schedule: Schedule | str, prediction: str, edit: Edit, *,
             grad: bool = False, inputs: Model | None = None) -> Model:
    """``model`` with its denoised estimate replaced by ``edit(x, t, x0_hat)``.

    The network sees ``x = inputs(x_t, t)`` (default: ``x_t`` itself; e.g. ``x_t`` with a
    known part drawn afresh), and the new ``x0_hat`` is returned as the prediction at the
    sampler's ``x_t``. With ``grad=True`` the network runs with gradients enabled (even under
    ``torch.no_grad``) and ``x`` requires grad, so ``edit`` may differentiate ``x0_hat`` with
    respect to it. The result is detached and in ``x_t``'s dtype; ``cfg_batches`` (NFE
    accounting) is kept.
    """
    schedule = get_schedule(schedule)

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        context = torch.enable_grad() if grad else contextlib.nullcontext()
        with context:
            x = (x_t if inputs is None else inputs(x_t, t)).detach().requires_grad_(grad)
            x0, _ = to_x0_eps(prediction, model(x, t), x, t, schedule)  # (B, *event) f64
            x0 = edit(x, t, x0).detach()
        a, s = alpha_sigma(schedule, t, x_t.ndim)
        eps = (x_t.double() - a * x0) / s
        return target(prediction, x0, eps, t.double(), schedule).to(x_t.dtype)
    fn.cfg_batches = getattr(model, "cfg_batches", 1)
    return fn


def tweedie_step(schedule: Schedule, t: torch.Tensor, ndim: int) -> torch.Tensor:
    """sigma^2 / alpha: how far x0_hat moves per unit of score, ``(B, 1, ...)``."""
    a, s = alpha_sigma(schedule, t, ndim)
    return s * s / a


def score_edit(fn: LogScore, scale: float, schedule: Schedule) -> Edit:
    """The edit of :func:`guided_by_x0` for :func:`steer_x0` with ``grad=True`` (the graph is
    kept, so further edits may differentiate ``x0_hat`` again)."""
    def edit(x: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(fn(x0.to(x.dtype)).sum(), x, retain_graph=True)
        return x0 + scale * tweedie_step(schedule, t, x.ndim) * g.double()  # (B, *event)
    return edit


def guided_by_x0(model: Model, fn: LogScore, scale: float, schedule: Schedule | str,
                 prediction: str) -> Model:
    """Guidance by ``fn(x0_hat) -> (B,)`` log-score, through the network (DPS form):
    ``x0_hat += scale (sigma^2 / alpha) grad_{x_t} fn(x0_hat(x_t))``. Costs a backward pass
    through the network per evaluation."""
    schedule = get_schedule(schedule)
    return steer_x0(model, schedule, prediction, score_edit(fn, scale, schedule), grad=True)


def guided_by_xt(model: Model, fn: LogScore, scale: float, schedule: Schedule | str,
                 prediction: str) -> Model:
    """Guidance by ``fn(x_t, t) -> (B,)`` log-score of the noisy sample (classifier guidance:
    ``fn`` = log p(y | x_t) of a noise-aware classifier): ``x0_hat += scale (sigma^2 / alpha)
    grad_{x_t} fn``. The network runs without gradients; only ``fn`` is differentiated."""
    schedule = get_schedule(schedule)

    def wrapped(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        with torch.enable_grad():
            x = x_t.detach().requires_grad_(True)
            (g,) = torch.autograd.grad(fn(x, t).sum(), x)  # (B, *event)
        shift = scale * tweedie_step(schedule, t, x_t.ndim) * g.double()
        return steer_x0(model, schedule, prediction,
                        lambda _x, _t, x0: x0 + shift)(x_t, t)
    wrapped.cfg_batches = getattr(model, "cfg_batches", 1)
    return wrapped
