"""adaLN-Zero (Peebles & Xie 2023, "Scalable Diffusion Models with Transformers", sec. 3.2).

A conditioning vector ``c: (B, D)`` (time + condition embedding) regresses per-channel shift,
scale and gate parameters; the regressing linear layer starts at zero, so every residual block
starts as the identity and the final layer outputs zero.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["modulate", "gate", "adaln_zero", "FinalLayer"]


def _over_tokens(v: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``v: (B, D)`` -> ``(B, 1, ..., 1, D)`` to broadcast over the token dims of ``h``."""
    return v[(slice(None),) + (None,) * (h.dim() - 2)]


def modulate(h: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """adaLN: ``h * (1 + scale) + shift``; ``h: (B, ..., D)``, ``shift, scale: (B, D)``."""
    return h * (1 + _over_tokens(scale, h)) + _over_tokens(shift, h)


def gate(g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``g * h`` with ``g: (B, D)`` broadcast over the tokens of ``h: (B, ..., D)``."""
    return _over_tokens(g, h) * h


def adaln_zero(dim: int, chunks: int) -> nn.Sequential:
    """``SiLU -> Linear(dim, chunks * dim)`` with the linear layer zero-initialised."""
    lin = nn.Linear(dim, chunks * dim)
    nn.init.zeros_(lin.weight)
    nn.init.zeros_(lin.bias)
    return nn.Sequential(nn.SiLU(), lin)


class FinalLayer(nn.Module):
    """adaLN-modulated LayerNorm, then a zero-initialised linear map to ``out`` features.

    ``h: (B, ..., dim)``, ``c: (B, dim)`` -> ``(B, ..., out)``.
    """

    def __init__(self, dim: int, out: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = adaln_zero(dim, 2)
        self.linear = nn.Linear(dim, out)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        shift, scale = self.ada(c).chunk(2, dim=-1)  # (B, dim) each
        return self.linear(modulate(self.norm(h), shift, scale))  # (B, ..., out)
