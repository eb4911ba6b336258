"""``tones``: harmonic tones of the 12 equal-tempered semitones from C4 to B4, made offline.

Class ``k`` (0 = C4, ..., 9 = A4, 11 = B4) has the fundamental ``440 * 2 ** ((k - 9) / 12)``
Hz, detuned by up to ``detune_cents``. Each clip sums the harmonics below the Nyquist
frequency (at most ``harmonics``), with random amplitudes below the fundamental's (so the
fundamental is the strongest partial), random phases, an attack / exponential-decay envelope,
a random level, and a little white noise. Everything is drawn from one seeded generator.

:func:`described_tones` makes tones with a set loudness, decay and timbre instead (the
captioned tones of :mod:`.captions`): harmonic ``k`` at amplitude ``1 / k`` (bright) or
``1 / k^3`` (dark), a 5 ms attack, an exponential decay that reaches 10% of the peak after
:data:`DECAY_10` seconds (short or long), scaled to the peak :data:`PEAK` (soft or loud).
"""

from __future__ import annotations

import math

import torch

__all__ = ["NAMES", "semitone_hz", "make_tones", "described_tones", "PEAK", "DECAY_10",
           "ATTACK"]

NAMES = ("C4", "C#4", "D4", "D#4", "E4", "F4", "F#4", "G4", "G#4", "A4", "A#4", "B4")


def semitone_hz(k: torch.Tensor | int) -> torch.Tensor:
    """Frequency of semitone class ``k`` (0 = C4 ... 11 = B4; A4 = 440 Hz); any real ``k``."""
    return 440.0 * 2.0 ** ((torch.as_tensor(k, dtype=torch.float64) - 9.0) / 12.0)


def make_tones(labels: torch.Tensor, sample_rate: int, samples: int, generator: torch.Generator,
               harmonics: int = 6, detune_cents: float = 10.0, noise: float = 0.01
               ) -> torch.Tensor:
    """Tones ``(N, 1, samples)`` in [-1, 1] for ``labels: (N,)`` in 0..11."""
    n = labels.shape[0]
    g = generator

    def u(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=g, dtype=torch.float64)

    cents = (2 * u(n) - 1) * detune_cents
    f0 = semitone_hz(labels.double()) * 2.0 ** (cents / 1200.0)  # (N,)
    h = torch.arange(1, harmonics + 1, dtype=torch.float64)  # (H,)
    freqs = f0[:, None] * h[None]  # (N, H)
    amps = torch.cat([torch.ones(n, 1, dtype=torch.float64),
                      0.8 * u(n, harmonics - 1) / h[1:].sqrt()], dim=1)  # (N, H), first = 1
    amps = amps * (freqs < 0.45 * sample_rate)  # nothing at or above the Nyquist frequency
    phase = 2 * math.pi * u(n, harmonics)  # (N, H)
    time = torch.arange(samples, dtype=torch.float64) / sample_rate  # (T,)
    wave = (amps[..., None] * torch.sin(2 * math.pi * freqs[..., None] * time
                                        + phase[..., None])).sum(1)  # (N, T)
    attack = 0.005 + 0.025 * u(n, 1)  # seconds
    decay = 0.5 + 4.0 * u(n, 1)  # 1 / seconds
    env = (time[None] / attack).clamp(max=1.0) * torch.exp(-decay * time[None])  # (N, T)
    wave = wave * env
    level = 0.3 + 0.6 * u(n, 1)
    wave = wave / wave.abs().amax(1, keepdim=True).clamp_min(1e-8) * level
    wave = wave + noise * torch.randn(n, samples, generator=g, dtype=torch.float64)
    return wave.clamp(-1.0, 1.0).float().unsqueeze(1)  # (N, 1, T)


PEAK = (0.2, 0.8)  # soft, loud: the peak of the waveform (fraction of full scale)
DECAY_10 = ((0.03, 0.06), (0.3, 0.6))  # short, long: seconds from the peak to 10% of it
ATTACK = 0.005  # seconds


def _decay_envelope(long: torch.Tensor, time: torch.Tensor, g: torch.Generator
                    ) -> torch.Tensor:
    """``long: (N,)`` 0 / 1, ``time: (T,)`` -> envelopes ``(N, T)`` peaking at 1 after the
    attack and falling to 0.1 after a random time in the decay's range."""
    lo = torch.tensor([DECAY_10[0][0], DECAY_10[1][0]], dtype=torch.float64)[long]
    hi = torch.tensor([DECAY_10[0][1], DECAY_10[1][1]], dtype=torch.float64)[long]
    t10 = lo + (hi - lo) * torch.rand(len(long), generator=g, dtype=torch.float64)  # (N,)
    after = (time[None] - ATTACK).clamp_min(0.0)  # (N, T) seconds since the peak
    fall = torch.exp(-math.log(10.0) * after / t10[:, None])
    return (time[None] / ATTACK).clamp(max=1.0) * fall  # (N, T)


def described_tones(pitch: torch.Tensor, loud: torch.Tensor, long: torch.Tensor,
                    bright: torch.Tensor, sample_rate: int, samples: int,
                    generator: torch.Generator, harmonics: int = 6,
                    detune_cents: float = 10.0, noise: float = 0.003) -> torch.Tensor:
    """Tones ``(N, 1, samples)`` with the given attributes, each ``(N,)``: ``pitch`` 0..11,
    ``loud``, ``long``, ``bright`` 0 / 1."""
    n, g = pitch.shape[0], generator
    cents = (2 * torch.rand(n, generator=g, dtype=torch.float64) - 1) * detune_cents
    f0 = semitone_hz(pitch.double()) * 2.0 ** (cents / 1200.0)  # (N,)
    h = torch.arange(1, harmonics + 1, dtype=torch.float64)  # (H,)
    power = torch.where(bright.bool()[:, None], 1.0, 3.0)  # (N, 1)
    amps = h[None] ** -power * (f0[:, None] * h[None] < 0.45 * sample_rate)  # (N, H)
    phase = 2 * math.pi * torch.rand(n, harmonics, generator=g, dtype=torch.float64)
    time = torch.arange(samples, dtype=torch.float64) / sample_rate  # (T,)
    wave = (amps[..., None] * torch.sin(2 * math.pi * f0[:, None, None] * h[None, :, None]
                                        * time + phase[..., None])).sum(1)  # (N, T)
    wave = wave * _decay_envelope(long.long(), time, g)
    peak = torch.tensor(PEAK, dtype=torch.float64)[loud.long()]  # (N,)
    wave = wave / wave.abs().amax(1, keepdim=True).clamp_min(1e-8) * peak[:, None]
    wave = wave + noise * torch.randn(n, samples, generator=g, dtype=torch.float64)
    return wave.clamp(-1.0, 1.0).float().unsqueeze(1)  # (N, 1, T)
