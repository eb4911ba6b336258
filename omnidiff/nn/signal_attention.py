"""Cross-attention from a signal in time to a sequence condition, at a pooled rate.

:class:`PooledCrossAttention` lets a 1D network (a waveform's, or an audio latent's) read a
prompt where attention at the signal's own rate would cost too much: the features
``(B, C, T)`` are averaged over windows of ``rate`` steps into ``ceil(T / rate)`` tokens, the
tokens attend to the prompt's encoding, and the result is held over each window (nearest
upsampling) and added back through a zero-initialised projection, so a new layer starts as the
identity.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.nn.attention import CrossAttention

__all__ = ["PooledCrossAttention"]


class PooledCrossAttention(nn.Module):
    """``(x (B, C, T), context (B, L, Dc), mask (B, L)) -> (B, C, T)``: ``x`` plus what its
    windows of ``rate`` steps read from the context."""

    def __init__(self, channels: int, context_dim: int, heads: int, rate: int):
        super().__init__()
        if rate < 1:
            raise ValueError(f"the attention's pooling rate must be >= 1, got {rate}")
        self.rate = int(rate)
        self.norm = nn.LayerNorm(channels)
        self.attn = CrossAttention(channels, context_dim, heads)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        length = x.shape[-1]
        pooled = F.avg_pool1d(x, self.rate, self.rate, ceil_mode=True)  # (B, C, T')
        tokens = pooled.transpose(1, 2)  # (B, T', C)
        read = self.out(self.attn(self.norm(tokens), context, mask))  # (B, T', C)
        held = read.transpose(1, 2).repeat_interleave(self.rate, dim=-1)  # (B, C, T' rate)
        return x + held[..., :length]  # (B, C, T)
