"""A convolutional encoder and decoder for grids of any rank (1D signals, 2D images, 3D
volumes or clips): the networks behind :class:`omnidiff.methods.latent.autoencoder.Autoencoder`.

Levels follow the latent-diffusion autoencoder (Rombach et al. 2022, appendix G): residual
blocks of GroupNorm, SiLU and 3-wide convolutions, a stride-2 convolution between levels going
down and nearest-neighbour upsampling plus a convolution going up. With ``channels = [c0, ...,
cL]`` every spatial axis shrinks by ``2 ** L``. No attention: the grids this is meant for are
small, and a convolution is what lets one network serve every rank.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.nn.norm import group_norm

__all__ = ["ConvEncoder", "ConvDecoder", "conv_nd"]


def conv_nd(dims: int, cin: int, cout: int, kernel: int = 3, stride: int = 1) -> nn.Module:
    """``Conv1d`` / ``Conv2d`` / ``Conv3d`` with 'same' padding for odd kernels."""
    conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
    return conv(cin, cout, kernel, stride=stride, padding=kernel // 2)


class _ResBlock(nn.Module):
    def __init__(self, dims: int, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = group_norm(cin), conv_nd(dims, cin, cout)
        self.norm2, self.conv2 = group_norm(cout), conv_nd(dims, cout, cout)
        self.skip = conv_nd(dims, cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))  # (B, cout, *grid)
        h = self.conv2(F.silu(self.norm2(h)))  # (B, cout, *grid)
        return self.skip(x) + h


class _Upsample(nn.Module):
    def __init__(self, dims: int, channels: int):
        super().__init__()
        self.conv = conv_nd(dims, channels, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))  # (B, C, *2grid)


def _blocks(dims: int, cin: int, cout: int, n: int) -> list[nn.Module]:
    return [_ResBlock(dims, cin if i == 0 else cout, cout) for i in range(n)]


class ConvEncoder(nn.Module):
    """``(B, in_channels, *grid) -> (B, out_channels, *grid / 2**(len(channels) - 1))``."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 blocks: int = 1):
        super().__init__()
        ch = [int(c) for c in channels]
        layers: list[nn.Module] = [conv_nd(dims, in_channels, ch[0])]
        for i, c in enumerate(ch):
            layers += _blocks(dims, ch[max(i - 1, 0)], c, blocks)
            if i < len(ch) - 1:
                layers.append(conv_nd(dims, c, c, 3, stride=2))
        layers += [group_norm(ch[-1]), nn.SiLU(), conv_nd(dims, ch[-1], out_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)  # (B, out_channels, *latent_grid)


class ConvDecoder(nn.Module):
    """``(B, in_channels, *latent_grid) -> (B, out_channels, *latent_grid * 2**(len - 1))``:
    the mirror of :class:`ConvEncoder` (``channels`` as given to the encoder)."""

    def __init__(self, dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                 blocks: int = 1):
        super().__init__()
        ch = [int(c) for c in channels][::-1]
        layers: list[nn.Module] = [conv_nd(dims, in_channels, ch[0])]
        for i, c in enumerate(ch):
            layers += _blocks(dims, ch[max(i - 1, 0)], c, blocks + 1)
            if i < len(ch) - 1:
                layers.append(_Upsample(dims, c))
        layers += [group_norm(ch[-1]), nn.SiLU(), conv_nd(dims, ch[-1], out_channels)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)  # (B, out_channels, *grid)
