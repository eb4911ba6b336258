"""What a network predicts, and conversion between the four parameterisations.

With ``x_t = alpha x0 + sigma eps`` a network may predict

* ``eps``  — the noise eps (Ho et al. 2020);
* ``x0``   — the clean sample;
* ``v``    — ``alpha eps - sigma x0`` (Salimans & Ho 2022);
* ``flow`` — the velocity ``dx_t/dt = alpha'(t) x0 + sigma'(t) eps`` (Lipman et al. 2023,
  Liu et al. 2023; for the ``flow`` schedule it is ``eps - x0``).

Each is an invertible linear map of (x0, eps) given (x_t, t); this is the only module that
branches on the prediction type. Samplers only ever see ``(x0_hat, eps_hat)``.
"""

from __future__ import annotations

import torch

from omnidiff._util import append_dims, check_choice
from omnidiff.core.schedules import Schedule

__all__ = ["PREDICTIONS", "target", "to_x0_eps", "invert", "prediction_coefficients", "check_output",
           "x0_scale"]

PREDICTIONS = ("eps", "x0", "v", "flow")


def _coeffs(schedule: Schedule, t: torch.Tensor, ndim: int, need_derivs: bool):
    a, s = schedule.alpha_sigma(t)
    out = [append_dims(a, ndim), append_dims(s, ndim)]
    if need_derivs:
        da, ds = schedule.derivatives(t)
        out += [append_dims(da, ndim), append_dims(ds, ndim)]
    return out


def target(kind: str, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor,
           schedule: Schedule) -> torch.Tensor:
    """The training target for prediction ``kind``, in x0's dtype. x0, eps: (B, *event);
    t: (B,). The coefficients are float64 per sample; the batch is not upcast."""
    check_choice("prediction", kind, PREDICTIONS)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    c = [v.to(x0.dtype) for v in _coeffs(schedule, t, x0.ndim, kind == "flow")]
    if kind == "v":
        a, s = c
        return a * eps - s * x0
    _, _, da, ds = c
    return da * x0 + ds * eps


def to_x0_eps(kind: str, output: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor,
              schedule: Schedule) -> tuple[torch.Tensor, torch.Tensor]:
    """Invert a prediction: (x0_hat, eps_hat), float64, each (B, *event)."""
    check_choice("prediction", kind, PREDICTIONS)
    c = _coeffs(schedule, t, x_t.ndim, kind == "flow")
    return invert(kind, output, x_t, *c)


def prediction_coefficients(kind: str, a, s, da=None, ds=None) -> tuple:
    """(c1, c2, c3, c4) with ``x0_hat = c1 x_t + c2 output`` and ``eps_hat = c3 x_t + c4 output``.

    Every prediction is an invertible linear map of (x0, eps) given (x_t, t), so its inverse is
    too. ``a, s`` (and for ``flow`` the derivatives ``da, ds``) are python floats or tensors
    broadcastable to ``x_t``; with floats a sampler turns any combination ``p x0 + q eps`` into
    two elementwise kernels (:meth:`~omnidiff.samplers.Denoiser.combine`).
    """
    if kind == "eps":
        return 1.0 / a, -s / a, 0.0, 1.0
    if kind == "x0":
        return 0.0, 1.0, 1.0 / s, -a / s
    if kind == "v":
        norm = a * a + s * s
        return a / norm, -s / norm, s / norm, a / norm
    if kind == "flow":
        det = a * ds - s * da
        return ds / det, -s / det, -da / det, a / det
    check_choice("prediction", kind, PREDICTIONS)
    raise AssertionError  # unreachable


def check_output(output: torch.Tensor, x_t: torch.Tensor) -> None:
    """A model must return the shape it is given."""
    if output.shape != x_t.shape:
        raise ValueError(f"model output has shape {tuple(output.shape)} but x_t has "
                         f"{tuple(x_t.shape)}; a denoiser must return the shape it is given")


def invert(kind: str, output: torch.Tensor, x_t: torch.Tensor, a, s, da=None, ds=None
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`to_x0_eps` with the coefficients given (floats or broadcastable tensors); float64."""
    check_output(output, x_t)
    out, x = output.double(), x_t.double()
    c1, c2, c3, c4 = prediction_coefficients(kind, a, s, da, ds)
    return c1 * x + c2 * out, c3 * x + c4 * out


def x0_scale(kind: str, t: torch.Tensor, schedule: Schedule) -> torch.Tensor:
    """|d x0_hat / d output|: an error e in the prediction is an error x0_scale * e in x0. (B,)"""
    check_choice("prediction", kind, PREDICTIONS)
    a, s = schedule.alpha_sigma(t)
    if kind == "eps":
        return s / a
    if kind == "x0":
        return torch.ones_like(a)
    if kind == "v":
        return s / (a * a + s * s)
    da, ds = schedule.derivatives(t)
    return (s / (a * ds - s * da)).abs()
