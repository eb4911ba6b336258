"""Judging tones against the captions that asked for them (:mod:`.captions`).

Each clip is measured four ways (:func:`measure`), every threshold halfway (geometrically for
levels) between the two values the captions distinguish:

* pitch: :func:`.pitch.estimate_f0`, right within a quarter tone of the asked semitone;
* loudness: the RMS of the loudest 10 ms frame; loud above :data:`LOUD_RMS`. A tone's peak
  frame has RMS about 0.6 of its peak (0.55-0.7 over timbres and pitches), so loud tones (peak
  0.8) measure about 0.45 and soft ones (peak 0.2) about 0.12;
* decay: the time from the loudest frame to the first frame below 10% of its RMS (the clip's
  end when it never falls); long from :data:`LONG_DECAY` s, between short (< 0.08 s) and long
  (> 0.2 s);
* spectral tilt: the power of harmonics 2..6 over the fundamental's, in dB, each summed over
  the band within half the measured pitch of it (a fast decay widens the peaks); bright above :data:`BRIGHT_TILT_DB`
  (bright, 1/k amplitudes: -3.1 dB; dark, 1/k^3: -17.6 dB).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from .pitch import QUARTER_TONE_CENTS, estimate_f0, semitone_of

__all__ = ["measure", "judge_tones", "caption_scores", "LOUD_RMS", "LONG_DECAY",
           "BRIGHT_TILT_DB"]

LOUD_RMS = 0.23  # geometric mean of the peak-frame RMS of loud (~0.45) and soft (~0.12) tones
LONG_DECAY = 0.14  # seconds, between short (< 0.08) and long (> 0.2)
BRIGHT_TILT_DB = -10.0  # between bright (-3.1 dB) and dark (-17.6 dB)
FRAME_S, HOP_S = 0.01, 0.005
HARMONICS = 6


def _frame_rms(x: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """``(N, T)`` -> RMS of 10 ms frames every 5 ms ``(N, F)``."""
    win, hop = round(FRAME_S * sample_rate), round(HOP_S * sample_rate)
    power = F.avg_pool1d(x.pow(2)[:, None], win, hop)[:, 0]  # (N, F)
    return power.sqrt()


def _decay_seconds(rms: torch.Tensor) -> torch.Tensor:
    """Seconds from each clip's loudest frame to its first frame below 10% of it (the clip's
    end when none): ``(N, F)`` -> ``(N,)``."""
    n, f = rms.shape
    peak, at = rms.max(1)  # (N,)
    idx = torch.arange(f)[None]  # (1, F)
    below = (rms < 0.1 * peak[:, None]) & (idx > at[:, None])  # (N, F)
    first = torch.where(below, idx, f).amin(1)  # (N,)
    return (first - at).double() * HOP_S


def _fade_out(t: int, dtype: torch.dtype) -> torch.Tensor:
    """A window ``(t,)`` flat until its last 10%, which falls as half a Hann window: a short
    tone lives in the first tens of milliseconds, which a full Hann window would silence."""
    k = max(2, t // 10)
    fall = torch.hann_window(2 * k, periodic=False, dtype=dtype)[k:]  # (k,) from 1 to 0
    return torch.cat([torch.ones(t - k, dtype=dtype), fall])


def _tilt_db(x: torch.Tensor, f0: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Power of harmonics 2..6 over the fundamental's, dB: ``(N, T)``, ``f0 (N,)`` -> ``(N,)``
    (NaN without a pitch)."""
    t = x.shape[-1]
    n_fft = 1 << math.ceil(math.log2(4 * t))
    power = torch.fft.rfft(x * _fade_out(t, x.dtype), n=n_fft).abs().pow(2)  # (N, K)
    freqs = torch.arange(power.shape[-1], dtype=x.dtype) * sample_rate / n_fft  # (K,)
    k = torch.arange(1, HARMONICS + 1, dtype=x.dtype)  # (H,)
    centre = torch.nan_to_num(f0)[:, None] * k[None]  # (N, H)
    half = 0.5 * torch.nan_to_num(f0)[:, None, None]  # (N, 1, 1): bands tile the spectrum
    band = (freqs[None, None] - centre[..., None]).abs() < half
    band &= (centre < 0.45 * sample_rate)[..., None]  # (N, H, K)
    per = (band * power[:, None]).sum(-1)  # (N, H)
    tilt = 10 * torch.log10(per[:, 1:].sum(1).clamp_min(1e-20) / per[:, 0].clamp_min(1e-20))
    return torch.where(torch.isfinite(f0), tilt, torch.full_like(tilt, float("nan")))


def measure(samples: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """Clips ``(N, 1, T)`` -> ``{"semitone", "rms", "decay", "tilt_db"}``, each ``(N,)``
    float64 (semitone: real index, 0 = C4; NaN without a pitch)."""
    x = torch.nan_to_num(samples.reshape(samples.shape[0], -1).double().cpu(), 0.0, 0.0, 0.0)
    f0 = estimate_f0(x, sample_rate)
    rms = _frame_rms(x, sample_rate)
    return {"semitone": semitone_of(f0), "rms": rms.amax(1), "decay": _decay_seconds(rms),
            "tilt_db": _tilt_db(x, f0, sample_rate)}


def judge_tones(samples: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
    """What a listener would say of each clip: ``{"semitone": (N,) real, "loud", "long",
    "bright": (N,) bool}``."""
    m = measure(samples, sample_rate)
    return {"semitone": m["semitone"], "loud": m["rms"] > LOUD_RMS,
            "long": m["decay"] >= LONG_DECAY, "bright": m["tilt_db"] > BRIGHT_TILT_DB}


def caption_scores(samples: torch.Tensor, attrs: Sequence[Any], sample_rate: int
                   ) -> dict[str, float]:
    """How often clips ``(N, 1, T)`` have what their captions asked (``attrs``: one
    :class:`~.captions.ToneAttrs` per clip; -1: not asked): ``pitch_acc``, ``loud_acc``,
    ``decay_acc``, ``timbre_acc`` and ``all_acc`` (every asked attribute right)."""
    j = judge_tones(samples, sample_rate)
    want = torch.tensor([a.as_tuple() for a in attrs], dtype=torch.long)  # (N, 4)
    cents = 100.0 * (j["semitone"] - want[:, 0].double())
    ok = {"pitch": torch.isfinite(cents) & (cents.abs() < QUARTER_TONE_CENTS)}
    for col, name, got in ((1, "loud", j["loud"]), (2, "decay", j["long"]),
                           (3, "timbre", j["bright"])):
        asked = want[:, col] >= 0
        ok[name] = ~asked | (got == want[:, col].bool())
    every = ok["pitch"] & ok["loud"] & ok["decay"] & ok["timbre"]
    out = {f"{k}_acc": float(v.double().mean()) for k, v in ok.items()}
    return out | {"all_acc": float(every.double().mean())}
