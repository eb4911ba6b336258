"""The feed-forward layer of transformer and residual blocks: ``fc2(drop(act(fc1(x))))``,
then dropout.

Its parameter names (``fc1``, ``fc2``) are those of timm's ``Mlp``, which the DiT block and the
points networks used before, so checkpoints written then load unchanged and sample identically;
written here so that ``import omnidiff.nn`` does not import timm (about 2 s) for two linear
layers.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["Mlp"]


class Mlp(nn.Module):
    """``(..., dim) -> (..., dim)`` through ``hidden`` units and ``act``."""

    def __init__(self, dim: int, hidden: int, act: type[nn.Module] = nn.GELU,
                 dropout: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = act()
        self.drop1 = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden, dim)
        self.drop2 = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.drop1(self.act(self.fc1(x)))  # (..., hidden)
        return self.drop2(self.fc2(h))  # (..., dim)
