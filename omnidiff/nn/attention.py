"""Attention layers over PyTorch's fused ``scaled_dot_product_attention`` (flash / memory-
efficient kernels where the device has them).

* :class:`SelfAttention` — multi-head self-attention, with an optional ``rope`` callable applied
  to queries and keys (rotary position embeddings) and an optional attention mask;
* :class:`CrossAttention` — the sample's tokens attend to a condition's sequence (a prompt's
  encoding) with its padding mask (:func:`key_padding_mask`).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["SelfAttention", "CrossAttention", "key_padding_mask"]

Rope = Callable[[torch.Tensor], torch.Tensor]  # (B, heads, L, head_dim) -> same shape


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens ``x: (B, L, D)`` -> ``(B, L, D)``."""

    def __init__(self, dim: int, heads: int, *, qkv_bias: bool = True, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} must be divisible by heads={heads}")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rope: Rope | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, d = x.shape
        qkv = self.qkv(x).view(b, n, 3, self.heads, d // self.heads)  # (B, L, 3, H, d)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # (B, H, L, d) each
        if rope is not None:
            q, k = rope(q), rope(k)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, H, L, d)
        out = out.transpose(1, 2).reshape(b, n, d)  # (B, L, D)
        return self.proj_drop(self.proj(out))


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
