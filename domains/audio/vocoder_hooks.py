"""What a vocoder network adds to the core's hooks, shared by the audio networks.

A network that sets ``prior`` (an :class:`~.prior.EnergyPrior` or None), ``projection`` (a
:class:`~.mel.MelProjection` or None) and ``mel_key`` (the spectrogram's field in a named
condition; None when the condition is the spectrogram) gets:

* ``prior_scale(cond)``: the data-dependent prior the core diffuses under
  (:class:`omnidiff.core.model.DiffusionModel`);
* ``finish(x, cond)``: the last step of generation, applied to the samples in data space
  (the mel-consistency projection).
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["VocoderHooks"]


class VocoderHooks:
    """Mix-in: ``prior_scale`` and ``finish`` from ``prior``, ``projection``, ``mel_key``."""

    prior: Any = None
    projection: Any = None
    mel_key: str | None = None

    def _mel_of(self, cond: Any) -> torch.Tensor:
        return cond if self.mel_key is None else cond[self.mel_key]  # (B, M, F)

    def prior_scale(self, cond: Any) -> torch.Tensor | None:
        """The energy prior's scale ``(B, 1, F * hop)``, or None (``prior=none``)."""
        return None if self.prior is None or cond is None else self.prior(self._mel_of(cond))

    def finish(self, x: torch.Tensor, cond: Any) -> torch.Tensor:
        """Samples ``(B, 1, F * hop)`` made consistent with their spectrogram
        (``project`` > 0), else unchanged."""
        if self.projection is None or cond is None:
            return x
        return self.projection(x, self._mel_of(cond))
