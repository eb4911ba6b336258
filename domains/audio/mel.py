"""The mel spectrogram a vocoder is conditioned on, defined in this one place.

:class:`MelSpec` wraps ``torchaudio.transforms.MelSpectrogram`` (magnitude, ``power=1``) with
the one log compression and normalisation of the project:

    db = 20 * log10(max(mel, 1e-5)) - ref_db          (ref_db = 20, as DiffWave)
    normalised = clip((db - min_db) / -min_db, 0, 1)  (min_db = -100)

Its settings live in the data config (``data.mel``), which ``model.pt`` stores, so the
spectrogram computed at inference (``pipe.condition(wav)``) is the one the model was trained
on. Frame ``i`` is centred on sample ``i * hop``; a clip of ``frames * hop`` samples has
``frames`` frames (the centred transform's extra last frame is dropped), so a spectrogram of
``F`` frames conditions exactly ``F * hop`` samples.

:meth:`MelSpec.griffin_lim` inverts a spectrogram without a network (torchaudio's
``InverseMelScale`` then ``GriffinLim``): the baseline a vocoder must beat.
:meth:`MelSpec.project` makes a vocoder's waveform consistent with the spectrogram it was
given, keeping its phase; :class:`MelProjection` is that step as a network option
(``model.project``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["MelSpec", "MelSettings", "MelProjection"]


@dataclass(frozen=True)
class MelSettings:
    """Spectrogram settings (``data.mel``); ``f_max=None`` means ``sample_rate / 2``."""

    n_fft: int = 256
    hop_length: int = 50
    win_length: int | None = None
    n_mels: int = 40
    f_min: float = 20.0
    f_max: float | None = None
    ref_db: float = 20.0
    min_db: float = -100.0

    @classmethod
    def from_cfg(cls, cfg: Any) -> "MelSettings":
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown data.mel option(s) {sorted(unknown)}; known: "
                             f"{', '.join(cls.__dataclass_fields__)}")
        s = cls(**cfg)
        if s.hop_length < 1 or s.n_fft < 2 or s.n_mels < 1:
            raise ValueError(f"data.mel needs hop_length >= 1, n_fft >= 2, n_mels >= 1; got {s}")
        if (s.win_length or s.n_fft) > s.n_fft:
            raise ValueError(f"data.mel.win_length={s.win_length} exceeds n_fft={s.n_fft}")
        return s

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class MelSpec:
    """Waveforms ``(..., samples)`` -> normalised log-mel ``(..., n_mels, samples // hop)``."""

    def __init__(self, sample_rate: int, settings: MelSettings | dict | None = None):
        self.sample_rate = int(sample_rate)
        self.s = s = settings if isinstance(settings, MelSettings) else MelSettings.from_cfg(
            settings)
        self.f_max = float(s.f_max) if s.f_max else self.sample_rate / 2
        if not 0 <= s.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"data.mel needs 0 <= f_min < f_max <= sample_rate / 2 = "
                             f"{self.sample_rate / 2:g}; got f_min={s.f_min}, f_max={self.f_max}")
        self._mel: Any = None

    @property
    def hop(self) -> int:
        return self.s.hop_length

    @property
    def n_mels(self) -> int:
        return self.s.n_mels

    def _transform(self, device: torch.device) -> Any:
        import torchaudio

        if self._mel is None:
            self._mel = torchaudio.transforms.MelSpectrogram(
                sample_rate=self.sample_rate, n_fft=self.s.n_fft, win_length=self.s.win_length,
                hop_length=self.hop, f_min=self.s.f_min, f_max=self.f_max, n_mels=self.n_mels,
                power=1.0, center=True, pad_mode="reflect", norm="slaney", mel_scale="slaney")
        return self._mel.to(device)

    def magnitude(self, wav: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> mel magnitudes (..., n_mels, samples // hop)."""
        frames = wav.shape[-1] // self.hop
        if frames < 1:
            raise ValueError(f"a waveform of {wav.shape[-1]} samples is shorter than one hop "
                             f"({self.hop} samples)")
        mel = self._transform(wav.device)(wav.float())  # (..., M, frames + 1)
        return mel[..., :frames]

    def normalise(self, mel: torch.Tensor) -> torch.Tensor:
        """Mel magnitudes -> the normalised log-mel in [0, 1]."""
        db = 20.0 * torch.log10(mel.clamp_min(1e-5)) - self.s.ref_db
        return ((db - self.s.min_db) / -self.s.min_db).clamp(0.0, 1.0)

    def denormalise(self, norm: torch.Tensor) -> torch.Tensor:
        """The normalised log-mel -> mel magnitudes (inverse of :meth:`normalise` above the
        floor)."""
        db = norm.float() * -self.s.min_db + self.s.min_db + self.s.ref_db
        return torch.pow(10.0, db / 20.0)

    def __call__(self, wav: torch.Tensor) -> torch.Tensor:
        """(..., samples) -> normalised log-mel (..., n_mels, samples // hop), float32."""
        return self.normalise(self.magnitude(wav))

    def project(self, wav: torch.Tensor, norm: torch.Tensor, n_iter: int = 1) -> torch.Tensor:
        """Waveforms ``(B, 1, F * hop)`` made consistent with the normalised log-mel ``norm:
        (B, M, F)`` they were made from, keeping their phase: each iteration rescales every
        STFT bin by the gain its mel bands ask for (target over current mel magnitude, spread
        back to the bins through the filterbank) and inverts the STFT (one Griffin-Lim
        projection started from the waveform's own phase, as GLA-Grad, Liu et al. 2024,
        projects a diffusion vocoder's estimate)."""
        s, frames = self.s, norm.shape[-1]
        fb = self._transform(wav.device).mel_scale.fb.to(wav.device)  # (K, M)
        win = torch.hann_window(s.win_length or s.n_fft, device=wav.device)
        want = self.denormalise(norm.to(wav.device))  # (B, M, F)
        cover = fb.sum(1)[:, None]  # (K, 1): bins outside [f_min, f_max] are left alone
        x = wav[:, 0].float()  # (B, T)
        for _ in range(int(n_iter)):
            spec = torch.stft(x, s.n_fft, self.hop, s.win_length, window=win, center=True,
                              pad_mode="reflect", return_complex=True)  # (B, K, F + 1)
            have = torch.einsum("bkf,km->bmf", spec.abs(), fb)[..., :frames]  # (B, M, F)
            gain = want / have.clamp_min(1e-5)  # (B, M, F)
            gain = torch.cat([gain, gain[..., -1:]], dim=-1)  # (B, M, F + 1)
            per_bin = torch.where(cover > 0, torch.einsum("km,bmf->bkf", fb, gain)
                                  / cover.clamp_min(1e-8), torch.ones_like(gain[:, :1]))
            x = torch.istft(spec * per_bin, s.n_fft, self.hop, s.win_length, window=win,
                            center=True, length=x.shape[-1])  # (B, T)
        return x.unsqueeze(1).clamp(-1.0, 1.0).to(wav.dtype)  # (B, 1, T)

    def griffin_lim(self, norm: torch.Tensor, n_iter: int = 64) -> torch.Tensor:
        """Normalised log-mel ``(B, M, F)`` -> waveforms ``(B, 1, F * hop)`` by least-squares
        mel inversion and Griffin-Lim phase reconstruction (torchaudio), no network."""
        import torchaudio

        s = self.s
        inv = torchaudio.transforms.InverseMelScale(
            n_stft=s.n_fft // 2 + 1, n_mels=self.n_mels, sample_rate=self.sample_rate,
            f_min=s.f_min, f_max=self.f_max, norm="slaney", mel_scale="slaney")
        gl = torchaudio.transforms.GriffinLim(n_fft=s.n_fft, win_length=s.win_length,
                                              hop_length=self.hop, power=1.0, n_iter=n_iter,
                                              rand_init=False)
        frames = norm.shape[-1]
        mag = self.denormalise(norm)
        mag = torch.cat([mag, mag[..., -1:]], dim=-1)  # the centred transform's last frame
        spec = inv(mag.cpu()).clamp_min(0.0)  # (B, n_fft // 2 + 1, F + 1)
        wav = gl(spec)[..., :frames * self.hop]
        return wav.unsqueeze(1).clamp(-1.0, 1.0)  # (B, 1, F * hop)


class MelProjection:
    """A vocoder network's last step (``model.project`` iterations of :meth:`MelSpec.project`,
    ``model.mel``: the data's sample rate and spectrogram settings). ``of(...)`` is None for
    ``project=0``."""

    def __init__(self, n_iter: int, mel: dict[str, Any]):
        cfg = dict(mel)
        self.n_iter, self.spec = n_iter, MelSpec(int(cfg.pop("sample_rate")), cfg)

    @classmethod
    def of(cls, n_iter: Any, mel: Any) -> "MelProjection | None":
        if not isinstance(n_iter, int) or isinstance(n_iter, bool) or n_iter < 0:
            raise ValueError(f"model.project must be an integer >= 0 (iterations), got "
                             f"{n_iter!r}")
        if n_iter == 0:
            return None
        if not mel or "sample_rate" not in mel:
            raise ValueError("model.project needs model.mel, the data's sample rate and "
                             "spectrogram settings (filled in from the data when training)")
        return cls(n_iter, mel)

    def __call__(self, wav: torch.Tensor, mel: torch.Tensor) -> torch.Tensor:
        return self.spec.project(wav, mel, self.n_iter)
