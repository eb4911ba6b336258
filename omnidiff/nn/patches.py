"""Patch tokens and fixed position embeddings for transformer denoisers over N-d grids.

Shapes and conventions (shared by the image DiT and the video DiT):

* A signal is ``(B, C, *grid)`` with ``N = len(grid) >= 1`` spatial/temporal axes, e.g.
  ``(B, C, L)``, ``(B, C, H, W)`` or ``(B, C, T, H, W)``.
* ``patch`` is a tuple of N ints (or one int used for every axis); every grid size must be a
  multiple of its patch size. The *token grid* is ``grid_i // patch_i`` per axis.
* Tokens are ``(B, L, prod(patch) * C)`` with ``L = prod(token_grid)``, listed in row-major
  (C) order over the token grid: the last axis varies fastest.
* Inside a token the features are ordered ``(p_1, ..., p_N, C)``: channels last (DiT's
  convention), so the feature index is ``((o_1 * p_2 + o_2) * ... + o_N) * C + c`` for the
  offset ``(o_1, ..., o_N)`` inside the patch and channel ``c``.
* ``sincos_embedding(token_grid, dim)`` returns ``(L, dim)`` in the same token order. The
  channels are split into N equal blocks, block ``i`` encoding the integer position along
  axis ``i`` with the 1D embedding ``[sin(pos * omega), cos(pos * omega)]`` (all sines, then
  all cosines), ``omega_k = max_period ** (-k / (d / 2))`` for a block of width ``d``.
* ``PatchEmbed`` is a strided ConvNd (kernel = stride = patch) giving ``(B, L, dim)`` tokens in
  the same order; it equals a linear map of ``patchify``'s features.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from einops import rearrange
from torch import nn

__all__ = ["patchify", "unpatchify", "sincos_embedding", "sincos_1d", "PatchEmbed",
           "SeamConv", "token_grid"]

_CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def _as_patch(patch: int | Sequence[int], n: int) -> tuple[int, ...]:
    """Normalise ``patch`` to a tuple of ``n`` positive ints."""
    if isinstance(patch, int):
        patch = (patch,) * n
    patch = tuple(int(p) for p in patch)
    if len(patch) != n:
        raise ValueError(f"patch {patch} has {len(patch)} sizes but the grid has {n} axes; "
                         f"give one patch size per axis (or a single int).")
    if any(p < 1 for p in patch):
        raise ValueError(f"patch sizes must be positive integers, got {patch}.")
    return patch


def token_grid(grid: Sequence[int], patch: int | Sequence[int]) -> tuple[int, ...]:
    """Number of tokens per axis, ``grid_i // patch_i``; raises if an axis is not divisible."""
    grid = tuple(int(g) for g in grid)
    patch = _as_patch(patch, len(grid))
    for axis, (g, p) in enumerate(zip(grid, patch)):
        if g % p:
            raise ValueError(f"grid axis {axis} has size {g}, which is not divisible by its "
                             f"patch size {p}; crop or pad that axis to a multiple of {p} "
                             f"or choose a patch size that divides {g}.")
    return tuple(g // p for g, p in zip(grid, patch))


def _patterns(n: int) -> tuple[str, str]:
    """einops patterns ``(signal, tokens)`` for N axes, e.g. for N = 2:
    ``'b c (g0 p0) (g1 p1)'`` and ``'b (g0 g1) (p0 p1 c)'``."""
    signal = "b c " + " ".join(f"(g{i} p{i})" for i in range(n))
    tokens = ("b (" + " ".join(f"g{i}" for i in range(n)) + ") ("
              + " ".join(f"p{i}" for i in range(n)) + " c)")
    return signal, tokens


def patchify(x: torch.Tensor, patch: int | Sequence[int]) -> torch.Tensor:
    """``(B, C, *grid)`` -> ``(B, L, prod(patch) * C)`` tokens, features ordered (p_1..p_N, C)."""
    if x.dim() < 3:
        raise ValueError(f"patchify expects (B, C, *grid) with at least one grid axis, "
                         f"got shape {tuple(x.shape)}.")
    n = x.dim() - 2
    patch = _as_patch(patch, n)
    token_grid(x.shape[2:], patch)  # divisibility check
    signal, tokens = _patterns(n)
    sizes = {f"p{i}": p for i, p in enumerate(patch)}
    return rearrange(x, f"{signal} -> {tokens}", **sizes)  # (B, L, P*C)


def unpatchify(tokens: torch.Tensor, patch: int | Sequence[int], grid: Sequence[int],
               channels: int) -> torch.Tensor:
    """Inverse of :func:`patchify`: ``(B, L, prod(patch) * C)`` -> ``(B, C, *grid)``.

    ``grid`` is the full-resolution size of each axis (not the token grid).
    """
    grid = tuple(int(g) for g in grid)
    n = len(grid)
    patch = _as_patch(patch, n)
    tg = token_grid(grid, patch)
    want = (math.prod(tg), math.prod(patch) * channels)
    if tokens.dim() != 3 or tuple(tokens.shape[1:]) != want:
        raise ValueError(f"unpatchify expects tokens (B, {want[0]}, {want[1]}) for grid {grid}, "
                         f"patch {patch} and {channels} channels, got {tuple(tokens.shape)}.")
    signal, toks = _patterns(n)
    sizes = {f"p{i}": p for i, p in enumerate(patch)} | {f"g{i}": g for i, g in enumerate(tg)}
    return rearrange(tokens, f"{toks} -> {signal}", c=channels, **sizes)  # (B, C, *grid)


def sincos_1d(pos: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """1D sine-cosine embedding: pos ``(L,)`` -> float32 ``(L, dim)``, [all sines, all cosines].

    ``omega_k = 1 / max_period ** (k / (dim / 2))`` for ``k = 0 .. dim/2 - 1``.
    """
    if dim < 2 or dim % 2:
        raise ValueError(f"sincos_1d needs a positive even dim, got {dim}.")
    half = dim // 2
    k = torch.arange(half, dtype=torch.float64, device=pos.device)
    omega = 1.0 / max_period ** (k / half)  # (dim/2,)
    args = pos.reshape(-1).to(torch.float64)[:, None] * omega[None]  # (L, dim/2)
    return torch.cat([torch.sin(args), torch.cos(args)], dim=1).float()  # (L, dim)


def sincos_embedding(grid: Sequence[int], dim: int, *, max_period: float = 10_000.0,
                     device: torch.device | str | None = None) -> torch.Tensor:
    """Fixed N-d sine-cosine position embeddings: float32 ``(prod(grid), dim)``.

    ``grid`` is the token grid (tokens per axis). Channel block ``i`` (width ``dim // N``)
    is :func:`sincos_1d` of the position along axis ``i``; rows follow patchify's row-major
    token order.
    """
    grid = tuple(int(g) for g in grid)
    n = len(grid)
    if n < 1:
        raise ValueError("sincos_embedding needs a grid with at least one axis.")
    if dim <= 0 or dim % (2 * n):
        raise ValueError(f"sincos_embedding: dim {dim} must split into {n} equal even parts "
                         f"(one per axis); use a dim divisible by {2 * n}.")
    axes = [torch.arange(g, dtype=torch.float64, device=device) for g in grid]
    coords = torch.meshgrid(*axes, indexing="ij")  # N x grid
    parts = [sincos_1d(c.reshape(-1), dim // n, max_period) for c in coords]  # N x (L, dim/N)
    return torch.cat(parts, dim=1)  # (L, dim)


class PatchEmbed(nn.Module):
    """``(B, C, *grid)`` -> ``(B, L, dim)`` tokens with a strided ConvNd (kernel = stride = patch).

    Token order matches :func:`patchify`; the conv is the linear map of patchify's
    ``(p_1..p_N, C)`` features with its weight ``(dim, C, *patch)`` permuted to
    ``(dim, *patch, C)``.
    """

    def __init__(self, in_channels: int, dim: int, patch: int | Sequence[int], ndim: int):
        super().__init__()
        if ndim not in _CONVS:
            raise ValueError(f"PatchEmbed supports ndim 1, 2 or 3 (Conv1d/2d/3d), got {ndim}.")
        self.ndim = ndim
        self.patch = _as_patch(patch, ndim)
        self.proj = _CONVS[ndim](in_channels, dim, kernel_size=self.patch, stride=self.patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != self.ndim + 2:
            raise ValueError(f"PatchEmbed(ndim={self.ndim}) expects (B, C, *grid) with "
                             f"{self.ndim} grid axes, got shape {tuple(x.shape)}.")
        token_grid(x.shape[2:], self.patch)  # divisibility check (conv would drop the rest)
        y = self.proj(x)  # (B, D, *token_grid)
        return rearrange(y, "b d ... -> b (...) d")  # (B, L, D)


class SeamConv(nn.Module):
    """``y + conv(y)`` over an unpatchified output ``(B, C, *grid)``: a ConvNd of kernel 3
    across patch borders, zero at first (the network starts as without it).

    A linear map per token draws every patch on its own, and a young model's outputs show the
    patch grid; U-ViT (Bao et al. 2023) adds a 3x3 convolution after the final linear layer for
    this. Costs ``C * C * 3**N`` weights.
    """

    def __init__(self, channels: int, ndim: int):
        super().__init__()
        if ndim not in _CONVS:
            raise ValueError(f"SeamConv supports ndim 1, 2 or 3 (Conv1d/2d/3d), got {ndim}.")
        self.conv = _CONVS[ndim](channels, channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        return y + self.conv(y)  # (B, C, *grid)
