"""Toy densities: one sample is one point, event shape ``(2,)`` (``mixture``: ``(dim,)``).

Every density is a function ``fn(n, generator) -> (x: (n, 2) float32, y: (n,) long)`` drawing
fresh samples from an explicit :class:`torch.Generator`; ``y`` is the mixture component (mode)
each point came from, usable as a class label (``-1`` everywhere for densities without modes).
Samples are standardised with fixed per-density constants (mean, one scalar std so that the
aspect ratio is kept) measured once from a large sample with a fixed seed, so every density has
roughly zero mean and unit variance per coordinate.

``mixture`` is the exception: a Gaussian mixture with eight narrow, anisotropic modes in any
number of dimensions (:func:`mixture_law`, the core's
:func:`~omnidiff.core.gaussian_mixture.random_mixture` with a fixed seed), already about unit
scale and left as it is, so its exact law (:func:`mixture_law`) is the data's: the floor of a
metric and the true mode weights are known exactly.

The shapes follow the toy sets of FFJORD (Grathwohl et al. 2019) and scikit-learn's
``make_moons`` / ``make_circles`` / ``make_swiss_roll``.
"""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from omnidiff.core.gaussian_mixture import GaussianMixture, random_mixture

__all__ = ["DENSITIES", "NUM_MODES", "sample_density", "mixture_law", "load_points_file",
           "check_finite"]

Tensor = torch.Tensor


def _rand(n: int, g: torch.Generator) -> Tensor:
    return torch.rand(n, generator=g, dtype=torch.float64)


def _randn(*shape: int, g: torch.Generator) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = torch.randint(0, 2, (n,), generator=g)
    u = math.pi * _rand(n, g)
    outer = torch.stack([torch.cos(u), torch.sin(u)], -1)  # (n, 2)
    inner = torch.stack([1 - torch.cos(u), 0.5 - torch.sin(u)], -1)  # (n, 2)
    x = torch.where(y[:, None] == 0, outer, inner) + 0.05 * _randn(n, 2, g=g)
    return x, y


def _eight_gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = torch.randint(0, 8, (n,), generator=g)
    ang = y.double() * (2 * math.pi / 8)
    centres = 2.0 * torch.stack([torch.cos(ang), torch.sin(ang)], -1)  # (n, 2)
    return centres + 0.2 * _randn(n, 2, g=g), y


def _swiss_roll(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    s = 1.5 * math.pi * (1 + 2 * _rand(n, g))
    x = torch.stack([s * torch.cos(s), s * torch.sin(s)], -1) + 0.4 * _randn(n, 2, g=g)
    return x, torch.full((n,), -1, dtype=torch.long)


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    # 4x4 board on [-2, 2]^2, the 8 "black" squares (column + row even) carry the mass.
    y = torch.randint(0, 8, (n,), generator=g)
    col = y % 4
    row = 2 * (y // 4) + (col % 2)  # rows with the same parity as the column
    x = torch.stack([col.double() + _rand(n, g), row.double() + _rand(n, g)], -1) - 2.0
    return x, y


def _rings(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    radii = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    y = torch.multinomial(radii, n, replacement=True, generator=g)  # mass ∝ circumference
    ang = 2 * math.pi * _rand(n, g)
    r = radii[y][:, None]
    return r * torch.stack([torch.cos(ang), torch.sin(ang)], -1) + 0.08 * _randn(n, 2, g=g), y


def _pinwheel(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    arms, radial_std, tangential_std, rate = 5, 0.3, 0.1, 0.25
    y = torch.randint(0, arms, (n,), generator=g)
    f = _randn(n, 2, g=g) * torch.tensor([radial_std, tangential_std], dtype=torch.float64)
    f[:, 0] += 1.0
    ang = y.double() * (2 * math.pi / arms) + rate * torch.exp(f[:, 0])
    c, s = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)  # (n, 2, 2)
    return torch.einsum("nij,nj->ni", rot, f), y


def _circles(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = torch.randint(0, 2, (n,), generator=g)
    ang = 2 * math.pi * _rand(n, g)
    r = torch.where(y == 0, 1.0, 0.5).double()[:, None]
    return r * torch.stack([torch.cos(ang), torch.sin(ang)], -1) + 0.05 * _randn(n, 2, g=g), y


_RAW: dict[str, Callable[[int, torch.Generator], tuple[Tensor, Tensor]]] = {
    "moons": _moons,
    "eight_gaussians": _eight_gaussians,
    "swiss_roll": _swiss_roll,
    "checkerboard": _checkerboard,
    "rings": _rings,
    "pinwheel": _pinwheel,
    "circles": _circles,
}

#: Number of modes (usable as classes) of each density; 0 when it has none.
NUM_MODES: dict[str, int] = {"moons": 2, "eight_gaussians": 8, "swiss_roll": 0,
                             "checkerboard": 8, "rings": 4, "pinwheel": 5, "circles": 2,
                             "mixture": 8}

#: The valid density names.
DENSITIES: tuple[str, ...] = (*_RAW, "mixture")


@lru_cache(maxsize=None)
def mixture_law(dim: int = 2) -> GaussianMixture:
    """The ``mixture`` density's exact law in ``dim`` dimensions: eight modes with means ~ N(0,
    I), random orientations and standard deviations between 0.02 and 0.1 (``random_mixture``,
    narrow, seed 0). Sharp enough that blurred modes or wrong weights show far above the
    sampling floor, where two-moons' 0.05 noise hides them."""
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ValueError(f"data.dim must be a positive integer; got {dim!r}")
    return random_mixture(dim, components=8, width="narrow", seed=0)


@lru_cache(maxsize=None)
def _stats(name: str) -> tuple[Tensor, float]:
    """Mean (2,) and one scalar std of a density, from 200k samples with a fixed seed."""
    x, _ = _RAW[name](200_000, torch.Generator().manual_seed(12345))
    mean = x.mean(0)
    return mean, float((x - mean).pow(2).mean().sqrt())


def sample_density(name: str, n: int, generator: torch.Generator | None = None, *,
                   dim: int = 2, stratified: bool = False) -> tuple[Tensor, Tensor]:
    """Draw ``n`` standardised points: ``x: (n, 2) float32`` (``mixture``: ``(n, dim)``, its
    law's own scale), modes ``y: (n,) long``. ``stratified`` (``mixture`` only): each mode
    gets exactly its share of the points, so a reference set's weights carry no sampling
    noise (with narrow modes, the 0.1 % weight noise of 65 536 points moves sliced W2 by
    about 0.04)."""
    if name not in DENSITIES:
        raise ValueError(f"unknown density {name!r}; valid densities: {', '.join(DENSITIES)}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    if name == "mixture":
        x, y = mixture_law(int(dim)).sample(int(n), g, stratified=stratified)
        return x.float(), y.long()
    x, y = _RAW[name](int(n), g)
    mean, std = _stats(name)
    return ((x - mean) / std).float(), y.long()


def check_finite(x: np.ndarray, path: Path) -> None:
    """Every value finite, also once cast to the float32 the data is trained in."""
    bad = ~np.isfinite(x)
    if bad.any():
        rows = int(bad.reshape(len(x), -1).any(1).sum())
        raise ValueError(f"{path} contains NaN or infinite values in {rows} of {len(x)} "
                         "samples; drop or fill those rows and try again")
    with np.errstate(over="ignore"):
        overflow = ~np.isfinite(x.astype(np.float32))
    if overflow.any():
        rows = int(overflow.reshape(len(x), -1).any(1).sum())
        raise ValueError(f"{path} is out of range: {rows} of {len(x)} samples overflow float32 "
                         f"(|x| up to {float(np.abs(x).max()):.3g}); rescale the data to about "
                         "unit scale")


def _read_array(path: str | Path, expected: str) -> tuple[Path, np.ndarray, np.ndarray | None]:
    """Read ``.npy`` / ``.npz`` (keys ``x`` and optional ``y``) / ``.csv``; labels or None."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise FileNotFoundError(f"data file {str(p)!r} does not exist; pass data.path= an "
                                f"existing .npy/.npz/.csv file of shape {expected}")
    suffix = p.suffix.lower()
    y = None
    try:
        if suffix == ".npy":
            x = np.load(p, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(p, allow_pickle=False) as z:
                if "x" not in z:
                    raise ValueError(f"{p} has arrays {sorted(z.files)}; an .npz needs an "
                                     f"array 'x' of shape {expected} (and optionally 'y' labels)")
                x = z["x"]
                y = z["y"] if "y" in z else None
        elif suffix == ".csv":
            try:
                x = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2)
            except ValueError:  # a header line
                x = np.loadtxt(p, delimiter=",", dtype=np.float64, ndmin=2, skiprows=1)
        else:
            raise ValueError(f"{p} has unsupported suffix {suffix!r}; use .npy, .npz or .csv")
    except (OSError, ValueError, EOFError) as exc:
        if isinstance(exc, ValueError) and str(exc).startswith(str(p)):
            raise
        raise ValueError(f"could not read {p} ({type(exc).__name__}: {exc}); expected a "
                         f"numeric array of shape {expected}") from exc
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"{p} holds {x.dtype} values; expected numbers of shape {expected}")
    return p, x, y


def _check_labels(y: np.ndarray | None, m: int, p: Path) -> np.ndarray | None:
    if y is None:
        return None
    y = np.asarray(y)
    if y.shape != (m,) or not np.issubdtype(y.dtype, np.integer) or (y < 0).any():
        raise ValueError(f"{p}: labels 'y' must be non-negative integers of shape ({m},); "
                         f"found {y.dtype} of shape {tuple(y.shape)}")
    return y


def load_points_file(path: str | Path) -> tuple[Tensor, Tensor | None]:
    """A user's own points: ``(M, 2)`` from ``.npy`` / ``.csv`` (or ``.npz`` with ``x``, ``y``).

    Returns ``x: (M, 2) float32`` and labels ``(M,) long`` or None. Fails with one line that
    says what was found and what is expected.
    """
    p, x, y = _read_array(path, "(M, 2)")
    if x.ndim != 2 or x.shape[1] != 2 or x.shape[0] < 2:
        raise ValueError(f"points file {p} has shape {tuple(x.shape)}; expected (M, 2) with "
                         "M >= 2: one row per point, two columns (x, y)")
    check_finite(x, p)
    y = _check_labels(y, len(x), p)
    return torch.as_tensor(x, dtype=torch.float32), (None if y is None
                                                      else torch.as_tensor(y, dtype=torch.long))
