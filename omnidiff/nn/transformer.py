"""Transformer blocks over the attention layers of :mod:`.attention`.

:class:`TransformerBlock` is DiT's block (Peebles & Xie 2023): LayerNorm without affine ->
adaLN modulation -> attention -> gate, and the same around an MLP (:class:`.mlp.Mlp`); its
parameter names (``attn.qkv``, ``attn.proj``, ``mlp.fc1``, ``mlp.fc2``, ``ada.1``) match timm's
layers so that checkpoints of earlier omnidiff versions load unchanged. With ``context_dim`` it
also reads a sequence (a prompt) by cross-attention between the two halves, as PixArt-alpha
(Chen et al. 2023): ``h + CA(LN h, context)``, its projection starting at zero.
:class:`CrossAttentionBlock` is the block Stable Diffusion's U-Net runs at its attention
resolutions (Rombach et al. 2022): pre-norm self-attention, cross-attention over the prompt and
a feed-forward layer, each residual.
"""

from __future__ import annotations

import torch
from torch import nn

from omnidiff.nn.adaln import adaln_zero, gate, modulate
from omnidiff.nn.attention import CrossAttention, Rope, SelfAttention
from omnidiff.nn.mlp import Mlp

__all__ = ["SelfAttention", "TransformerBlock", "CrossAttentionBlock"]


class TransformerBlock(nn.Module):
    """DiT's adaLN-Zero block over tokens ``h: (B, L, D)`` with conditioning ``c: (B, D)``.

    Each half (attention, MLP) is ``h + gate * f(modulate(LN(h), shift, scale))``, the six
    vectors regressed from ``c`` by a zero-initialised layer, so the block starts as identity.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0,
                 context_dim: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(dim, heads, dropout=dropout)
        self.cross = None
        if context_dim is not None:
            self.norm_cross = nn.LayerNorm(dim, eps=1e-6)
            self.cross = CrossAttention(dim, context_dim, heads)
            nn.init.zeros_(self.cross.proj.weight)
            nn.init.zeros_(self.cross.proj.bias)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), nn.GELU, dropout)
        self.ada = adaln_zero(dim, 6)

    def forward(self, h: torch.Tensor, c: torch.Tensor, rope: Rope | None = None,
                mask: torch.Tensor | None = None,
                text: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """``text``: ``(context (B, Lc, Dc), its mask (B, Lc))`` for cross-attention."""
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, dim=-1)  # (B, D) each
        h = h + gate(g1, self.attn(modulate(self.norm1(h), s1, sc1), rope, mask))  # (B, L, D)
        if self.cross is not None and text is not None:
            h = h + self.cross(self.norm_cross(h), *text)  # (B, L, D)
        return h + gate(g2, self.mlp(modulate(self.norm2(h), s2, sc2)))  # (B, L, D)


class CrossAttentionBlock(nn.Module):
    """``x + SA(LN x)``, ``+ CA(LN x, context)``, ``+ FF(LN x)`` over tokens ``x: (B, N, D)``.

    Its parts start at PyTorch's default initialisation, as in Stable Diffusion, where the
    zero-initialised projection is the caller's, around the whole block (the U-Net's
    ``TextAttnBlock``): zeros inside as well would hold the cross-attention's queries and keys
    at zero gradient until two zero layers have grown in turn."""

    def __init__(self, dim: int, context_dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(dim) for _ in range(3))
        self.attn = SelfAttention(dim, heads)
        self.cross = CrossAttention(dim, context_dim, heads)
        hidden = int(dim * mlp_ratio)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor, context: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))  # (B, N, D)
        x = x + self.cross(self.norm2(x), context, mask)  # (B, N, D)
        return x + self.ff(self.norm3(x))  # (B, N, D)
