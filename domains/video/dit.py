"""A diffusion transformer over spacetime patches (DiT, Peebles & Xie 2023, for video as in
Latte, Ma et al. 2024, and Open-Sora's STDiT), built from :mod:`omnidiff.nn`'s blocks.

A clip ``(T, C, H, W)`` is cut into tubelets of ``patch = (pt, ph, pw)`` and embedded as
``T' * H' * W'`` spacetime tokens. Positions: fixed 3D sine-cosine embeddings added to the
tokens (``pos="sincos"``), or 3D rotary embeddings on queries and keys (``pos="rope"``, the
head dimension split across time, height and width as in CogVideoX). Attention layout:
``"joint"`` (every token attends to every token of the clip) or ``"factorised"`` (blocks
alternate between attention within each frame and attention along time at each spatial
position: Latte's variant 1; cost linear in ``T'``). Every block is DiT's adaLN-Zero block
conditioned on the diffusion time and the class (a null class for classifier-free guidance).
A sequence condition (a prompt) is encoded once (:class:`omnidiff.nn.SequenceConditioning`) and
read by cross-attention in every block (PixArt-alpha, Chen et al. 2023), its pooled encoding
added to the conditioning vector; under the factorised layout every frame's (or position's)
tokens read the whole prompt. ``text_blocks="spatial"`` (factorised layout) leaves the
cross-attention out of the blocks along time: there every spatial position of every clip would
project the prompt again (``B * H' * W'`` rows of keys and values; 8 blocks on 16x16 clips in
2x2x2 tubelets: 0.98 s a training step on one CPU thread against 0.73 s), and the blocks
within frames have already written what they read into the tokens (the pooled prompt still
modulates every block). ``text_bag`` adds the prompt's bag of words
(:class:`omnidiff.nn.WordBag`) to the conditioning vector too; ``text_pooled=False`` leaves the
pooled encoding out of it (as in the image and audio networks); ``text_blocks="none"`` has no
block cross-attend, and with ``text_pooled=False`` too the network reads the bag alone and
builds no text encoder.

Frame conditioning (the condition fields ``frames (T, C, H, W)`` and ``mask (T,)``, 1 where
a frame is given) enters as input channels: the given frames (zero elsewhere) and the mask
are concatenated to ``x_t`` before the patch embedding, so one network generates (mask all
zero: also its null condition), continues (the first ``k`` frames) or fills in frames.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
from torch import nn

from omnidiff.core.conditions import LabelCond, NamedCond, NoCond, as_cond_spec
from omnidiff.nn import (
    Conditioning,
    FinalLayer,
    PatchEmbed,
    Rotary,
    SeamConv,
    SequenceConditioning,
    TransformerBlock,
    pool,
    sequence_field,
    sincos_embedding,
    token_grid,
    unpatchify,
)

__all__ = ["VideoDiT", "PRESETS", "build_dit", "frame_fields"]

# name: (depth, width, heads) — DiT's S / B / L / XL (Peebles & Xie 2023, Table 1) and a
# CPU-sized one
PRESETS: dict[str, tuple[int, int, int]] = {
    "tiny": (6, 96, 4),
    "S": (12, 384, 6),
    "B": (12, 768, 12),
    "L": (24, 1024, 16),
    "XL": (28, 1152, 16),
}
POSITIONS = ("sincos", "rope")
LAYOUTS = ("joint", "factorised")
TEXT_BLOCKS = ("all", "spatial", "none")


def frame_fields(spec: Any) -> tuple[bool, bool]:
    """(has a class label, has frame conditioning) of a condition specification."""
    spec = as_cond_spec(spec)
    if isinstance(spec, NamedCond):
        names = spec.field_specs
        return "label" in names, "frames" in names
    return isinstance(spec, LabelCond), False


def _choice(value: str, choices: Sequence[str], key: str) -> str:
    if value not in choices:
        raise ValueError(f"model.{key}={value!r} is not one of {', '.join(choices)}")
    return value


class VideoDiT(nn.Module):
    """``net(x_t (B, T, C, H, W), t (B,), cond, drop) -> (B, T, C, H, W)``."""

    def __init__(self, event_shape: Sequence[int], cond_spec: Any = None, *,
                 size: str = "tiny", depth: int | None = None, width: int | None = None,
                 heads: int | None = None, patch: Sequence[int] = (1, 4, 4),
                 pos: str = "sincos", attention: str = "joint", mlp_ratio: float = 4.0,
                 dropout: float = 0.0, text_width: int | None = None, text_layers: int = 2,
                 text_blocks: str = "all", text_bag: bool = False, text_pooled: bool = True,
                 text_bag_gain: float = 1.0, seam_conv: bool = False):
        super().__init__()
        if len(event_shape) != 4:
            raise ValueError(f"a video event is (T, C, H, W), got {tuple(event_shape)}")
        if size not in PRESETS:
            raise ValueError(f"model.size={size!r} is not one of {', '.join(PRESETS)}")
        d0, w0, h0 = PRESETS[size]
        self.depth, self.width, self.heads = depth or d0, width or w0, heads or h0
        self.pos = _choice(pos, POSITIONS, "pos")
        self.attention = _choice(attention, LAYOUTS, "attention")
        self.frames, self.channels = int(event_shape[0]), int(event_shape[1])
        self.size_hw = (int(event_shape[2]), int(event_shape[3]))
        self.patch = tuple(int(p) for p in patch)
        if len(self.patch) != 3:
            raise ValueError(f"model.patch needs three sizes (time, height, width), got "
                             f"{list(self.patch)}")
        self.grid = token_grid((self.frames, *self.size_hw), self.patch)  # (T', H', W')
        if self.width % self.heads:
            raise ValueError(f"model.width={self.width} must be divisible by "
                             f"model.heads={self.heads}")
        self.spec = as_cond_spec(cond_spec) if cond_spec is not None else NoCond()
        self.has_label, self.has_frames = frame_fields(self.spec)
        in_ch = self.channels * (2 if self.has_frames else 1) + int(self.has_frames)
        self.embed = PatchEmbed(in_ch, self.width, self.patch, ndim=3)
        fields = None
        if isinstance(self.spec, NamedCond):  # only its label is global: frames are channels
            fields = ["label"] if self.has_label else []
        self.cond = Conditioning(self.spec, self.width, fields=fields)
        text_width = int(text_width or self.width)
        self.text_blocks = _choice(text_blocks, TEXT_BLOCKS, "text_blocks")
        self.text = self._text_conditioning(text_width, text_layers, text_bag, text_pooled,
                                            text_bag_gain)
        self.text_pool = (nn.Linear(text_width, self.width)
                          if self.text is not None and text_pooled else None)
        self.blocks = nn.ModuleList(
            TransformerBlock(self.width, self.heads, mlp_ratio, dropout,
                             context_dim=text_width if self._reads_text(i) else None)
            for i in range(self.depth))
        self.final = FinalLayer(self.width, self.channels * self.patch[0] * self.patch[1]
                                * self.patch[2])
        self.seam = SeamConv(self.channels, 3) if seam_conv else None
        self._positions()

    def _text_conditioning(self, width: int, layers: int, bag: bool, pooled: bool,
                           bag_gain: float) -> SequenceConditioning | None:
        """The prompt's encoder and bag of words (None without a sequence condition); no
        encoder when nothing reads it (``text_blocks=none``, ``text_pooled=False``)."""
        if self.text_blocks == "spatial" and self.attention != "factorised":
            raise ValueError("model.text_blocks=spatial needs model.attention=factorised (the "
                             "joint layout has no blocks within frames)")
        if sequence_field(self.spec)[1] is None:
            return None
        encoder = pooled or self.text_blocks != "none"
        if not encoder and not bag:
            raise ValueError("model.text_blocks=none with text_pooled=false and no text_bag "
                             "reads nothing of the prompt; set model.text_bag=true")
        return SequenceConditioning(self.spec, width, layers, self.heads,
                                    bag_dim=self.width if bag else None, encoder=encoder,
                                    bag_gain=bag_gain)

    def _reads_text(self, i: int) -> bool:
        """Whether block ``i`` cross-attends to the prompt (odd blocks of the factorised layout
        run along time)."""
        along_time = self.attention == "factorised" and i % 2 == 1
        if self.text is None or self.text_blocks == "none":
            return False
        return not (self.text_blocks == "spatial" and along_time)

    def _positions(self) -> None:
        tt, hh, ww = self.grid
        head_dim = self.width // self.heads
        if self.pos == "sincos":
            d6 = self.width - self.width % 6  # three equal even parts; the rest stays zero
            emb = torch.nn.functional.pad(sincos_embedding(self.grid, d6), (0, self.width - d6))
            self.register_buffer("pos_embed", emb[None], persistent=False)  # (1, L, D)
            self.rope_joint = self.rope_space = self.rope_time = None
        else:
            self.pos_embed = None
            self.rope_joint = Rotary(self.grid, head_dim)  # over (T', H', W')
            self.rope_space = Rotary((hh, ww), head_dim)  # within a frame
            self.rope_time = Rotary((tt,), head_dim)  # along time

    def _inputs(self, x: torch.Tensor, cond: Any, drop: torch.Tensor | None) -> torch.Tensor:
        """x_t with the given frames and their mask as extra channels: (B, C', T, H, W)."""
        if self.has_frames:
            b = x.shape[0]
            given = torch.zeros(b, self.frames, device=x.device, dtype=x.dtype)  # (B, T)
            frames = torch.zeros_like(x)  # (B, T, C, H, W)
            if cond is not None:
                given = cond["mask"].to(x.dtype)  # (B, T)
                frames = cond["frames"].to(x.dtype)  # (B, T, C, H, W)
            if drop is not None:
                given = given * (~drop).to(x.dtype)[:, None]  # the null condition: no frames
            m = given[:, :, None, None, None]  # (B, T, 1, 1, 1)
            mask_map = m.expand(-1, -1, 1, *self.size_hw)  # (B, T, 1, H, W)
            x = torch.cat([x, frames * m, mask_map], dim=2)  # (B, T, 2C + 1, H, W)
        return x.transpose(1, 2)  # (B, C', T, H, W)

    def _block(self, i: int, h: torch.Tensor, c: torch.Tensor, text: Any) -> torch.Tensor:
        block, (b, n, d) = self.blocks[i], h.shape
        if self.attention == "joint":
            return block(h, c, self.rope_joint, text=text)  # (B, L, D)
        tt, s = self.grid[0], self.grid[1] * self.grid[2]
        if i % 2 == 0:  # spatial: the tokens of one frame attend to each other
            hs = h.reshape(b * tt, s, d)  # (B T', S, D)
            out = block(hs, c.repeat_interleave(tt, 0), self.rope_space,
                        text=_repeat(text, tt))  # (B T', S, D)
            return out.reshape(b, n, d)  # (B, L, D)
        ht = h.reshape(b, tt, s, d).transpose(1, 2).reshape(b * s, tt, d)  # (B S, T', D)
        text = _repeat(text, s) if block.cross is not None else None
        out = block(ht, c.repeat_interleave(s, 0), self.rope_time, text=text)  # (B S, T', D)
        return out.reshape(b, s, tt, d).transpose(1, 2).reshape(b, n, d)  # (B, L, D)

    def encode_cond(self, cond: Any) -> Any:
        """``cond`` with its prompt encoded (once per sampling run)."""
        return cond if self.text is None else self.text.encode_cond(cond)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        b = x.shape[0]  # x: (B, T, C, H, W)
        c = self.cond(t, cond, drop, b)  # (B, D): time + label (other fields are not read)
        text = (None if self.text is None or self.text.encoder is None
                else self.text(cond, drop, b, x.device))  # (B, Lc, Dc), (B, Lc)
        if self.text_pool is not None:  # the pooled prompt
            c = c + self.text_pool(pool(*text).to(self.text_pool.weight.dtype))  # (B, D)
        if self.text is not None and self.text.words is not None:  # the prompt's bag of words
            c = c + self.text.bag(cond, drop, b, x.device).to(c.dtype)  # (B, D)
        h = self.embed(self._inputs(x, cond, drop))  # (B, L, D), L = T' H' W'
        if self.pos_embed is not None:
            h = h + self.pos_embed.to(h.dtype)  # (B, L, D)
        for i in range(self.depth):
            h = self._block(i, h, c, text)  # (B, L, D)
        out = self.final(h, c)  # (B, L, pt ph pw C)
        y = unpatchify(out, self.patch, (self.frames, *self.size_hw), self.channels)
        if self.seam is not None:
            y = self.seam(y)  # (B, C, T, H, W)
        return y.transpose(1, 2)  # (B, T, C, H, W)


def _repeat(text: Any, k: int) -> Any:
    """``(context, mask)`` with every row repeated ``k`` times (rows of a factorised layout)."""
    return None if text is None else tuple(v.repeat_interleave(k, 0) for v in text)


def build_dit(event_shape: tuple[int, ...], cond_spec: Any, compile: bool = False,
              **cfg: Any) -> nn.Module:
    """The domain's network factory (``model`` config keys: size, depth, width, heads, patch,
    pos, attention, mlp_ratio, dropout, text_width, text_layers, text_blocks, text_bag,
    text_pooled, text_bag_gain, seam_conv, compile)."""
    net = VideoDiT(event_shape, cond_spec, **cfg)
    if compile:
        net.compile()
    return net
