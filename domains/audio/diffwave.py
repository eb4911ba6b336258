"""A DiffWave-style waveform denoiser (Kong et al. 2021, "DiffWave", sec. 3 and fig. 2).

A stack of residual layers over the waveform's ``C`` channels: each adds the diffusion-time
embedding, runs a bidirectional (non-causal) dilated convolution with dilation
``2 ** (i % cycle)``, adds the dense condition, and gates ``tanh(filter) * sigmoid(gate)``; a
1x1 convolution splits the result into the residual and a skip path. The skips are summed,
scaled by ``1 / sqrt(layers)`` and projected to the waveform by a zero-initialised output layer
(an untrained network predicts 0).

Conditions (any combination, declared by the condition specification):

* a class label — its embedding (with a learned null class) is added to the time embedding, so
  it reaches every layer with it (:class:`omnidiff.nn.Conditioning`);
* a sequence (a prompt) — encoded once per prompt (:class:`omnidiff.nn.SequenceConditioning`);
  its mean over tokens joins the time embedding (``text_pooled``), and every ``text_cross``-th
  residual layer reads the whole prompt by cross-attention at a pooled rate of ``text_rate``
  samples per token (:class:`omnidiff.nn.PooledCrossAttention`; 0: none);
* a mel spectrogram ``(n_mels, frames)`` — upsampled to the waveform's rate by transposed 2D
  convolutions whose strides multiply to the hop length (:func:`upsample_strides`), projected
  and added in every layer; a learned null spectrogram column stands in where ``drop`` is set.

Time enters as the core's continuous ``t`` in [0, 1], so every sampler and step grid runs on one
trained model. Called as ``net(x_t, t, cond=None, drop=None) -> (B, 1, samples)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.core.conditions import (
    CondSpec,
    LabelCond,
    NamedCond,
    NoCond,
    SequenceCond,
    TensorCond,
    as_cond_spec,
)
from omnidiff.nn import (
    Conditioning,
    PooledCrossAttention,
    SequenceConditioning,
    null_where,
    pool,
    sequence_field,
)

from .mel import MelProjection
from .prior import EnergyPrior
from .vocoder_hooks import VocoderHooks

__all__ = ["DiffWave", "MelUpsampler", "build_diffwave", "mel_field", "upsample_strides"]

EMBED_DIM = 512  # DiffWave's diffusion-embedding width


def upsample_strides(hop: int, max_stride: int = 16) -> list[int]:
    """Strides whose product is ``hop``, each at most ``max_stride`` where the prime factors
    allow, as few as possible (largest first): 256 -> [16, 16], 300 -> [15, 5, 4], 50 -> [10, 5].

    A prime factor above ``max_stride`` becomes a stride of its own.
    """
    if not isinstance(hop, int) or hop < 1:
        raise ValueError(f"the hop length must be a positive integer, got {hop!r}")
    primes, n, p = [], hop, 2
    while p * p <= n:
        while n % p == 0:
            primes.append(p)
            n //= p
        p += 1
    if n > 1:
        primes.append(n)
    strides: list[int] = []
    for q in sorted(primes, reverse=True):  # first-fit decreasing into bins of max_stride
        for i, s in enumerate(strides):
            if s * q <= max_stride:
                strides[i] = s * q
                break
        else:
            strides.append(q)
    return sorted(strides, reverse=True) or [1]


def _interpolating(conv: nn.ConvTranspose2d, stride: int) -> nn.ConvTranspose2d:
    """Start a ``3 x (2s + 1)`` transposed convolution as linear interpolation in time (a
    triangle whose overlapping copies sum to 1) that leaves the mel bins apart. PyTorch's
    default initialisation instead makes the upsampled spectrogram a near-constant offset with
    a ~0.01 spread; the network then takes thousands of steps to start reading it."""
    ramp = torch.arange(2 * stride + 1, dtype=torch.float32) - stride
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 1] = 1.0 - ramp.abs() / stride
        conv.bias.zero_()
    return conv


class MelUpsampler(nn.Module):
    """``(B, n_mels, frames) -> (B, n_mels, frames * hop)``: one transposed 2D convolution per
    stride (kernel ``3 x (2s + 1)`` over mel bins and time, started as linear interpolation;
    DiffWave's ``2s`` has no centre tap and shifts every frame by half a stride), each followed
    by a leaky ReLU (0.4)."""

    def __init__(self, hop: int):
        super().__init__()
        self.hop = hop
        self.strides = upsample_strides(hop)
        self.convs = nn.ModuleList(
            _interpolating(nn.ConvTranspose2d(1, 1, (3, 2 * s + 1), stride=(1, s),
                                              padding=(1, 0)), s)
            for s in self.strides if s > 1)

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        frames = mel.shape[-1]
        h = mel.unsqueeze(1)  # (B, 1, M, F)
        for conv, s in zip(self.convs, [s for s in self.strides if s > 1]):
            length = h.shape[-1] * s
            # output (F + 1) * s + 1; from s on, input frame i is centred on sample i * s (as
            # the STFT centres frame i on sample i * hop)
            h = F.leaky_relu(conv(h)[..., s:s + length], 0.4)  # (B, 1, M, length)
        return h.squeeze(1)[..., :frames * self.hop]  # (B, M, F * hop)


class ResidualLayer(nn.Module):
    """One DiffWave layer. x: (B, C, T), temb: (B, C, 1), cond: (B, M, T) or None ->
    ((B, C, T) residual output, (B, C, T) skip)."""

    def __init__(self, channels: int, dilation: int, cond_channels: int):
        super().__init__()
        self.dilated = nn.Conv1d(channels, 2 * channels, 3, padding=dilation, dilation=dilation)
        self.cond = nn.Conv1d(cond_channels, 2 * channels, 1) if cond_channels else None
        self.out = nn.Conv1d(channels, 2 * channels, 1)
        for conv in (self.dilated, self.cond, self.out):
            if conv is not None:
                nn.init.kaiming_normal_(conv.weight)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, cond: torch.Tensor | None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.dilated(x + temb)  # (B, 2C, T)
        if cond is not None:
            y = y.add_(self.cond(cond))  # in place: a convolution's output is not saved
        filt, gate = y.chunk(2, dim=1)  # (B, C, T) each
        residual, skip = self.out(torch.tanh(filt) * torch.sigmoid(gate)).chunk(2, dim=1)
        return torch.add(x, residual).mul_(1 / math.sqrt(2.0)), skip


def mel_field(spec: CondSpec) -> tuple[str | None, TensorCond | None]:
    """The dense (variable-length) spectrogram part of a condition specification:
    ``(field name or None for the whole condition, its spec)``, ``(None, None)`` without one."""
    if isinstance(spec, TensorCond) and spec.variable_shape:
        return None, spec
    if isinstance(spec, NamedCond):
        dense = [(k, s) for k, s in spec.fields if isinstance(s, TensorCond) and s.variable_shape]
        if len(dense) > 1:
            raise ValueError(f"DiffWave takes one spectrogram condition; got {spec.describe()}")
        if dense:
            return dense[0]
    return None, None


def _check_spec(spec: CondSpec) -> None:
    parts = [s for _, s in spec.fields] if isinstance(spec, NamedCond) else [spec]
    for s in parts:
        ok = isinstance(s, (NoCond, LabelCond, SequenceCond)) or (
            isinstance(s, TensorCond) and len(s.shape) == 2 and s.shape[1] is None)
        if not ok:
            raise ValueError(f"DiffWave takes class labels, a prompt and/or a spectrogram "
                             f"(n_mels, frames); got {s.describe()}")


class DiffWave(VocoderHooks, nn.Module):
    """DiffWave over waveforms ``(B, 1, samples)`` (or any ``in_channels`` signals in time:
    the latents of an audio autoencoder).

    Args:
        cond: the condition specification: none, labels, a spectrogram
            ``TensorCond((n_mels, None))``, or a named set of a label and a spectrogram.
        hop: samples per spectrogram frame (needed with a spectrogram condition).
        layers: residual layers (DiffWave base 30, SC09 unconditional 36).
        channels: residual channels (base 64, unconditional 256).
        cycle: dilation cycle length: layer i dilates by ``2 ** (i % cycle)`` (base 10).
        in_channels: channels of the signal (1 for a waveform).
        text_width, text_layers, text_heads: the prompt encoder (a sequence condition only).
        text_pooled: add the prompt's mean encoding to the time embedding.
        text_cross: cross-attention to the prompt after every ``text_cross``-th layer (0:
            none), at ``text_rate`` samples per attention token.
        text_bag: the prompt's bag of words (:class:`omnidiff.nn.WordBag`) joins the time
            embedding too; with ``text_pooled=False`` and no ``text_cross`` it is all the
            network reads of the prompt, and no encoder is built.
        text_bag_gain: the bag's vectors learn this many times faster (``WordBag``'s gain).
        prior: ``none`` (noise N(0, I)) or ``energy`` (PriorGrad: the noise follows the
            spectrogram's frame energy, :mod:`.prior`; a spectrogram condition only), with
            ``prior_gain`` (fitted on the training data), ``prior_range_db`` (the log-mel's
            range, ``-data.mel.min_db``) and ``prior_floor`` (the least scale).
        project: iterations of the mel-consistency projection of every sample (0: none;
            a spectrogram condition only) with ``mel``, the data's sample rate and spectrogram
            settings (filled in from the data), :class:`.mel.MelProjection`.
    """

    def __init__(self, cond: Any = None, hop: int | None = None, layers: int = 30,
                 channels: int = 64, cycle: int = 10, in_channels: int = 1,
                 text_width: int = 128, text_layers: int = 2, text_heads: int = 4,
                 text_pooled: bool = True, text_cross: int = 0, text_rate: int = 50,
                 text_bag: bool = False, text_bag_gain: float = 1.0, prior: str = "none",
                 prior_gain: float | None = None, prior_range_db: float | None = None,
                 prior_floor: float = 0.01, project: int = 0, mel: dict | None = None):
        super().__init__()
        self.cond_spec = spec = as_cond_spec(cond)
        _check_spec(spec)
        self.mel_key, mel_spec = mel_field(spec)
        self.has_mel = mel_spec is not None
        self.prior = EnergyPrior.of(prior, hop if self.has_mel else None, prior_gain,
                                    prior_range_db, prior_floor)
        self.projection = MelProjection.of(project, mel) if self.has_mel else None
        if layers < 1 or channels < 1 or cycle < 1:
            raise ValueError(f"model.layers, model.channels and model.cycle must be >= 1; got "
                             f"{layers}, {channels}, {cycle}")
        n_mels = int(mel_spec.shape[0]) if self.has_mel else 0
        if self.has_mel:
            if not hop:
                raise ValueError("a spectrogram-conditioned DiffWave needs the hop length "
                                 "(model.hop, set from data.mel.hop_length)")
            self.upsampler = MelUpsampler(int(hop))
            self.null_mel = nn.Parameter(torch.zeros(n_mels, 1))  # (M, 1), any frame count
        self.hop = int(hop) if hop else None
        self.layers, self.channels, self.cycle = layers, channels, cycle
        self.input = nn.Conv1d(in_channels, channels, 1)
        nn.init.kaiming_normal_(self.input.weight)
        # time + the global (label) condition; a spectrogram alone has no global part
        self.embed = Conditioning(NoCond() if self.mel_key is None and self.has_mel else spec,
                                  EMBED_DIM)
        self._text(spec, text_width, text_layers, text_heads, text_pooled, text_cross,
                   text_rate, text_bag, text_bag_gain)
        self.time_proj = nn.Linear(EMBED_DIM, layers * channels)  # every layer's projection
        self.res = nn.ModuleList(ResidualLayer(channels, 2 ** (i % cycle), n_mels)
                                 for i in range(layers))
        self.skip_proj = nn.Conv1d(channels, channels, 1)
        nn.init.kaiming_normal_(self.skip_proj.weight)
        self.output = nn.Conv1d(channels, in_channels, 1)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def _text(self, spec: CondSpec, width: int, layers: int, heads: int, pooled: bool,
              cross: int, rate: int, bag: bool, bag_gain: float = 1.0) -> None:
        """The prompt's encoder, its pooled projection and the cross-attention layers."""
        has_text = sequence_field(spec)[1] is not None
        if has_text and not (pooled or cross or bag):
            raise ValueError("model.text_pooled=false with no text_cross and no text_bag reads "
                             "nothing of the prompt: turn one of them on")
        self.text = (SequenceConditioning(spec, width, layers, heads,
                                          bag_dim=EMBED_DIM if bag else None,
                                          encoder=bool(pooled or cross), bag_gain=bag_gain)
                     if has_text else None)
        self.text_pool = nn.Linear(width, EMBED_DIM) if has_text and pooled else None
        every = int(cross) if has_text else 0
        self.cross = nn.ModuleDict({
            str(i): PooledCrossAttention(self.channels, width,
                                         _cross_heads(self.channels, heads), int(rate))
            for i in range(self.layers) if every and (i + 1) % every == 0})

    def encode_cond(self, cond: Any) -> Any:
        """``cond`` with its prompt encoded (once per sampling run)."""
        return cond if self.text is None else self.text.encode_cond(cond)

    @property
    def receptive_field(self) -> int:
        """Samples that one output sample sees (kernel 3, both sides)."""
        return 1 + 2 * sum(2 ** (i % self.cycle) for i in range(self.layers))

    def _mel(self, cond: Any, drop: torch.Tensor | None, batch: int, length: int
             ) -> torch.Tensor | None:
        """The upsampled spectrogram (B, M, T), its null where ``drop`` or missing."""
        if not self.has_mel:
            return None
        mel = cond if self.mel_key is None or cond is None else cond[self.mel_key]
        if mel is None:  # the null condition: the learned column over the waveform's frames
            mel = self.null_mel.expand(batch, -1, max(1, length // self.hop))
        mel = null_where(drop, mel.to(self.null_mel.dtype), self.null_mel)  # (B, M, F)
        if mel.shape[-1] * self.hop != length:
            raise ValueError(f"the spectrogram has {mel.shape[-1]} frames, {mel.shape[-1]} x "
                             f"hop {self.hop} = {mel.shape[-1] * self.hop} samples, but the "
                             f"waveform has {length}")
        return self.upsampler(mel)  # (B, M, T)

    def _global(self, cond: Any) -> Any:
        """The part of ``cond`` that :class:`Conditioning` embeds (labels), or None."""
        if isinstance(self.cond_spec, NamedCond):
            return None if cond is None else {k: v for k, v in cond.items() if k != self.mel_key}
        return None if self.has_mel else cond

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, Cin, T), t: (B,), cond: labels (B,) / mel (B, M, T / hop) / a dict of both,
        drop: (B,) bool -> (B, Cin, T)."""
        b, _, length = x.shape
        emb = self.embed(t, self._global(cond), drop, b)  # (B, 512)
        text = (None if self.text is None or self.text.encoder is None
                else self.text(cond, drop, b, x.device))  # (B, L, W), (B, L): the encoding
        if self.text_pool is not None:  # text: (B, L, W), (B, L)
            emb = emb + self.text_pool(pool(*text).to(self.text_pool.weight.dtype))  # (B, 512)
        if self.text is not None and self.text.words is not None:  # the bag of words
            emb = emb + self.text.bag(cond, drop, b, x.device).to(emb.dtype)  # (B, 512)
        emb = F.silu(emb)
        temb = self.time_proj(emb).to(x.dtype).view(b, self.layers, self.channels, 1)
        mel = self._mel(cond, drop, b, length)  # (B, M, T) or None
        h = F.relu(self.input(x))  # (B, C, T)
        skips = None
        for i, layer in enumerate(self.res):
            h, skip = layer(h, temb[:, i], mel)  # (B, C, T) each
            if str(i) in self.cross:
                h = self.cross[str(i)](h, *text)  # (B, C, T)
            skips = skip.clone() if skips is None else skips.add_(skip)  # in place, no stack
        h = F.relu(self.skip_proj(skips * (1 / math.sqrt(self.layers))))  # (B, C, T)
        return self.output(h)  # (B, Cin, T)


def _cross_heads(channels: int, heads: int) -> int:
    """The most heads up to ``heads`` that divide ``channels``."""
    return max(h for h in range(1, heads + 1) if channels % h == 0)


def build_diffwave(event_shape: tuple[int, ...], cond: Any = None, *, compile: bool = False,
                   **cfg: Any) -> DiffWave:
    """A :class:`DiffWave` for signals of ``event_shape = (channels, samples)``: mono
    waveforms (1, samples), or an audio autoencoder's latents; ``compile`` runs
    ``nn.Module.compile`` in place."""
    if len(event_shape) != 2:
        raise ValueError(f"DiffWave needs signals in time, event_shape (channels, samples); got "
                         f"{tuple(event_shape)}")
    known = {"hop", "layers", "channels", "cycle", "text_width", "text_layers", "text_heads",
             "text_pooled", "text_cross", "text_rate", "text_bag",
             "text_bag_gain", "prior", "prior_gain", "prior_range_db", "prior_floor",
             "project", "mel"}
    unknown = set(cfg) - known
    if unknown:
        raise TypeError(f"unknown audio model option(s) {sorted(unknown)}; known: "
                        f"{', '.join(sorted(known | {'compile'}))}")
    net = DiffWave(cond, in_channels=int(event_shape[0]), **cfg)
    if compile:
        net.compile()
    return net
