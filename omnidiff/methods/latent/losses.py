"""Reconstruction losses of an autoencoder, per sample: ``loss(x_hat, x) -> (B,)``.

Chosen by one name (``ae.recon``), so that each modality trains its autoencoder in its own
terms: ``l1`` / ``mse`` in the data's units (pixels), ``stft`` for signals in time, where an L1
on the waveform alone blurs high frequencies and ignores phase-insensitive structure.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from omnidiff._util import check_choice

__all__ = ["RECON_LOSSES", "reconstruction_loss", "stft_distance", "stft_sizes"]


def stft_sizes(length: int, base: int | None = None) -> list[int]:
    """Three FFT sizes around ``base`` (default: the power of two nearest to length / 8, at
    most 1024): ``[base / 2, base, 2 base]``, each no longer than the signal."""
    if base is None:
        base = 1 << max(4, min(10, round(math.log2(max(16, length / 8)))))
    sizes = [max(8, base // 2), base, base * 2]
    return [s for s in sizes if s <= length] or [max(8, 1 << int(math.log2(length)))]


def stft_distance(a: torch.Tensor, b: torch.Tensor, sizes: Sequence[int]) -> torch.Tensor:
    """Multi-resolution STFT distance of ``a`` to ``b`` per sample (Yamamoto et al. 2020,
    Parallel WaveGAN, eq. 4-6): spectral convergence plus the mean absolute log-magnitude
    difference, averaged over FFT sizes ``sizes`` (Hann window, hop n_fft / 4). Channels are
    treated as separate signals. a, b: (B, *, T) -> (B,). Differentiable."""
    n = a.shape[0]
    a = a.reshape(-1, a.shape[-1]).float()  # (B*C, T)
    b = b.reshape(-1, b.shape[-1]).float()
    total = a.new_zeros(n)
    for n_fft in sizes:
        win = torch.hann_window(n_fft, device=a.device)
        sa, sb = (torch.stft(v, n_fft, n_fft // 4, window=win, return_complex=True).abs()
                  for v in (a, b))  # (B*C, bins, frames)
        sa, sb = sa.reshape(n, -1), sb.reshape(n, -1)  # (B, C*bins*frames)
        sc = (sa - sb).norm(dim=1) / sb.norm(dim=1).clamp_min(1e-7)
        mag = (sa.clamp_min(1e-5).log() - sb.clamp_min(1e-5).log()).abs().mean(1)
        total = total + sc + mag
    return total / len(sizes)


def _l1(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).abs().flatten(1).mean(1)


def _mse(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return (x_hat - x).square().flatten(1).mean(1)


def _stft(x_hat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Multi-resolution STFT distance plus the waveform L1 (which pins the phase)."""
    return stft_distance(x_hat, x, stft_sizes(x.shape[-1])) + _l1(x_hat, x)


RECON_LOSSES: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "l1": _l1, "mse": _mse, "stft": _stft}


def reconstruction_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss named ``name`` (one of :data:`RECON_LOSSES`)."""
    return RECON_LOSSES[check_choice("ae.recon", name, RECON_LOSSES)]
