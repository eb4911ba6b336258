"""Auxiliary losses of the audio domain on the denoised estimate (``loss.aux=NAME``).

A diffusion vocoder's MSE reaches the right magnitudes slowly: at high noise the posterior mean
of a waveform whose phases the spectrogram leaves open is quiet. A spectral distance on the
denoised estimate, which ignores phase, makes the magnitudes right early (WaveFM, MB-MelGAN):

* ``stft``: the multi-resolution STFT distance (Parallel WaveGAN's spectral convergence plus
  log magnitude) over FFT sizes of about 16 / 32 / 64 ms at the data's sample rate, those no
  longer than the clip.

Each factory takes the data config and returns ``fn(x0_hat, x0, cond) -> (B,)``.
"""

from __future__ import annotations

from typing import Any, Callable

import torch

from omnidiff.methods.latent.losses import stft_distance

from .metrics import stft_resolutions

__all__ = ["stft_loss"]


def stft_loss(data: dict[str, Any]) -> Callable[..., torch.Tensor]:
    """The multi-resolution STFT distance of waveforms ``(B, 1, T)`` at ``data.sample_rate``."""
    sizes = stft_resolutions(int(data.get("sample_rate") or 8000))

    def loss(x0_hat: torch.Tensor, x0: torch.Tensor, cond: Any = None) -> torch.Tensor:
        fit = [n for n in sizes if n <= x0.shape[-1]] or [sizes[0]]
        return stft_distance(x0_hat, x0, fit)  # (B,)

    return loss
