"""A small classifier of noisy samples for any domain: the default network of ``omnidiff
train stage=classifier`` (a domain may offer its own through ``build_classifier``)."""

from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from omnidiff.nn.embeddings import TimeEmbedding
from omnidiff.nn.mlp import Mlp

__all__ = ["NoisyClassifierNet"]


class NoisyClassifierNet(nn.Module):
    """``net(x, t) -> logits``: ``x: (B, *event)`` flattened into ``width`` features, the time
    embedding added, ``depth`` pre-norm residual feed-forward blocks, a linear head to
    ``num_classes``. Times run through the same sinusoidal embedding as the diffusion
    networks (:class:`~omnidiff.nn.embeddings.TimeEmbedding`)."""

    def __init__(self, event_shape: Sequence[int], num_classes: int, width: int = 256,
                 depth: int = 3):
        super().__init__()
        self.inp = nn.Linear(math.prod(event_shape), width)
        self.time = TimeEmbedding(width)
        self.norms = nn.ModuleList(nn.LayerNorm(width) for _ in range(depth))
        self.blocks = nn.ModuleList(Mlp(width, 2 * width, act=nn.SiLU) for _ in range(depth))
        self.head = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, num_classes))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        h = self.inp(x.flatten(1)) + self.time(t)  # (B, width)
        for norm, block in zip(self.norms, self.blocks):
            h = h + block(norm(h))  # (B, width)
        return self.head(h)  # (B, num_classes)
