"""A U-Net denoiser in the Ho et al. (2020) / Dhariwal & Nichol (2021, "ADM") lineage.

Residual blocks receive the time (+ class) embedding as a GroupNorm scale-shift ("adaGN",
Dhariwal & Nichol 2021, sec. 3); self-attention (fused ``F.scaled_dot_product_attention``)
runs at the chosen resolutions and in the middle; the output convolution starts at zero so
that the untrained network predicts 0. Skip connections concatenate, as in DDPM.

A sequence condition (a prompt) is encoded once (:class:`omnidiff.nn.SequenceConditioning`;
``encode_cond``) and read as in Stable Diffusion (Rombach et al. 2022): at the attention
resolutions and in the middle, the attention layer becomes a transformer block of self-
attention, cross-attention over the prompt's tokens and a feed-forward layer; the prompt's
pooled encoding is also added to the time embedding.

Called as ``net(x_t, t, cond=None, drop=None) -> (B, C, H, W)`` (the domain contract in
:mod:`omnidiff.plugins.contract`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.core.conditions import CondSpec, as_cond_spec
from omnidiff.nn import (
    ConditionEmbedding,
    CrossAttentionBlock,
    Layout,
    SequenceConditioning,
    TimeEmbedding,
    group_norm,
    pool,
    sequence_field,
    sincos_embedding,
)

__all__ = ["UNet", "build_unet"]


def _norm(channels: int, max_groups: int) -> nn.GroupNorm:
    return group_norm(channels, max_groups, eps=1e-5)


def _gn_silu(norm: nn.GroupNorm, x: torch.Tensor) -> torch.Tensor:
    """SiLU(GroupNorm(x)); in place when no gradient is recorded (sampling), saving a buffer."""
    return F.silu(norm(x), inplace=not torch.is_grad_enabled())


def _heads(channels: int, head_channels: int) -> int:
    """Attention heads of ``head_channels`` each, or one head when they do not divide
    ``channels``."""
    heads = max(1, channels // head_channels)
    return heads if channels % heads == 0 else 1


def _zero(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class ResBlock(nn.Module):
    """GN-SiLU-conv, then adaGN ``GN(h)·(1+scale)+shift`` from the embedding, SiLU-dropout-conv.

    x: (B, Cin, H, W), emb: (B, E) or per position (B, E, H, W), already passed through SiLU
    -> (B, Cout, H, W).
    """

    def __init__(self, cin: int, cout: int, emb_dim: int, dropout: float, groups: int):
        super().__init__()
        self.norm1 = _norm(cin, groups)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * cout)
        self.norm2 = _norm(cout, groups)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = _zero(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(_gn_silu(self.norm1, x))
        if emb.ndim == 2:
            e = self.emb(emb)[:, :, None, None]  # (B, 2 Cout, 1, 1)
        else:
            e = self.emb(emb.movedim(1, -1)).movedim(-1, 1)  # (B, 2 Cout, H, W)
        scale, shift = e.chunk(2, dim=1)  # (B, Cout, 1 | H, 1 | W) each
        h = torch.addcmul(shift, self.norm2(h), scale + 1)
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    """Multi-head self-attention over the H·W positions, residual; x: (B, C, H, W).

    Projections are ``nn.Linear`` on channel-last tokens so that q, k, v reach
    ``F.scaled_dot_product_attention`` with a unit-stride last dimension (which the fused
    kernels need; a strided layout falls back to the slow math path).
    """

    def __init__(self, channels: int, head_channels: int, groups: int):
        super().__init__()
        self.heads = _heads(channels, head_channels)
        self.norm = _norm(channels, groups)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, text: Any = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C)
        q, k, v = (self.qkv(tokens).view(b, h * w, 3, self.heads, c // self.heads)
                   .permute(2, 0, 3, 1, 4).unbind(0))  # (B, heads, HW, d) each
        out = F.scaled_dot_product_attention(q, k, v)  # (B, heads, HW, d)
        out = self.proj(out.transpose(1, 2).reshape(b, h * w, c))  # (B, HW, C)
        return x + out.view(b, h, w, c).permute(0, 3, 1, 2)


class TextAttnBlock(nn.Module):
    """GroupNorm -> tokens + 2-D sine-cosine positions -> :class:`~omnidiff.nn.
    CrossAttentionBlock` over the prompt's ``text = (context (B, L, Dc), mask (B, L))`` -> a
    zero-initialised projection, residual; x: (B, C, H, W).

    The positions let attention tell places apart, so that words can be tied to them ("a 3 on
    the left"); without them the tokens know where they are only through the convolutions'
    zero padding (Stable Diffusion's U-Net has none and relies on that).
    """

    def __init__(self, channels: int, context_dim: int, head_channels: int, groups: int):
        super().__init__()
        self.norm = _norm(channels, groups)
        self.block = CrossAttentionBlock(channels, context_dim, _heads(channels, head_channels))
        self.proj = _zero(nn.Linear(channels, channels))

    def forward(self, x: torch.Tensor, text: Any = None) -> torch.Tensor:
        b, c, h, w = x.shape
        tokens = self.norm(x).permute(0, 2, 3, 1).reshape(b, h * w, c)  # (B, HW, C)
        tokens = tokens + _positions(h, w, c, x.device).to(tokens.dtype)  # (B, HW, C)
        out = self.proj(self.block(tokens, *text))  # (B, HW, C)
        return x + out.view(b, h, w, c).permute(0, 3, 1, 2)


def _positions(h: int, w: int, c: int, device: torch.device) -> torch.Tensor:
    """Fixed 2-D sine-cosine embeddings of an ``h x w`` grid: ``(h w, c)`` (the channels
    beyond a multiple of 4 stay zero)."""
    emb = sincos_embedding((h, w), c - c % 4, device=device)  # (HW, c - c % 4)
    return F.pad(emb, (0, c % 4))


class NoAttn(nn.Module):
    """A level without attention: ``(x, text) -> x``."""

    def forward(self, x: torch.Tensor, text: Any = None) -> torch.Tensor:
        return x


class Downsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Level(nn.Module):
    """The residual (+ attention) blocks of one resolution, on one side of the U."""

    def __init__(self, blocks: list[ResBlock], attns: list[nn.Module]):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.attns = nn.ModuleList(attns)


def _resolutions(hw: tuple[int, int], channel_mult: tuple[int, ...]) -> list[int]:
    """The height of each level's feature maps; a clear error when the levels do not fit."""
    if not channel_mult:
        raise ValueError("model.channel_mult must list at least one level, e.g. [1, 2]")
    factor = 2 ** (len(channel_mult) - 1)
    if hw[0] % factor or hw[1] % factor:
        raise ValueError(
            f"image size {hw[0]}x{hw[1]} is not divisible by 2**(len(channel_mult)-1) = "
            f"{factor} (channel_mult={list(channel_mult)}); use fewer levels or set "
            f"data.image_size to a multiple of {factor}")
    return [hw[0] // 2 ** i for i in range(len(channel_mult))]


def _attention_at(attn_resolutions: Sequence[int] | None, resolutions: list[int]) -> set[int]:
    """The resolutions asked for attention, each checked to be one of ``resolutions``; None:
    the coarsest (so the default follows the image size)."""
    if attn_resolutions is None:
        return {resolutions[-1]}
    bad = [r for r in attn_resolutions if int(r) not in resolutions]
    if bad:
        raise ValueError(f"model.attn_resolutions {list(attn_resolutions)} includes {bad}, "
                         f"which is not one of this U-Net's resolutions {resolutions}; "
                         f"model.attn_resolutions=null puts attention at the coarsest")
    return {int(r) for r in attn_resolutions}


def _image_cond(cond: Any) -> CondSpec:
    """The condition specification of ``cond``; labels, fixed-shape tensors or a sequence."""
    spec = as_cond_spec(cond)
    if spec.variable_shape:
        raise ValueError(f"the image U-Net takes class labels, fixed-shape tensors or a "
                         f"sequence; got {spec.describe()}")
    return spec


@dataclass(frozen=True)
class _Blocks:
    """Makes the U-Net's blocks with the settings they all share."""

    emb_dim: int
    dropout: float
    groups: int
    head_channels: int
    context_dim: int | None  # the prompt encoder's width; None without a sequence condition

    def res(self, cin: int, cout: int) -> ResBlock:
        return ResBlock(cin, cout, self.emb_dim, self.dropout, self.groups)

    def attn(self, channels: int) -> nn.Module:
        if self.context_dim is not None:
            return TextAttnBlock(channels, self.context_dim, self.head_channels, self.groups)
        return AttnBlock(channels, self.head_channels, self.groups)

    def level(self, pairs: Iterable[tuple[int, int]], attend: bool) -> Level:
        """A residual block ``cin -> cout`` per pair, each followed by attention if
        ``attend`` (else :class:`NoAttn`)."""
        blocks, attns = [], []
        for cin, cout in pairs:
            blocks.append(self.res(cin, cout))
            attns.append(self.attn(cout) if attend else NoAttn())
        return Level(blocks, attns)


class UNet(nn.Module):
    """ADM-style U-Net for images ``(C, H, W)``.

    Args:
        in_channels: image channels C.
        image_size: H (or ``(H, W)``); must be divisible by ``2 ** (len(channel_mult) - 1)``.
        cond: the condition specification (:mod:`omnidiff.core.conditions`; a class count is read
            as labels): labels or fixed-shape tensors, embedded with a learned null
            (:class:`omnidiff.nn.ConditionEmbedding`) and added to the time embedding.
        base_channels: channels of the first level; level i has ``base_channels*channel_mult[i]``.
        channel_mult: one multiplier per resolution level (each level after the first halves H, W).
        num_res_blocks: residual blocks per level on the way down (one more on the way up).
        attn_resolutions: spatial sizes (e.g. ``[16, 8]``) at which self-attention runs
            (None: the coarsest level's, whatever the image size); the middle block always
            has one attention layer.
        dropout: dropout inside residual blocks.
        num_head_channels: channels per attention head.
        norm_groups: GroupNorm groups (reduced to a divisor of the channel count if needed).
        channels_last: run convolutions in ``torch.channels_last`` memory format.
        text_width, text_layers, text_heads: the prompt encoder's width, transformer layers
            and heads, for a sequence condition (a learned encoder's token embeddings, or the
            projection of a frozen encoder's embeddings, then ``text_layers`` layers).
        text_pooled: add the prompt's mean encoding to the time embedding.
        text_layout: at every level, a :class:`omnidiff.nn.Layout` (position queries over the
            prompt) makes the residual blocks' embedding per position: words reach the place
            they name without going through the noisy features.
    """

    def __init__(self, in_channels: int, image_size: int | Sequence[int], cond: Any = None,
                 base_channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attn_resolutions: Sequence[int] | None = (),
                 dropout: float = 0.0, num_head_channels: int = 32, norm_groups: int = 32,
                 channels_last: bool = False, text_width: int = 128, text_layers: int = 2,
                 text_heads: int = 4, text_pooled: bool = True, text_layout: bool = False):
        super().__init__()
        hw = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        channel_mult = tuple(int(m) for m in channel_mult)
        resolutions = _resolutions(hw, channel_mult)
        attn_at = _attention_at(attn_resolutions, resolutions)
        self.in_channels = in_channels
        self.image_size = hw
        self.cond_spec = spec = _image_cond(cond)
        self.channels_last = channels_last
        emb_dim = 4 * base_channels
        self.time_embed = TimeEmbedding(emb_dim, freq_dim=base_channels)
        self.class_embed = ConditionEmbedding(spec, emb_dim) if spec.conditional else None
        self.text = (SequenceConditioning(spec, text_width, text_layers, text_heads)
                     if sequence_field(spec)[1] is not None else None)
        self.text_pool = (nn.Linear(text_width, emb_dim)
                          if self.text is not None and text_pooled else None)
        self.layouts = (nn.ModuleList(Layout(emb_dim, text_width,
                                             _heads(emb_dim, num_head_channels))
                                      for _ in resolutions)
                        if self.text is not None and text_layout else None)
        make = _Blocks(emb_dim, dropout, norm_groups, num_head_channels,
                       None if self.text is None else text_width)
        widths = [base_channels * m for m in channel_mult]  # channels of each level
        attend = [r in attn_at for r in resolutions]  # attention at each level

        self.conv_in = nn.Conv2d(in_channels, base_channels, 3, padding=1)
        ch, skips = self._build_down(make, base_channels, widths, attend, num_res_blocks)
        self._build_middle(make, ch)
        ch = self._build_up(make, ch, skips, widths, attend, num_res_blocks)
        self.norm_out = _norm(ch, norm_groups)
        self.conv_out = _zero(nn.Conv2d(ch, in_channels, 3, padding=1))
        if channels_last:
            self.to(memory_format=torch.channels_last)

    def _build_down(self, make: _Blocks, ch: int, widths: list[int], attend: list[bool],
                    num_res_blocks: int) -> tuple[int, list[int]]:
        """``self.down`` (one :class:`Level` per resolution) and ``self.downsample``.

        Returns the channels at the bottom and those of every skip connection, in the order
        they are made (conv_in's output first).
        """
        skips = [ch]
        self.down = nn.ModuleList()
        self.downsample = nn.ModuleList()
        for i, out in enumerate(widths):
            path = [ch] + [out] * num_res_blocks  # channels before and after each block
            self.down.append(make.level(zip(path, path[1:]), attend[i]))
            ch = path[-1]
            skips += path[1:]
            last = i == len(widths) - 1
            self.downsample.append(nn.Identity() if last else Downsample(ch))
            if not last:
                skips.append(ch)
        return ch, skips

    def _build_middle(self, make: _Blocks, ch: int) -> None:
        """The bottom of the U: ``mid1`` -> ``mid_attn`` -> ``mid2``, ``ch`` channels."""
        self.mid1 = make.res(ch, ch)
        self.mid_attn = make.attn(ch)
        self.mid2 = make.res(ch, ch)

    def _build_up(self, make: _Blocks, ch: int, skips: list[int], widths: list[int],
                  attend: list[bool], num_res_blocks: int) -> int:
        """``self.up`` (one :class:`Level` per resolution, lowest first; each block takes one
        skip connection, popped from ``skips``) and ``self.upsample``; returns the channels
        at the top."""
        self.up = nn.ModuleList()
        self.upsample = nn.ModuleList()
        for i, out in reversed(list(enumerate(widths))):
            path = [ch] + [out] * (num_res_blocks + 1)
            pairs = [(cin + skips.pop(), cout) for cin, cout in zip(path, path[1:])]
            self.up.append(make.level(pairs, attend[i]))
            ch = path[-1]
            self.upsample.append(Upsample(ch) if i > 0 else nn.Identity())
        return ch

    def encode_cond(self, cond: Any) -> Any:
        """``cond`` with its prompt encoded (once per sampling run; see the module doc)."""
        return cond if self.text is None else self.text.encode_cond(cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, C, H, W), t: (B,) in [0, 1], cond: (B,) long labels (or the spec's tensors,
        sequences, named sets), drop: (B,) bool -> (B, C, H, W)."""
        b = x.shape[0]
        if t.ndim == 0:
            t = t.expand(b)
        emb = self.time_embed(t)  # (B, E)
        if self.class_embed is not None:
            emb = emb + self.class_embed(cond, drop, b, x.device)
        text = None if self.text is None else self.text(cond, drop, b, x.device)
        if self.text_pool is not None:  # text: (B, L, W), (B, L)
            emb = emb + self.text_pool(pool(*text).to(self.text_pool.weight.dtype))  # (B, E)
        embs = self._level_embeddings(emb, text, x.dtype)  # one per level, top first
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)

        h = self.conv_in(x)
        hs = [h]
        for level, down, e in zip(self.down, self.downsample, embs):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(h, e), text)
                hs.append(h)
            if not isinstance(down, nn.Identity):
                h = down(h)
                hs.append(h)
        h = self.mid2(self.mid_attn(self.mid1(h, embs[-1]), text), embs[-1])
        for level, up, e in zip(self.up, self.upsample, reversed(embs)):
            for block, attn in zip(level.blocks, level.attns):
                h = attn(block(torch.cat([h, hs.pop()], dim=1), e), text)
            h = up(h)
        return self.conv_out(_gn_silu(self.norm_out, h))

    def _level_embeddings(self, emb: torch.Tensor, text: Any, dtype: torch.dtype
                          ) -> list[torch.Tensor]:
        """``SiLU(emb)`` for each level, top first (every block applies Linear(SiLU(emb))):
        ``(B, E)``, or ``(B, E, H_i, W_i)`` with the prompt's layout added per position."""
        if self.layouts is None:
            return [F.silu(emb).to(dtype)] * len(self.down)
        h, w = self.image_size
        return [F.silu(emb[:, :, None, None] + layout((h >> i, w >> i), *text)).to(dtype)
                for i, layout in enumerate(self.layouts)]  # (B, E, H_i, W_i) each


def build_unet(event_shape: Sequence[int], cond: Any = None, *, compile: bool = False,
               **cfg) -> UNet:
    """A :class:`UNet` for images of ``event_shape = (C, H, W)``; ``compile`` runs
    ``nn.Module.compile`` in place (state-dict keys stay unprefixed)."""
    if len(event_shape) != 3:
        raise ValueError(f"the image U-Net needs event_shape (C, H, W), got {tuple(event_shape)}")
    c, h, w = (int(s) for s in event_shape)
    known = ("base_channels", "channel_mult", "num_res_blocks", "attn_resolutions", "dropout",
             "num_head_channels", "norm_groups", "channels_last", "text_width", "text_layers",
             "text_heads", "text_pooled", "text_layout")
    unknown = set(cfg) - set(known)
    if unknown:
        raise TypeError(f"unknown image model option(s) {sorted(unknown)}; known: "
                        f"{', '.join(known)}, compile")
    net = UNet(c, (h, w), cond, **cfg)
    if compile:
        net.compile()
    return net
