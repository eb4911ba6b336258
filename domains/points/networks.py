"""Denoising networks of the points domain, both called as
``net(x_t, t, cond=None, drop=None) -> (B, *event)``.

* :class:`PointMLP` (``"mlp"``): a residual MLP over the flattened sample, with the
  time + class embedding added to the input of every block. Meant for
  densities, event shape ``(2,)`` (it accepts any event shape by flattening).
* :class:`SetTransformer` (``"set_transformer"``): a permutation-equivariant transformer over
  the points of a cloud, event shape ``(N, D)``: each point is a token, no positional encoding,
  the shared adaLN-Zero blocks of :mod:`omnidiff.nn` (DiT, Peebles & Xie 2023).

Time and condition enter through :class:`omnidiff.nn.Conditioning` (time embedding + the
condition's global embedding: labels, a property vector, or a named set of them; its null serves
``drop`` and unconditional models).
Output layers are zero-initialised. Both networks share the hyperparameter names ``width``,
``depth``, ``mlp_ratio``, ``dropout`` (the transformer adds ``heads``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from omnidiff.core.conditions import as_cond_spec
from omnidiff.nn import Conditioning, FinalLayer, Mlp, TransformerBlock

__all__ = ["NETWORKS", "PointMLP", "SetTransformer", "build_network"]


class _ResBlock(nn.Module):
    """h + MLP(LN(h) + W c): one residual block of :class:`PointMLP`. ``h, c: (B, W)``."""

    def __init__(self, width: int, mlp_ratio: float, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.cond = nn.Linear(width, width)
        self.mlp = Mlp(width, int(width * mlp_ratio), nn.SiLU, dropout)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return h + self.mlp(self.norm(h) + self.cond(F.silu(c)))


class PointMLP(nn.Module):
    """Residual MLP denoiser. ``x_t: (B, *event)``, ``t: (B,)`` -> ``(B, *event)``.

    Time + condition embedding is added to the input of every block (as DDPM adds its time
    embedding to every residual block); as good as adaLN on the toy densities at about
    60 % of its cost.
    """

    def __init__(self, event_shape: tuple[int, ...], cond: Any = None, width: int = 128,
                 depth: int = 3, mlp_ratio: float = 1.0, dropout: float = 0.0):
        super().__init__()
        self.event_shape = tuple(int(s) for s in event_shape)
        features = math.prod(self.event_shape)
        self.cond = Conditioning(as_cond_spec(cond), width)
        self.inp = nn.Linear(features, width)
        self.blocks = nn.ModuleList(_ResBlock(width, mlp_ratio, dropout) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, features))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        b = x_t.shape[0]
        c = self.cond(t, cond, drop, b)  # (B, W)
        h = self.inp(x_t.reshape(b, -1)) + c  # (B, W)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h).reshape(x_t.shape)


class SetTransformer(nn.Module):
    """Permutation-equivariant denoiser for clouds. ``x_t: (B, N, D)`` -> ``(B, N, D)``.

    Permuting the points of ``x_t`` permutes the output the same way (no positional encoding,
    only self-attention and per-point maps).
    """

    def __init__(self, event_shape: tuple[int, ...], cond: Any = None, width: int = 128,
                 depth: int = 4, heads: int = 4, mlp_ratio: float = 2.0, dropout: float = 0.0):
        super().__init__()
        if len(event_shape) != 2:
            raise ValueError(f"set_transformer needs clouds of event shape (N, D); got "
                             f"{tuple(event_shape)} (use model.name=mlp for densities)")
        if width % heads:
            raise ValueError(f"set_transformer: width={width} must be divisible by "
                             f"heads={heads}")
        dim = width
        self.event_shape = tuple(int(s) for s in event_shape)
        point_dim = self.event_shape[1]
        self.cond = Conditioning(as_cond_spec(cond), dim)
        self.inp = nn.Linear(point_dim, dim)
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio, dropout)
                                    for _ in range(depth))
        self.out = FinalLayer(dim, point_dim)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        b = x_t.shape[0]
        c = self.cond(t, cond, drop, b)  # (B, D)
        h = self.inp(x_t) + c[:, None]  # (B, N, D)
        for block in self.blocks:
            h = block(h, c)
        return self.out(h, c)  # (B, N, point_dim)


NETWORKS = {"mlp": PointMLP, "set_transformer": SetTransformer}


def build_network(event_shape: tuple[int, ...], cond: Any, name: str = "mlp",
                  **hparams) -> nn.Module:
    """Build a points network by name (see :data:`NETWORKS`) for the condition specification
    ``cond`` (:mod:`omnidiff.core.conditions`) with its hyperparameters.

    A hyperparameter set to ``None`` (``null`` in a config) takes the network's default.
    """
    hparams = {k: v for k, v in hparams.items() if v is not None}
    if name not in NETWORKS:
        raise ValueError(f"unknown points network {name!r}; valid: {', '.join(NETWORKS)}")
    try:
        return NETWORKS[name](tuple(event_shape), as_cond_spec(cond), **hparams)
    except TypeError as exc:
        import inspect

        valid = [p for p in inspect.signature(NETWORKS[name]).parameters
                 if p not in ("self", "event_shape", "cond")]
        raise TypeError(f"bad hyperparameters for points network {name!r}: {exc}; valid "
                        f"keys: {', '.join(valid)}") from exc
