"""Self-attention and the adaLN-Zero transformer block of a diffusion transformer (DiT).

:class:`SelfAttention` runs PyTorch's fused ``scaled_dot_product_attention`` (flash / memory-
efficient kernels where the device has them) and accepts an optional ``rope`` callable applied
to queries and keys (rotary position embeddings) and an optional attention mask.
:class:`TransformerBlock` is DiT's block (Peebles & Xie 2023): LayerNorm without affine ->
adaLN modulation -> attention -> gate, and the same around an MLP (timm's ``Mlp``); its
parameter names (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``, ``ada.1``) match timm's
layers so that checkpoints of earlier omnidiff versions load unchanged.
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.nn.adaln import adaln_zero, gate, modulate

__all__ = ["SelfAttention", "TransformerBlock"]

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


class TransformerBlock(nn.Module):
    """DiT's adaLN-Zero block over tokens ``h: (B, L, D)`` with conditioning ``c: (B, D)``.

    Each half (attention, MLP) is ``h + gate * f(modulate(LN(h), shift, scale))``, the six
    vectors regressed from ``c`` by a zero-initialised layer, so the block starts as identity.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0):
        from timm.layers import Mlp  # imported here: `import omnidiff.nn` stays light

        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, dropout=dropout)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act_layer=nn.GELU, drop=dropout)
        self.ada = adaln_zero(dim, 6)

    def forward(self, h: torch.Tensor, c: torch.Tensor, rope: Rope | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # (B, D) each
        h = h + gate(g1, self.attn(modulate(self.norm1(h), s1, sc1), rope, mask))  # (B, L, D)
        return h + gate(g2, self.mlp(modulate(self.norm2(h), s2, sc2)))  # (B, L, D)
