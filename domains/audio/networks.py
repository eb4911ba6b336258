"""The audio domain's networks, chosen by ``model.arch``.

* ``diffwave`` (default): :class:`~.diffwave.DiffWave`, sample-rate dilated convolutions; every
  condition (labels, prompts, spectrograms).
* ``spectral``: :class:`~.spectral.SpectralNet`, ConvNeXt blocks over STFT frames; a vocoder
  (a spectrogram condition). It reads ``hop``, ``layers``, ``channels`` and the prior's keys;
  DiffWave's own keys (``cycle``, ``text_*``), which the domain's defaults always set, mean
  nothing to it.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from .diffwave import build_diffwave
from .spectral import build_spectral

__all__ = ["ARCHS", "build_network"]

ARCHS = {"diffwave": build_diffwave, "spectral": build_spectral}


def build_network(event_shape: tuple[int, ...], cond: Any = None, *, arch: str = "diffwave",
                  **cfg: Any) -> nn.Module:
    """The network ``model.arch`` names, for signals of ``event_shape``."""
    if arch not in ARCHS:
        raise ValueError(f"model.arch={arch!r}; choose one of: {', '.join(ARCHS)}")
    return ARCHS[arch](event_shape, cond, **cfg)
