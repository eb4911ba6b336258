"""A spectral-domain waveform denoiser: the noisy waveform's STFT frames in, a ConvNeXt stack
over frames, the denoised STFT out through the inverse STFT (as Vocos, Siuzdenko 2023, and
RFWave, Liu et al. 2024, work on the complex spectrogram rather than on samples).

A sample-rate network (DiffWave) must learn oscillators: narrow filters that turn noise into a
sinusoid of the pitch a spectrogram asks for, which takes many thousands of steps. Here every
frequency bin is a channel, so "this mel band holds this much energy" is a per-frame linear map,
and a frame's partials and their phase advance from one frame to the next are local. The
diffusion stays on the waveform: the network reads ``stft(x_t)`` and writes ``istft(.)``, so
every sampler, grid, guidance and the energy prior (:mod:`.prior`) work unchanged.

Shapes: a waveform ``(B, 1, F * hop)`` has ``F + 1`` centred STFT frames of ``K = n_fft / 2 + 1``
bins, ``n_fft`` the power of two at least ``4 * hop`` (a Hann window overlapping 4x or more);
the spectrogram condition ``(B, M, F)`` is repeated once at the end to ``F + 1`` frames.
Called as ``net(x_t, t, cond, drop) -> (B, 1, F * hop)``.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from omnidiff.core.conditions import NoCond, TensorCond, as_cond_spec
from omnidiff.nn import Conditioning, adaln_zero, gate, modulate, null_where

from .mel import MelProjection
from .prior import EnergyPrior
from .vocoder_hooks import VocoderHooks

__all__ = ["SpectralNet", "build_spectral"]


class _Block(nn.Module):
    """ConvNeXt over frames with adaLN-Zero from the time embedding. h: (B, C, F), emb: (B, C)
    -> (B, C, F)."""

    def __init__(self, width: int, kernel: int = 7, expand: int = 3):
        super().__init__()
        self.dw = nn.Conv1d(width, width, kernel, padding=kernel // 2, groups=width)
        self.norm = nn.LayerNorm(width, elementwise_affine=False, eps=1e-6)
        self.mod = adaln_zero(width, 3)  # shift, scale, gate
        self.mlp = nn.Sequential(nn.Linear(width, expand * width), nn.GELU(),
                                 nn.Linear(expand * width, width))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        shift, scale, g = self.mod(emb).chunk(3, dim=-1)  # (B, C) each
        y = self.dw(h).transpose(1, 2)  # (B, F, C)
        y = self.mlp(modulate(self.norm(y), shift, scale))  # (B, F, C)
        return h + gate(g, y).transpose(1, 2)  # (B, C, F)


class SpectralNet(VocoderHooks, nn.Module):
    """A waveform denoiser computed on STFT frames (module docstring).

    Args:
        cond: a spectrogram condition ``TensorCond((n_mels, None))``.
        hop: samples per spectrogram frame (the STFT's hop too).
        layers: ConvNeXt blocks over frames.
        channels: their width.
        prior, prior_gain, prior_range_db, prior_floor: the energy prior (:mod:`.prior`).
        project, mel: the mel-consistency projection of every sample
            (:class:`.mel.MelProjection`).
    """

    def __init__(self, cond: Any, hop: int | None, layers: int = 8, channels: int = 256,
                 prior: str = "none", prior_gain: float | None = None,
                 prior_range_db: float | None = None, prior_floor: float = 0.01,
                 project: int = 0, mel: dict | None = None):
        super().__init__()
        spec = as_cond_spec(cond)
        if not (isinstance(spec, TensorCond) and len(spec.shape) == 2 and spec.shape[1] is None):
            raise ValueError(f"model.arch=spectral is a vocoder: it takes a spectrogram "
                             f"(data.cond=mel); got {spec.describe()}")
        if not hop:
            raise ValueError("model.arch=spectral needs the hop length (model.hop, set from "
                             "data.mel.hop_length)")
        if layers < 1 or channels < 1:
            raise ValueError(f"model.layers and model.channels must be >= 1; got {layers}, "
                             f"{channels}")
        self.hop = int(hop)
        self.n_fft = 1 << max(2, math.ceil(math.log2(4 * self.hop)))
        self.register_buffer("window", torch.hann_window(self.n_fft), persistent=False)
        self.gain = float(self.window.square().sum().sqrt())  # |stft| of unit white noise
        bins, n_mels = self.n_fft // 2 + 1, int(spec.shape[0])
        self.null_mel = nn.Parameter(torch.zeros(n_mels, 1))  # (M, 1)
        self.embed = Conditioning(NoCond(), channels)
        self.inp = nn.Conv1d(2 * bins + n_mels, channels, 7, padding=3)
        self.blocks = nn.ModuleList(_Block(channels) for _ in range(layers))
        self.norm = nn.LayerNorm(channels, elementwise_affine=False, eps=1e-6)
        self.out = nn.Linear(channels, 2 * bins)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)
        self.prior = EnergyPrior.of(prior, self.hop, prior_gain, prior_range_db, prior_floor)
        self.projection = MelProjection.of(project, mel)

    def _stft(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, 2K, F + 1): real and imaginary parts, unit-scaled."""
        spec = torch.stft(x[:, 0].float(), self.n_fft, self.hop, window=self.window,
                          center=True, return_complex=True)  # (B, K, F + 1)
        return torch.cat([spec.real, spec.imag], dim=1) / self.gain

    def _istft(self, y: torch.Tensor, length: int) -> torch.Tensor:
        """(B, 2K, F + 1) -> (B, 1, length)."""
        re, im = (y.float() * self.gain).chunk(2, dim=1)  # (B, K, F + 1) each
        wav = torch.istft(torch.complex(re, im), self.n_fft, self.hop, window=self.window,
                          center=True, length=length)  # (B, T)
        return wav.unsqueeze(1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B, 1, T), t: (B,), cond: (B, M, T / hop), drop: (B,) bool -> (B, 1, T)."""
        b, _, length = x.shape
        frames = length // self.hop
        mel = self.null_mel.expand(b, -1, frames) if cond is None else cond
        mel = null_where(drop, mel.to(self.null_mel.dtype), self.null_mel)  # (B, M, F)
        if mel.shape[-1] != frames or frames * self.hop != length:
            raise ValueError(f"the spectrogram has {mel.shape[-1]} frames, x hop {self.hop} = "
                             f"{mel.shape[-1] * self.hop} samples, but the waveform has {length}")
        mel = torch.cat([mel, mel[..., -1:]], dim=-1)  # (B, M, F + 1): the STFT's last frame
        h = self.inp(torch.cat([self._stft(x).to(mel.dtype), mel], dim=1))  # (B, C, F + 1)
        emb = self.embed(t, None, None, b)  # (B, C)
        for block in self.blocks:
            h = block(h, emb)  # (B, C, F + 1)
        y = self.out(self.norm(h.transpose(1, 2))).transpose(1, 2)  # (B, 2K, F + 1)
        return self._istft(y, length).to(x.dtype)  # (B, 1, T)


def build_spectral(event_shape: tuple[int, ...], cond: Any = None, *, compile: bool = False,
                   **cfg: Any) -> SpectralNet:
    """A :class:`SpectralNet` for mono waveforms ``event_shape = (1, samples)``."""
    if len(event_shape) != 2 or event_shape[0] != 1:
        raise ValueError(f"model.arch=spectral takes mono waveforms (1, samples); got "
                         f"{tuple(event_shape)}")
    known = {"hop", "layers", "channels", "prior", "prior_gain", "prior_range_db",
             "prior_floor", "project", "mel"}
    net = SpectralNet(cond, **{k: v for k, v in cfg.items() if k in known})
    if compile:
        net.compile()
    return net
