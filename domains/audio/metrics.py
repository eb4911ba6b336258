"""Audio metrics: lower is better unless the name says otherwise.

For every model:

* ``finite_frac`` (higher is better), ``rms_gap`` (relative gap of the mean RMS level to the
  reference's) and ``mel_profile_db`` (mean absolute dB gap between the average log-mel spectra
  of samples and reference: a distribution-level check that the spectrum is right).

For the ``tones`` (:func:`.pitch.pitch_stats`): ``pitch_acc`` (class-conditional),
``in_tune_frac``, ``pitch_coverage``, ``pitch_share_min``, ``pitch_share_max``, ``pitch_tv``.

For prompted tones (``text_tones``, :func:`caption_metrics`): ``<attribute>_acc_<set>`` for
pitch, loud, decay, timbre and all (every asked attribute right), over the held-in and the
held-out evaluation prompts (:mod:`.text_metrics`).

For a vocoder (a spectrogram condition): ``logmel_db``, the mean absolute log-mel distance in
dB between each re-synthesis and the spectrogram it was given; when the samples are
re-syntheses of the first reference clips (the evaluation conditions on them), also
``mrstft`` (multi-resolution STFT distance to the original waveforms, :func:`mr_stft`) and the
same two numbers for torchaudio's Griffin-Lim from the same spectrograms (``gl_logmel_db``,
``gl_mrstft``) with the ratios ``logmel_vs_gl`` and ``mrstft_vs_gl`` (below 1: better than
Griffin-Lim), ``pitch_kept`` (higher is better) and ``rms_ratio`` (1 is best), :func:`kept`.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from omnidiff.methods.latent.losses import stft_distance

from .mel import MelSpec
from .pitch import QUARTER_TONE_CENTS, estimate_f0, pitch_stats
from .text_metrics import caption_scores

__all__ = ["audio_metrics", "mr_stft", "logmel_db", "vocoder_table", "caption_metrics", "kept",
           "stft_resolutions"]


def _spec_of(data: Any) -> tuple[int, MelSpec]:
    if data is None:  # without the data module: the domain's defaults
        return 8000, MelSpec(8000)
    return data.sample_rate, data.mel


def logmel_db(mel_spec: MelSpec, wav: torch.Tensor, target_norm: torch.Tensor) -> torch.Tensor:
    """Per clip: mean |log-mel(wav) - target| in dB (both on the normalised scale's floor)."""
    frames = target_norm.shape[-1]
    ours = mel_spec(wav.reshape(wav.shape[0], -1)[:, :frames * mel_spec.hop])  # (N, M, F)
    return (ours - target_norm.float()).abs().mean((1, 2)) * -mel_spec.s.min_db  # (N,)


def stft_resolutions(sample_rate: int) -> list[int]:
    """FFT sizes of the multi-resolution STFT distance: ~16 / 32 / 64 ms windows."""
    base = 1 << round(math.log2(0.032 * sample_rate))  # ~32 ms windows: 256 at 8 kHz
    return [base // 2, base, base * 2]


def mr_stft(a: torch.Tensor, b: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Multi-resolution STFT distance per clip
    (:func:`omnidiff.methods.latent.losses.stft_distance`, Parallel WaveGAN's) over three FFT sizes
    around 16 / 32 / 64 ms. a, b: (N, 1, T) -> (N,)."""
    t = min(a.shape[-1], b.shape[-1])
    return stft_distance(a[..., :t].cpu(), b[..., :t].cpu(), stft_resolutions(sample_rate))


def kept(samples: torch.Tensor, originals: torch.Tensor, sample_rate: int
         ) -> dict[str, float]:
    """What a re-synthesis keeps of its original: ``pitch_kept``, the fraction of clips whose
    strongest partial is within a quarter-tone of the original's, and ``rms_ratio``, the mean
    over clips of their RMS level over the original's (1: as loud)."""
    f0 = [estimate_f0(v, sample_rate) for v in (samples, originals)]
    cents = 1200.0 * torch.log2(f0[0] / f0[1])  # NaN where either has no pitch
    hit = torch.isfinite(cents) & (cents.abs() < QUARTER_TONE_CENTS)
    rms = [v.reshape(v.shape[0], -1).float().pow(2).mean(1).sqrt() for v in (samples, originals)]
    return {"pitch_kept": float(hit.double().mean()),
            "rms_ratio": float((rms[0] / rms[1].clamp_min(1e-8)).mean())}


def vocoder_table(samples: torch.Tensor, originals: torch.Tensor, mels: torch.Tensor,
                  sample_rate: int, mel_spec: MelSpec, griffin_lim: torch.Tensor | None = None
                  ) -> dict[str, float]:
    """Re-syntheses vs originals, side by side with Griffin-Lim from the same spectrograms,
    and what they keep of the originals (:func:`kept`)."""
    gl = mel_spec.griffin_lim(mels) if griffin_lim is None else griffin_lim
    ours_mel = float(logmel_db(mel_spec, samples, mels).mean())
    ours_stft = float(mr_stft(samples, originals, sample_rate).mean())
    gl_mel = float(logmel_db(mel_spec, gl, mels).mean())
    gl_stft = float(mr_stft(gl, originals, sample_rate).mean())
    return {"logmel_db": ours_mel, "mrstft": ours_stft, "gl_logmel_db": gl_mel,
            "gl_mrstft": gl_stft, "logmel_vs_gl": ours_mel / max(gl_mel, 1e-9),
            "mrstft_vs_gl": ours_stft / max(gl_stft, 1e-9),
            **kept(samples, originals, sample_rate)}


def _mel_of(cond: Any) -> torch.Tensor | None:
    if isinstance(cond, dict):
        return cond.get("mel")
    if isinstance(cond, torch.Tensor) and cond.dim() == 3:
        return cond
    return None


def _labels_of(cond: Any) -> torch.Tensor | None:
    if isinstance(cond, dict):
        return cond.get("label")
    if isinstance(cond, torch.Tensor) and cond.dim() == 1:
        return cond
    return None


def _paired(mel: torch.Tensor, ref_mel: torch.Tensor | None) -> bool:
    """The samples re-synthesise the first reference clips (same spectrograms)."""
    n = mel.shape[0]
    return (ref_mel is not None and ref_mel.shape[0] >= n and ref_mel.shape[1:] == mel.shape[1:]
            and torch.equal(ref_mel[:n].float(), mel.float()))


def _profile_db(mel_spec: MelSpec, a: torch.Tensor, b: torch.Tensor) -> float:
    pa = mel_spec(a.reshape(a.shape[0], -1)).mean((0, 2))  # (M,) mean normalised log-mel
    pb = mel_spec(b.reshape(b.shape[0], -1)).mean((0, 2))
    return float((pa - pb).abs().mean() * -mel_spec.s.min_db)


def caption_metrics(samples: torch.Tensor, captions: list[str] | None, truth: dict,
                    sample_rate: int) -> dict[str, float]:
    """Clips judged against their captions (``truth``: caption -> (attributes, set name)),
    per evaluation set; {} when a caption is not one of the data's."""
    if not captions or not truth or any(c not in truth for c in captions):
        return {}
    attrs, sets = zip(*(truth[c] for c in captions))
    out = {}
    for name in dict.fromkeys(sets):
        rows = [i for i, s in enumerate(sets) if s == name]
        scores = caption_scores(samples[rows], [attrs[i] for i in rows], sample_rate)
        out |= {f"{k}_{name}": v for k, v in scores.items()}
    return out


def audio_metrics(samples: torch.Tensor, reference: torch.Tensor, cond: Any = None,
                  ref_cond: Any = None, data: Any = None) -> dict[str, float]:
    """samples ``(N, 1, T)``, reference ``(M, 1, T')``, their conditions, the data module."""
    sample_rate, mel_spec = _spec_of(data)
    finite = torch.isfinite(samples.reshape(samples.shape[0], -1)).all(1)
    x = torch.nan_to_num(samples.float(), 0.0, 0.0, 0.0).clamp(-1.0, 1.0)
    rms = lambda v: float(v.pow(2).mean((1, 2)).sqrt().mean())  # noqa: E731
    out = {"finite_frac": float(finite.double().mean()),
           "rms_gap": abs(rms(x) - rms(reference)) / max(rms(reference), 1e-8),
           "mel_profile_db": _profile_db(mel_spec, x, reference)}
    if data is None or getattr(data, "name", None) in ("tones", "text_tones"):
        out.update(pitch_stats(x, sample_rate, _labels_of(cond)))
    if data is not None and getattr(data, "captions_of", None) is not None:
        out |= caption_metrics(x, data.captions_of(cond), data.caption_truth(), sample_rate)
    mel = _mel_of(cond)
    if mel is not None:
        out["logmel_db"] = float(logmel_db(mel_spec, x, mel).mean())
        ref_mel = _mel_of(ref_cond)
        if _paired(mel, ref_mel):
            n = mel.shape[0]
            out.update(vocoder_table(x, reference[:n], mel, sample_rate, mel_spec))
    return out
