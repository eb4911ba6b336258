"""Point clouds: one sample is a set of ``N`` points, event shape ``(N, 2)``.

* ``shapes``: outlines of simple shapes (see :data:`SHAPES`; the class label is the index into
  it), points spread uniformly along the outline by arc length, with a random rotation, scale
  and shift per cloud.
* ``digits``: scikit-learn's bundled 8x8 handwritten digits (``load_digits``, no download) turned
  into clouds: ``N`` pixels drawn with probability proportional to their intensity, each point
  jittered uniformly inside its pixel, then centred and scaled with one fixed transform for the
  whole dataset (so size and position differences between digits are kept). Label = the digit.
* a user's own ``(M, N, 2)`` array (``.npy``, or ``.npz`` with ``x`` and optional labels ``y``).

Every sampler takes an explicit :class:`torch.Generator`.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from .densities import _check_labels, _read_array, check_finite

__all__ = ["CLOUDS", "SHAPES", "sample_shapes", "digit_images", "sample_digit_clouds",
           "load_cloud_file"]

Tensor = torch.Tensor

#: Outline classes of the ``shapes`` dataset (class label = index).
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross", "heart")

#: The valid cloud dataset names.
CLOUDS: tuple[str, ...] = ("shapes", "digits")


def _polygon(k: int, phase: float = 0.0) -> np.ndarray:
    a = phase + 2 * np.pi * np.arange(k) / k
    return np.stack([np.cos(a), np.sin(a)], -1)


def _star() -> np.ndarray:
    a = np.pi / 2 + np.pi * np.arange(10) / 5
    r = np.where(np.arange(10) % 2 == 0, 1.0, 0.4)
    return np.stack([r * np.cos(a), r * np.sin(a)], -1)


def _cross() -> np.ndarray:
    w = 1 / 3
    return np.array([[w, 1], [-w, 1], [-w, w], [-1, w], [-1, -w], [-w, -w], [-w, -1], [w, -1],
                     [w, -w], [1, -w], [1, w], [w, w]], dtype=np.float64)


def _heart() -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, 256, endpoint=False)
    x = 16 * np.sin(t) ** 3
    y = 13 * np.cos(t) - 5 * np.cos(2 * t) - 2 * np.cos(3 * t) - np.cos(4 * t)
    return np.stack([x, y], -1) / 16


@lru_cache(maxsize=None)
def _outline(name: str) -> tuple[Tensor, Tensor]:
    """Closed polyline of a shape: segment starts (S, 2), segment vectors (S, 2).

    Normalised so that points spread uniformly along it have zero mean and RMS radius
    sqrt(2), i.e. unit variance per coordinate.
    """
    verts = {"circle": lambda: _polygon(256), "square": lambda: _polygon(4, np.pi / 4),
             "triangle": lambda: _polygon(3, np.pi / 2), "star": _star,
             "hexagon": lambda: _polygon(6), "cross": _cross, "heart": _heart}[name]()
    start = verts
    vec = np.roll(verts, -1, axis=0) - verts
    length = np.linalg.norm(vec, axis=1)
    w = length / length.sum()
    # arc-length moments of the outline: mean and E|p|^2 of a uniform point on each segment
    mean = (w[:, None] * (start + vec / 2)).sum(0)
    s0, v = start - mean, vec
    second = (w * ((s0 ** 2).sum(1) + (s0 * v).sum(1) + (v ** 2).sum(1) / 3)).sum()
    scale = math.sqrt(2.0 / second)
    return (torch.as_tensor((start - mean) * scale), torch.as_tensor(vec * scale))


def sample_shapes(n: int, num_points: int, generator: torch.Generator, *,
                  noise: float = 0.02, scale_range: tuple[float, float] = (0.7, 1.2),
                  shift: float = 0.3) -> tuple[Tensor, Tensor]:
    """``n`` shape-outline clouds: ``x: (n, num_points, 2) float32``, labels ``(n,) long``."""
    g = generator
    y = torch.randint(0, len(SHAPES), (n,), generator=g)
    x = torch.empty(n, num_points, 2, dtype=torch.float64)
    for k, name in enumerate(SHAPES):
        idx = (y == k).nonzero().flatten()
        if len(idx) == 0:
            continue
        start, vec = _outline(name)  # (S, 2), (S, 2)
        weights = vec.norm(dim=1).expand(len(idx), -1)  # (m, S)
        seg = torch.multinomial(weights, num_points, replacement=True, generator=g)  # (m, N)
        u = torch.rand(len(idx), num_points, 1, generator=g, dtype=torch.float64)
        x[idx] = start[seg] + u * vec[seg]  # (m, N, 2)
    ang = 2 * math.pi * torch.rand(n, generator=g, dtype=torch.float64)
    c, s = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n, 2, 2)
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(n, 1, 1, generator=g, dtype=torch.float64)
    offset = shift * (2 * torch.rand(n, 1, 2, generator=g, dtype=torch.float64) - 1)
    x = scale * torch.einsum("nij,npj->npi", rot, x) + offset
    x = x + noise * torch.randn(x.shape, generator=g, dtype=torch.float64)
    return x.float(), y


@lru_cache(maxsize=1)
def digit_images() -> tuple[Tensor, Tensor]:
    """scikit-learn's bundled digits: intensities ``(1797, 8, 8)`` float64, labels ``(1797,)``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (torch.as_tensor(d.images, dtype=torch.float64),
            torch.as_tensor(d.target, dtype=torch.long))


@lru_cache(maxsize=1)
def _digit_transform() -> tuple[Tensor, float]:
    """Mean (2,) and one scalar std of the ink over all digits (plus in-pixel jitter)."""
    img, _ = digit_images()
    w = img / img.sum(dim=(1, 2), keepdim=True)  # each image weighs the same
    w = w.sum(0) / len(img)  # (8, 8)
    rows, cols = torch.meshgrid(torch.arange(8.0, dtype=torch.float64) + 0.5,
                                torch.arange(8.0, dtype=torch.float64) + 0.5, indexing="ij")
    pts = torch.stack([cols, -rows], -1)  # (8, 8, 2): x right, y up
    mean = (w[..., None] * pts).sum((0, 1))
    var = (w[..., None] * (pts - mean) ** 2).sum((0, 1)) + 1 / 12  # + uniform jitter
    return mean, float(var.mean().sqrt())


def sample_digit_clouds(images: Tensor, num_points: int, generator: torch.Generator
                        ) -> Tensor:
    """One cloud per image: ``images: (n, 8, 8)`` intensities -> ``(n, num_points, 2)``."""
    n = len(images)
    probs = images.reshape(n, 64).double()  # (n, 64)
    pix = torch.multinomial(probs, num_points, replacement=True, generator=generator)  # (n, N)
    jitter = torch.rand(n, num_points, 2, generator=generator, dtype=torch.float64)
    col = (pix % 8).double() + jitter[..., 0]
    row = (pix // 8).double() + jitter[..., 1]
    mean, std = _digit_transform()
    return ((torch.stack([col, -row], -1) - mean) / std).float()


def load_cloud_file(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """A user's own clouds ``(M, N, 2)`` from ``.npy`` (or ``.npz`` with ``x``, optional ``y``).

    Returns ``x: (M, N, 2) float32`` and labels ``(M,) long`` or None.
    """
    p, x, y = _read_array(path, "(M, N, 2)")
    if x.ndim != 3 or x.shape[2] != 2 or x.shape[0] < 2 or x.shape[1] < 1:
        raise ValueError(f"point-cloud file {p} has shape {tuple(x.shape)}; expected (M, N, 2) "
                         "with M >= 2: M clouds of N points with two coordinates each")
    check_finite(x, p)
    y = _check_labels(y, len(x), p)
    return torch.as_tensor(x, dtype=torch.float32), (None if y is None
                                                      else torch.as_tensor(y, dtype=torch.long))
