"""DiffusionModel: a domain's network bound to a schedule and a prediction type."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnidiff._util import append_dims, check_choice
from omnidiff.core.conditions import map_cond
from omnidiff.core.predictions import PREDICTIONS, to_x0_eps
from omnidiff.core.schedules import Schedule, get_schedule

__all__ = ["DiffusionModel"]


class DiffusionModel(nn.Module):
    """Wraps ``net(x_in, t, cond, drop)`` so that it sees unit-variance inputs.

    Precision: the network runs in its own dtype (float32, float64, bfloat16, float16): the
    input and floating conditions are cast to it, ``t`` is passed in float32 (float64 for a
    float64 network) and the output comes back in ``x_t``'s dtype, so a sampler's state keeps
    its precision whatever the network's.

    A network may declare a data-dependent Gaussian prior (PriorGrad, Lee et al. 2022): a
    method ``prior_scale(cond) -> (B, *event)`` (or None for a condition without one), the
    per-element standard deviation of the data given its condition. The model then diffuses
    ``z = x / scale`` (:meth:`to_prior`), whose noise is still N(0, I), so every sampler,
    grid and guidance works unchanged; samples come back as ``x = scale * z``
    (:meth:`from_prior`). The scale is read from the condition as given, also where guidance
    drops it. A network may also declare ``finish(x, cond) -> x``, a last step on the samples in
    data space (:meth:`finish`; generation applies it, except to imputations).

    ``forward(x_t, t, cond=None, drop=None)`` returns the network's prediction (of type
    ``prediction``) for ``x_t: (B, *event)`` at times ``t: (B,)``. The input is scaled by
    ``c_in = 1 / sqrt(alpha^2 sigma_data^2 + sigma^2)`` (Karras et al. 2022), which is 1 for a VP
    schedule on unit-variance data and keeps VE inputs (sigma up to 80) well conditioned.
    """

    def __init__(self, net: nn.Module, schedule: Schedule | str | dict, prediction: str = "eps",
                 sigma_data: float = 1.0):
        super().__init__()
        self.net = net
        if isinstance(schedule, dict):
            schedule = get_schedule(**schedule)
        self.schedule = get_schedule(schedule)
        self.prediction = check_choice("prediction", prediction, PREDICTIONS)
        self.sigma_data = float(sigma_data)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        a, s = self.schedule.alpha_sigma(t.detach().double())
        c_in = torch.rsqrt(a * a * self.sigma_data ** 2 + s * s)
        dtype = self.net_dtype or x_t.dtype
        x_in = (x_t * append_dims(c_in, x_t.ndim).to(x_t.dtype)).to(dtype)  # (B, *event)
        t_in = t.to(torch.float64 if dtype == torch.float64 else torch.float32)  # (B,)
        cond = map_cond(lambda v: v.to(dtype) if v.is_floating_point() else v, cond)
        out = self.net(x_in, t_in, cond, drop)  # (B, *event) in the network's dtype
        if out.shape != x_t.shape:
            raise ValueError(f"network returned shape {tuple(out.shape)} for input "
                             f"{tuple(x_t.shape)}; it must return the shape it is given")
        return out.to(x_t.dtype)

    def encode_cond(self, cond: Any) -> Any:
        """``cond`` with what stays fixed over a sampling run computed once: the network's
        ``encode_cond`` (a prompt's text encoding), where it has one; else ``cond`` itself."""
        fn = getattr(self.net, "encode_cond", None)
        if fn is None or cond is None:
            return cond
        dtype = self.net_dtype
        return fn(map_cond(lambda v: v.to(dtype) if v.is_floating_point() and dtype else v,
                           cond))

    def prior_scale(self, cond: Any) -> torch.Tensor | None:
        """The prior's standard deviation ``(B, *event)`` (float32) for ``cond``, or None: a
        network without ``prior_scale``, or no condition."""
        fn = getattr(self.net, "prior_scale", None)
        scale = None if fn is None or cond is None else fn(cond)
        return None if scale is None else scale.float()

    def to_prior(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        """Data ``x: (B, *event)`` -> the diffused variable ``z = x / scale`` (``x`` itself
        without a prior)."""
        scale = self.prior_scale(cond)
        return x if scale is None else (x / scale.to(x.device)).to(x.dtype)

    def from_prior(self, z: torch.Tensor, cond: Any) -> torch.Tensor:
        """The diffused variable ``z: (B, *event)`` -> data ``scale * z`` (inverse of
        :meth:`to_prior`)."""
        scale = self.prior_scale(cond)
        return z if scale is None else (z * scale.to(z.device)).to(z.dtype)

    def finish(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        """Samples ``x: (B, *event)`` in data space after the network's optional last step
        ``finish(x, cond)`` (a vocoder's mel-consistency projection); ``x`` itself without
        one or without a condition."""
        fn = getattr(self.net, "finish", None)
        return x if fn is None or cond is None else fn(x, cond).to(x.dtype)

    @property
    def net_dtype(self) -> torch.dtype | None:
        """The dtype the network computes in: its first floating-point parameter's (None for a
        network without any, which then gets the input's dtype)."""
        return next((p.dtype for p in self.net.parameters() if p.is_floating_point()), None)

    @torch.no_grad()
    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """x0_hat: (B, *event)."""
        out = self(x_t, t, cond, drop)
        return to_x0_eps(self.prediction, out, x_t, t, self.schedule)[0].to(x_t.dtype)
