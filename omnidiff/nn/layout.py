"""Where each word goes: every position of a grid asks the prompt what belongs there.

:class:`Layout` is cross-attention whose queries are the positions alone (fixed sine-cosine
embeddings through a small MLP), not the sample's features: the answer ``(B, dim, *grid)``
depends only on the prompt, so it is computed once per forward pass and can modulate every
block at that resolution (a per-position adaGN embedding beside the time embedding).

Cross-attention from noisy features has to find the positions inside the noise before it can
tie a word to a place; a position query has nothing else to look at. Its output projection
starts at zero, so an untrained layout changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from omnidiff.nn.attention import CrossAttention
from omnidiff.nn.patches import sincos_embedding

__all__ = ["Layout"]


class Layout(nn.Module):
    """``(grid, context (B, L, Dc), mask (B, L)) -> (B, dim, *grid)``: per position, the
    prompt's tokens weighted by how well they answer that position's query."""

    def __init__(self, dim: int, context_dim: int, heads: int, ndim: int = 2):
        super().__init__()
        self.dim = dim
        self.pos_dim = dim - dim % (2 * ndim)  # sincos needs an even part per axis
        self.query = nn.Sequential(nn.Linear(self.pos_dim, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.cross = CrossAttention(dim, context_dim, heads)
        for p in self.cross.proj.parameters():
            nn.init.zeros_(p)

    def forward(self, grid: Sequence[int], context: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b = context.shape[0]
        pos = sincos_embedding(grid, self.pos_dim, device=context.device)  # (N, P)
        q = self.query(pos.to(self.query[0].weight.dtype))  # (N, dim)
        out = self.cross(q.expand(b, -1, -1), context, mask)  # (B, N, dim)
        return out.transpose(1, 2).reshape(b, self.dim, *grid)  # (B, dim, *grid)
