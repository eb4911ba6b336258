"""A small 1D residual conv net, called as ``net(x_t, t, cond=None, drop=None) -> (B, C, L)``.

Blocks: GroupNorm -> SiLU -> dilated Conv1d, with FiLM (scale, shift) from the time +
condition embedding (:class:`omnidiff.nn.TimeEmbedding`, :class:`omnidiff.nn.ConditionEmbedding`,
whose null serves ``drop`` and unconditional models). Dilations cycle 1, 2, 4, 8 so the receptive
field covers a few periods; the output convolution is zero-initialised.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnidiff.nn import ConditionEmbedding, TimeEmbedding, group_norm

__all__ = ["ResConv1d"]


class _Block(nn.Module):
    def __init__(self, width: int, emb: int, dilation: int, dropout: float):
        super().__init__()
        self.norm1 = group_norm(width, 8)
        self.conv1 = nn.Conv1d(width, width, 3, padding=dilation, dilation=dilation)
        self.film = nn.Linear(emb, 2 * width)
        self.norm2 = group_norm(width, 8)
        self.drop = nn.Dropout(dropout)
        self.conv2 = nn.Conv1d(width, width, 3, padding=1)

    def forward(self, h: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        # h: (B, W, L), e: (B, E)
        scale, shift = self.film(e)[..., None].chunk(2, dim=1)  # (B, W, 1) each
        y = self.conv1(torch.nn.functional.silu(self.norm1(h)))
        y = self.norm2(y) * (1 + scale) + shift
        y = self.conv2(self.drop(torch.nn.functional.silu(y)))
        return h + y


class ResConv1d(nn.Module):
    """``channels`` in and out; ``width`` features, ``depth`` residual blocks."""

    def __init__(self, channels: int, cond: Any = None, width: int = 64, depth: int = 6,
                 emb_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        if int(width) < 1 or int(depth) < 1:
            raise ValueError(f"model.width and model.depth must be >= 1; got {width}, {depth}")
        emb = int(emb_dim or 2 * width)
        self.time = TimeEmbedding(emb)
        self.label = ConditionEmbedding(cond, emb)
        self.inp = nn.Conv1d(channels, width, 3, padding=1)
        self.blocks = nn.ModuleList(_Block(width, emb, 2 ** (i % 4), float(dropout))
                                    for i in range(int(depth)))
        self.out_norm = group_norm(width, 8)
        self.out = nn.Conv1d(width, channels, 3, padding=1)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        # x: (B, C, L), t: (B,)
        b = x.shape[0]
        e = self.time(t.expand(b) if t.dim() == 0 else t)
        e = torch.nn.functional.silu(e + self.label(cond, drop, b, x.device))  # (B, E)
        h = self.inp(x)  # (B, W, L)
        for block in self.blocks:
            h = block(h, e)
        return self.out(torch.nn.functional.silu(self.out_norm(h)))  # (B, C, L)


def build_network(event_shape: tuple[int, ...], cond: Any, **model_cfg) -> "ResConv1d":
    """A :class:`ResConv1d` for events ``(channels, length)`` and the condition specification
    ``cond`` (:mod:`omnidiff.core.conditions`)."""
    if len(event_shape) != 2:
        raise ValueError(f"timeseries networks take events (channels, length); got "
                         f"{tuple(event_shape)}")
    return ResConv1d(int(event_shape[0]), cond, **model_cfg)
