"""Property conditions of the points domain: a per-sample shift and scale.

With ``data.affine=true`` every sample is moved and resized after it is drawn, and the model is
conditioned on the vector ``(shift_x, shift_y, log_scale)`` — a tensor condition of shape
``(3,)``, the simplest "vector of properties" a user conditions on:

* a density point ``p`` becomes ``shift + scale * p``; the conditional law is the density
  shifted and scaled, so its mean and spread given the condition are known exactly;
* a cloud is first normalised (centroid 0, RMS radius 1), then moved; its condition is then a
  property of the data itself — centroid and log RMS radius — so :func:`cloud_properties`
  computes it from any cloud (``Pipeline.condition``) and metrics can check it per sample.
"""

from __future__ import annotations

import math

import torch

__all__ = ["AFFINE_DIM", "draw_affine", "apply_affine", "undo_affine", "cloud_properties",
           "split_cond"]

AFFINE_DIM = 3  # (shift_x, shift_y, log_scale)

Tensor = torch.Tensor


def draw_affine(n: int, generator: torch.Generator, shift: float,
                scale: tuple[float, float]) -> Tensor:
    """``(n, 3)`` float32: shifts uniform in ``[-shift, shift]^2``, log-uniform scales."""
    lo, hi = math.log(scale[0]), math.log(scale[1])
    u = torch.rand(n, 3, generator=generator, dtype=torch.float64)  # (n, 3)
    params = torch.cat([shift * (2 * u[:, :2] - 1), lo + (hi - lo) * u[:, 2:]], dim=1)
    return params.float()


def _split(params: Tensor, x: Tensor) -> tuple[Tensor, Tensor]:
    """shift ``(n, 1.., 2)`` and scale ``(n, 1.., 1)`` broadcastable against ``x``."""
    view = (params.shape[0],) + (1,) * (x.dim() - 2)
    return params[:, :2].reshape(*view, 2), params[:, 2].exp().reshape(*view, 1)


def _centroid_radius(x: Tensor) -> tuple[Tensor, Tensor]:
    """Clouds ``(n, N, 2)`` -> centroids ``(n, 2)`` and RMS radii ``(n,)``, in x's dtype."""
    centroid = x.mean(1)  # (n, 2)
    radius = (x - centroid[:, None]).pow(2).sum(-1).mean(1).sqrt().clamp_min(1e-8)  # (n,)
    return centroid, radius


def _normalise_clouds(x: Tensor) -> Tensor:
    """Clouds ``(n, N, 2)`` with centroid 0 and RMS radius 1."""
    centroid, radius = _centroid_radius(x)
    return (x - centroid[:, None]) / radius[:, None, None]


def apply_affine(x: Tensor, params: Tensor) -> Tensor:
    """Points ``(n, 2)`` -> ``shift + scale * x``; clouds ``(n, N, 2)`` are normalised first."""
    if x.dim() == 3:
        x = _normalise_clouds(x)
    shift, scale = _split(params.to(x.dtype), x)
    return shift + scale * x


def undo_affine(x: Tensor, params: Tensor) -> Tensor:
    """The inverse map ``(x - shift) / scale`` (for metrics in the normalised frame)."""
    shift, scale = _split(params.to(x.dtype), x)
    return (x - shift) / scale


def cloud_properties(x: Tensor) -> Tensor:
    """Clouds ``(n, N, 2)`` -> ``(n, 3)``: centroid and log RMS radius (the affine condition
    that :func:`apply_affine` gave a normalised cloud)."""
    centroid, radius = _centroid_radius(x)
    return torch.cat([centroid, radius.log()[:, None]], dim=1).float()  # (n, 3)


def split_cond(cond: object) -> tuple[Tensor | None, Tensor | None]:
    """A points condition -> ``(labels (n,) or None, affine (n, 3) or None)``."""
    if cond is None:
        return None, None
    if isinstance(cond, dict):
        return cond.get("label"), cond.get("affine")
    if not isinstance(cond, Tensor):
        raise ValueError(f"points conditions are labels, affine vectors or a dict of both; got "
                         f"{type(cond).__name__}")
    if cond.is_floating_point():
        if cond.dim() != 2 or cond.shape[1] != AFFINE_DIM:
            raise ValueError(f"an affine condition must be (n, {AFFINE_DIM}); got "
                             f"{tuple(cond.shape)}")
        return None, cond
    return cond, None
