"""Rotary position embeddings over an N-d token grid (Su et al. 2021, RoFormer; the 3D split of
the head dimension across time, height and width as in CogVideoX, Yang et al. 2024).

Each pair of channels of a query or key is rotated by ``position * omega``; the dot product
of a rotated query and key then depends only on their *relative* position. For a grid of N
axes the head dimension's pairs are shared out among the axes (as evenly as possible, the
first axes taking the remainder), each axis using 1D frequencies over its own pairs.
:class:`Rotary` holds the tables for one grid as non-persistent buffers (nothing enters a
checkpoint) and is the ``rope`` callable that :class:`~omnidiff.nn.SelfAttention` accepts.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["rotary_split", "rotary_tables", "apply_rotary", "Rotary"]


def rotary_split(head_dim: int, axes: int) -> list[int]:
    """Channel pairs per axis: ``head_dim / 2`` pairs shared out among ``axes`` axes."""
    if head_dim % 2 or head_dim < 2 * axes:
        raise ValueError(f"rotary embeddings need an even head dimension of at least "
                         f"{2 * axes} for {axes} axes, got {head_dim}; change the width or "
                         f"the number of heads.")
    pairs = head_dim // 2
    return [pairs // axes + (1 if i < pairs % axes else 0) for i in range(axes)]


def rotary_tables(grid: Sequence[int], head_dim: int, base: float = 10_000.0
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cos, sin)``, each float32 ``(prod(grid), head_dim / 2)``, rows in row-major token
    order (patchify's), columns the channel pairs (axis 0's first)."""
    grid = tuple(int(g) for g in grid)
    coords = torch.meshgrid(*[torch.arange(g, dtype=torch.float64) for g in grid],
                            indexing="ij")  # N x grid
    angles = []
    for pos, pairs in zip(coords, rotary_split(head_dim, len(grid))):
        omega = base ** (-torch.arange(pairs, dtype=torch.float64) / max(pairs, 1))  # (P_i,)
        angles.append(pos.reshape(-1, 1) * omega[None])  # (L, P_i)
    a = torch.cat(angles, dim=1)  # (L, head_dim / 2)
    return a.cos().float(), a.sin().float()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs ``(x[2i], x[2i+1])``: ``x: (..., L, head_dim)``, tables ``(L,
    head_dim / 2)`` -> same shape and dtype as ``x``."""
    pairs = x.float().unflatten(-1, (-1, 2))  # (..., L, d/2, 2)
    x0, x1 = pairs.unbind(-1)  # (..., L, d/2) each
    out = torch.stack([x0 * cos - x1 * sin, x0 * sin + x1 * cos], dim=-1)  # (..., L, d/2, 2)
    return out.flatten(-2).to(x.dtype)  # (..., L, d)


class Rotary(nn.Module):
    """The rotary embedding of one token grid: ``rope(q)`` for ``q: (B, heads, L, head_dim)``."""

    def __init__(self, grid: Sequence[int], head_dim: int, base: float = 10_000.0):
        super().__init__()
        cos, sin = rotary_tables(grid, head_dim, base)
        self.register_buffer("cos", cos, persistent=False)  # (L, head_dim / 2)
        self.register_buffer("sin", sin, persistent=False)
        self.grid = tuple(int(g) for g in grid)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2] != self.cos.shape[0]:
            raise ValueError(f"rotary embedding of grid {self.grid} has {self.cos.shape[0]} "
                             f"positions, got {x.shape[-2]} tokens.")
        return apply_rotary(x, self.cos, self.sin)

    def extra_repr(self) -> str:
        return f"grid={self.grid}, head_dim={2 * self.cos.shape[1]}"
