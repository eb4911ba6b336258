"""Cross-attention: tokens of the sample read a condition's sequence (text) through PyTorch's
scaled-dot-product attention, with the sequence's padding mask.

:class:`CrossAttention` is the layer (queries from the sample's tokens, keys and values from
the context); :class:`CrossAttentionBlock` is the transformer block Stable Diffusion's U-Net runs
at its attention resolutions (Rombach et al. 2022): pre-norm self-attention, cross-attention and
a feed-forward layer, each residual.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.nn.transformer import SelfAttention

__all__ = ["CrossAttention", "CrossAttentionBlock", "key_padding_mask"]


def key_padding_mask(mask: torch.Tensor | None) -> torch.Tensor | None:
    """``mask: (B, L)`` bool, True on real tokens -> ``(B, 1, 1, L)`` for SDPA's ``attn_mask``
    (broadcast over heads and queries). Every row needs one True (a start token)."""
    return None if mask is None else mask[:, None, None, :]


class CrossAttention(nn.Module):
    """Multi-head attention of ``x: (B, N, D)`` over ``context: (B, L, Dc)`` -> ``(B, N, D)``."""

    def __init__(self, dim: int, context_dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by heads={heads}")
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(context_dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        h = self.heads
        q = self.q(x).view(b, n, h, d // h).transpose(1, 2)  # (B, H, N, d)
        kv = self.kv(context.to(x.dtype)).view(b, context.shape[1], 2, h, d // h)
        k, v = kv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, d) each
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_padding_mask(mask))
        return self.proj(out.transpose(1, 2).reshape(b, n, d))  # (B, N, D)


class CrossAttentionBlock(nn.Module):
    """``x + SA(LN x)``, ``+ CA(LN x, context)``, ``+ FF(LN x)`` over tokens ``x: (B, N, D)``;
    the last projection of each part starts at zero, so the block starts as the identity."""

    def __init__(self, dim: int, context_dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = SelfAttention(dim, heads)
        self.cross = CrossAttention(dim, context_dim, heads)
        hidden = int(dim * mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        for layer in (self.attn.proj, self.cross.proj, self.ff[2]):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        x = x + self.cross(self.norm2(x), context, mask)  # (B, N, D)
        return x + self.ff(self.norm3(x))  # (B, N, D)
