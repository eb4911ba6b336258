"""Small network pieces shared by domains (domains must not copy code from each other)."""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["timestep_embedding", "TimeEmbedding", "ClassEmbedding"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0,
                       scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of continuous times.

    t: (B,) in [0, 1] (scaled by ``scale`` so that frequencies match DDPM's integer steps).
    Returns (B, dim).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = (t.float() * scale)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """t (B,) -> (B, dim): sinusoidal features followed by a two-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.mlp(timestep_embedding(t, self.freq_dim))


class ClassEmbedding(nn.Module):
    """Class labels (B,) -> (B, dim), with a learned null class for classifier-free guidance.

    ``drop`` (B,) bool selects the null embedding (index ``num_classes``). With
    ``num_classes == 0`` every input maps to the null embedding (an unconditional model).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, cond: torch.Tensor | None, drop: torch.Tensor | None,
                batch: int, device: torch.device) -> torch.Tensor:
        null = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        if cond is None or self.num_classes == 0:
            idx = null
        else:
            idx = cond.long()
            if drop is not None:
                idx = torch.where(drop, null, idx)
        return self.table(idx)
