"""Classifier-free guidance (Ho & Salimans 2022) as a wrapper around a conditional model.

``guided = classifier_free(model, cond, scale)`` is a plain ``guided(x_t, t) -> prediction``
callable for the samplers; ``cond`` is a condition of any kind (labels, a tensor, a dict of
them: :mod:`omnidiff.core.conditions`), never looked into. It evaluates the conditional and
unconditional halves in one batched call (``drop`` marks the unconditional half; the domain's
network substitutes its own null condition) and returns ``u + scale * (c - u)``. Because every
prediction type is an affine function of (x0, eps) at fixed (x_t, t), guiding the prediction equals
guiding eps. Scale 1 is the conditional model, scale 0 the unconditional one.

Guidance rescale (Lin et al. 2023) and a guidance interval (Kynkaanniemi et al. 2024) are
further rules composed around the plain CFG rule: ``classifier_free(model, cond, scale,
rescale=0.7, interval=(0.28, 5.42), schedule=model.schedule, prediction=model.prediction)``.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from omnidiff._util import append_dims
from omnidiff.core.conditions import cat_conds
from omnidiff.core.predictions import target, to_x0_eps
from omnidiff.core.schedules import Schedule, get_schedule
from omnidiff.errors import UserError

__all__ = ["classifier_free", "composed", "conditional", "autoguided", "cfg_rule",
           "rescale_rule", "interval_rule"]


def conditional(model: Callable[..., torch.Tensor], cond: Any,
                drop: torch.Tensor | None = None
                ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Bind a condition without guidance: ``fn(x_t, t) = model(x_t, t, cond=cond, drop=drop)``
    (``drop``: (B,) bool, rows whose condition the network replaces by its null one)."""
    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return model(x_t, t, cond=cond, drop=drop)
    return fn


def classifier_free(model: Callable[..., torch.Tensor], cond: Any,
                    scale: float | None, *, rescale: float = 0.0,
                    interval: tuple[float, float] | None = None,
                    schedule: Schedule | str | None = None, prediction: str | None = None,
                    drop: torch.Tensor | None = None, uncond: Any = None
                    ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``model(x_t, t, cond=, drop=)`` -> guided ``fn(x_t, t)``; ``scale=None``: no guidance.
    ``drop`` (B,) bool marks rows that are unconditional already (their conditional half is
    the null condition too, so they get the unconditional output: a distillation teacher
    under the student's condition dropout). ``uncond``, a condition of ``cond``'s kind and
    batch, takes the null condition's place in the unconditional half (a negative prompt).

    The combination of the conditional output c and the unconditional u is built from
    composable rules (:func:`cfg_rule`, then :func:`rescale_rule` if ``rescale > 0``, then
    :func:`interval_rule` if ``interval``); the last two need ``schedule`` and ``prediction``.

    rescale: phi of Lin et al. 2023 (sec. 3.4): the guided x0_hat is rescaled to the
      per-sample std of the conditional x0_hat and mixed, phi * rescaled + (1 - phi) * guided.
    interval: (sigma_lo, sigma_hi) in EDM noise levels sigma / alpha: guidance only where
      sigma_lo < sigma / alpha <= sigma_hi, the conditional model elsewhere (Kynkaanniemi et
      al. 2024). Both halves are still evaluated in one call (no host sync on t).
    """
    if scale is None:
        return conditional(model, cond, drop)
    if cond is None:
        raise UserError("guidance needs a condition: pass cond=... (labels, a tensor or a "
                         "dict of them), or guidance=None for an unconditional model")
    rule = cfg_rule(float(scale))
    if rescale or interval is not None:
        if schedule is None or prediction is None:
            raise UserError("guidance rescale / interval need schedule= and prediction= "
                             "(the model's), to read x0 and the noise level from x_t")
        schedule = get_schedule(schedule)
        if rescale:
            rule = rescale_rule(rule, float(rescale), schedule, prediction)
        if interval is not None:
            rule = interval_rule(rule, interval, schedule)

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        b = x_t.shape[0]
        first = torch.zeros(b, dtype=torch.bool, device=x_t.device) if drop is None else drop
        second = torch.full((b,), uncond is None, dtype=torch.bool, device=x_t.device)
        c, u = _halves(model, x_t, t, [cond, cond if uncond is None else uncond],
                       [first, second])
        return rule(c, u, x_t, t)
    fn.cfg_batches = 2  # for NFE accounting: one call evaluates the network on 2 halves
    return fn


def _halves(model: Callable[..., torch.Tensor], x_t: torch.Tensor, t: torch.Tensor,
            conds: Sequence[Any], drops: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """The network under each condition (with its (B,) drop mask) in one batched call: one
    ``(B, *event)`` output per condition."""
    k = len(conds)
    out = model(torch.cat([x_t] * k), torch.cat([t] * k), cond=cat_conds(conds),
                drop=torch.cat(list(drops)))  # (k B, *event)
    return out.chunk(k)


def composed(model: Callable[..., torch.Tensor], conds: Sequence[Any],
             weights: Sequence[float], *, uncond: Any = None
             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Guidance by several conditions at once (composable diffusion, Liu et al. 2022):
    ``fn(x_t, t) = u + sum_i weights[i] (c_i - u)``, ``c_i`` the output under ``conds[i]`` and
    ``u`` the null condition's, in one batched call of ``len(conds) + 1`` halves.

    ``conds`` are conditions of one kind and batch (e.g. a prompt and the part of it that
    names one attribute, encoded to the same length): each term pushes the sample towards its
    own condition, so one attribute is not drowned by another that carries more of the
    output. One condition of weight ``w`` is :func:`classifier_free` at scale ``w``.
    ``uncond`` (a condition of the same kind and batch) takes the null condition's place in
    ``u``, as in :func:`classifier_free` (a negative prompt).
    """
    if not conds or len(conds) != len(weights):
        raise UserError(f"composed guidance needs one weight per condition, got "
                        f"{len(conds)} conditions and {len(weights)} weights")
    if any(c is None for c in conds):
        raise UserError("composed guidance needs every condition: pass cond=... for each")
    k, w = len(conds), [float(v) for v in weights]

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        keep, null = (torch.full((x_t.shape[0],), v, dtype=torch.bool, device=x_t.device)
                      for v in (False, uncond is None))
        last = conds[0] if uncond is None else uncond
        *cs, u = _halves(model, x_t, t, [*conds, last], [keep] * k + [null])
        return u + sum(wi * (ci - u) for wi, ci in zip(w, cs))
    fn.cfg_batches = k + 1  # for NFE accounting
    return fn


def autoguided(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               weak: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], scale: float
               ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """Autoguidance (Karras et al. 2024): ``weak + scale (model - weak)``, the guiding branch a
    weaker version of the same model (an early checkpoint, a smaller run) rather than an
    unconditional one, so it works for unconditional models too. Both are ``fn(x_t, t)``
    callables with the same schedule and prediction type (each already bound to its
    condition or guided); scale 1 is ``model`` itself."""
    w = float(scale)

    def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        u = weak(x_t, t)
        return u + w * (model(x_t, t) - u)
    fn.cfg_batches = getattr(model, "cfg_batches", 1) + getattr(weak, "cfg_batches", 1)
    return fn


Rule = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def cfg_rule(scale: float) -> Rule:
    """(c, u, x_t, t) -> u + scale (c - u) (Ho & Salimans 2022)."""
    def rule(c, u, x_t, t):
        return u + scale * (c - u)
    return rule


def rescale_rule(inner: Rule, phi: float, schedule: Schedule, prediction: str) -> Rule:
    """Guidance rescale (Lin et al. 2023, eq. 15-16) on x0_hat, per sample over the event dims:
    x0 <- phi * x0_cfg * std(x0_c) / std(x0_cfg) + (1 - phi) * x0_cfg, x_t kept fixed."""
    def rule(c, u, x_t, t):
        g = inner(c, u, x_t, t)
        x0_g, _ = to_x0_eps(prediction, g, x_t, t, schedule)
        x0_c, _ = to_x0_eps(prediction, c, x_t, t, schedule)
        std_c = x0_c.flatten(1).std(1)
        std_g = x0_g.flatten(1).std(1).clamp_min(1e-12)
        factor = append_dims(phi * std_c / std_g + (1.0 - phi), x0_g.ndim)
        x0 = factor * x0_g
        a, s = schedule.alpha_sigma(t.double())
        eps = (x_t.double() - append_dims(a, x_t.ndim) * x0) / append_dims(s, x_t.ndim)
        return target(prediction, x0, eps, t.double(), schedule).to(g.dtype)
    return rule


def interval_rule(inner: Rule, interval: tuple[float, float], schedule: Schedule) -> Rule:
    """Guidance only for sigma / alpha in (lo, hi] (Kynkaanniemi et al. 2024); conditional
    output elsewhere. Per sample, by a mask: no host sync."""
    lo, hi = (float(v) for v in interval)
    if not 0.0 <= lo < hi:
        raise UserError(f"guidance interval must be (sigma_lo, sigma_hi) with 0 <= lo < hi, "
                         f"got {interval}")

    def rule(c, u, x_t, t):
        g = inner(c, u, x_t, t)
        sig = torch.exp(-schedule.log_snr(t.double()))  # (B,) sigma / alpha
        inside = append_dims((sig > lo) & (sig <= hi), g.ndim)
        return torch.where(inside, g, c)
    return rule
