"""A vocoder's data-dependent prior (PriorGrad, Lee et al. 2022): noise as loud as the sound.

A waveform given its spectrogram is far from a unit Gaussian: its level follows the frames'
energy (a tone decays by 40 dB in a clip; speech has silences). PriorGrad draws the diffusion's
noise from ``N(0, diag(s^2))`` with ``s`` following the mel energy envelope; the network then
models the waveform's fine structure, not its loudness. omnidiff does the same as an invertible
transform: the model diffuses ``z = x / s`` (:class:`omnidiff.core.model.DiffusionModel`), so
its noise stays N(0, I) and every sampler and guidance runs unchanged.

The scale of frame ``f`` is ``max(gain * e_f, floor)`` with ``e_f`` the RMS over mel bins of
the frame's mel magnitudes relative to the spectrogram's ceiling (read from the normalised
log-mel, whose range is ``range_db``), interpolated linearly between frame centres to every
sample. ``gain`` is fitted on training clips (:func:`fit_gain`, the median ratio of each
frame's waveform RMS to ``e_f``), so that ``z`` has about unit variance whatever the
spectrogram settings.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["mel_energy", "frame_rms", "envelope", "prior_scale", "fit_gain", "EnergyPrior",
           "PRIORS"]

PRIORS = ("none", "energy")


def mel_energy(mel: torch.Tensor, range_db: float) -> torch.Tensor:
    """Normalised log-mel ``(B, M, F)`` in [0, 1] -> ``e: (B, F)``, the RMS over bins of the
    mel magnitudes relative to the ceiling (1 at full scale, 1e-5 at the floor of 100 dB)."""
    amp = torch.pow(10.0, (mel.float() - 1.0) * (float(range_db) / 20.0))  # (B, M, F)
    return amp.square().mean(1).sqrt()  # (B, F)


def frame_rms(x: torch.Tensor, hop: int) -> torch.Tensor:
    """Waveforms ``(B, 1, F * hop)`` -> the RMS of each hop ``(B, F)``."""
    return x.reshape(x.shape[0], -1, hop).square().mean(-1).sqrt()


def envelope(frames: torch.Tensor, hop: int) -> torch.Tensor:
    """Per-frame values ``(B, F)`` -> per-sample ``(B, 1, F * hop)``, linear between frame
    centres (constant beyond the first and last)."""
    return F.interpolate(frames[:, None], scale_factor=hop, mode="linear",
                         align_corners=False)  # (B, 1, F * hop)


def prior_scale(mel: torch.Tensor, hop: int, gain: float, range_db: float,
                floor: float) -> torch.Tensor:
    """The prior's standard deviation ``(B, 1, F * hop)`` of a spectrogram ``(B, M, F)``."""
    frames = (float(gain) * mel_energy(mel, range_db)).clamp_min(float(floor))  # (B, F)
    return envelope(frames, hop)


def fit_gain(x: torch.Tensor, mel: torch.Tensor, hop: int, range_db: float,
             floor: float) -> float:
    """The gain that maps ``mel_energy`` to the waveform RMS of clips ``x: (N, 1, F * hop)``
    with spectrograms ``mel: (N, M, F)``: the median ratio over frames louder than ``floor``
    (1.0 when none is)."""
    rms = frame_rms(x[..., :mel.shape[-1] * hop].float(), hop).flatten()  # (N F,)
    e = mel_energy(mel, range_db).flatten()  # (N F,)
    loud = rms > floor
    if not bool(loud.any()):
        return 1.0
    return float((rms[loud] / e[loud].clamp_min(1e-12)).median())


class EnergyPrior:
    """A network's ``prior`` options (``model.prior``, ``prior_gain``, ``prior_range_db``,
    ``prior_floor``), checked once; called on a spectrogram ``(B, M, F)`` it gives the scale
    ``(B, 1, F * hop)``. ``of(...)`` is None for ``prior=none``."""

    def __init__(self, hop: int, gain: float, range_db: float, floor: float):
        self.hop, self.gain, self.range_db, self.floor = hop, gain, range_db, floor

    @classmethod
    def of(cls, prior: str, hop: int | None, gain: Any, range_db: Any, floor: Any
           ) -> "EnergyPrior | None":
        """The prior, None for ``prior=none``; one line for a bad setting (``hop``: None
        without a spectrogram condition)."""
        if prior not in PRIORS:
            raise ValueError(f"model.prior={prior!r}; choose one of: {', '.join(PRIORS)}")
        if prior == "none":
            return None
        if not hop:
            raise ValueError("model.prior=energy follows a spectrogram's energy: use it with "
                             "data.cond=mel or label+mel, or set model.prior=none")
        if gain is None or range_db is None:
            raise ValueError("model.prior=energy needs model.prior_gain and "
                             "model.prior_range_db (filled in from the data when training)")
        if not float(floor) > 0:
            raise ValueError(f"model.prior_floor must be > 0, got {floor}")
        return cls(int(hop), float(gain), float(range_db), float(floor))

    def __call__(self, mel: torch.Tensor) -> torch.Tensor:
        return prior_scale(mel, self.hop, self.gain, self.range_db, self.floor)
