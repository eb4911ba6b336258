"""Pitch of a clip: the frequency of its strongest partial, and its semitone class.

The tones are built so that the fundamental is the strongest partial (:mod:`.tones`), so the
peak of a Hann-windowed, 8x zero-padded magnitude spectrum, refined by a parabola through the
log magnitudes around it, estimates the fundamental to well under a cent on a clean tone. A
silent clip has no pitch (NaN).
"""

from __future__ import annotations

import math

import torch

from .tones import NAMES

__all__ = ["estimate_f0", "semitone_of", "pitch_stats"]

QUARTER_TONE_CENTS = 50.0


def estimate_f0(wav: torch.Tensor, sample_rate: int, f_min: float = 50.0) -> torch.Tensor:
    """Waveforms ``(N, 1, T)`` or ``(N, T)`` -> the strongest partial's frequency (N,) in Hz,
    float64; NaN for silent or non-finite clips."""
    x = wav.reshape(wav.shape[0], -1).double()  # (N, T)
    finite = torch.isfinite(x).all(1)
    x = torch.nan_to_num(x, 0.0, 0.0, 0.0)
    t = x.shape[-1]
    n_fft = 1 << max(1, math.ceil(math.log2(8 * t)))
    spec = torch.fft.rfft(x * torch.hann_window(t, periodic=False, dtype=x.dtype), n=n_fft)
    mag = spec.abs()  # (N, n_fft // 2 + 1)
    lo = max(1, int(f_min * n_fft / sample_rate))
    mag[:, :lo] = 0.0
    k = mag[:, 1:-1].argmax(1) + 1  # (N,), never an edge bin
    logm = mag.clamp_min(1e-12).log()
    a, b, c = (logm.gather(1, (k + d)[:, None])[:, 0] for d in (-1, 0, 1))
    denom = a - 2 * b + c
    shift = torch.where(denom.abs() > 1e-12, 0.5 * (a - c) / denom, torch.zeros_like(denom))
    f0 = (k.double() + shift.clamp(-0.5, 0.5)) * sample_rate / n_fft
    silent = mag.amax(1) < 1e-6 * t
    return torch.where(finite & ~silent, f0, torch.full_like(f0, float("nan")))


def semitone_of(f0: torch.Tensor) -> torch.Tensor:
    """Frequency (Hz) -> real semitone index with 0 = C4, 9 = A4 = 440 Hz."""
    return 12.0 * torch.log2(f0 / 440.0) + 9.0


def pitch_stats(samples: torch.Tensor, sample_rate: int, labels: torch.Tensor | None = None
                ) -> dict[str, float]:
    """Pitch metrics of clips ``(N, 1, T)``.

    * ``pitch_acc`` (with ``labels``): the fraction whose pitch is within a quarter-tone
      (50 cents) of the asked semitone;
    * ``in_tune_frac``: the fraction within a quarter-tone of any of the 12 semitones C4..B4
      (a clip an octave off or without pitch is out);
    * over the in-tune clips' classes: ``pitch_coverage`` (classes present / 12),
      ``pitch_share_min`` / ``pitch_share_max`` (the rarest / commonest class's share over the
      uniform 1/12; 1.0 is perfectly even) and ``pitch_tv`` (total-variation distance of the
      class histogram from uniform, 0 to 1).
    """
    semi = semitone_of(estimate_f0(samples, sample_rate))  # (N,), NaN without pitch
    nearest = torch.round(semi)
    cents = 100.0 * (semi - nearest)
    in_tune = torch.isfinite(semi) & (nearest >= 0) & (nearest < len(NAMES)) & (
        cents.abs() < QUARTER_TONE_CENTS)
    out: dict[str, float] = {"in_tune_frac": float(in_tune.double().mean())}
    if labels is not None:
        err = 100.0 * (semi - labels.double().to(semi.device))
        hit = torch.isfinite(err) & (err.abs() < QUARTER_TONE_CENTS)
        out["pitch_acc"] = float(hit.double().mean())
    k = len(NAMES)
    counts = torch.bincount(nearest[in_tune].long(), minlength=k).double()  # (12,)
    total = float(counts.sum())
    share = counts / total if total > 0 else torch.zeros(k, dtype=torch.float64)
    out.update(pitch_coverage=float((counts > 0).double().mean()),
               pitch_share_min=float(share.min() * k), pitch_share_max=float(share.max() * k),
               pitch_tv=float(0.5 * (share - 1.0 / k).abs().sum()) if total > 0 else 1.0)
    return out
