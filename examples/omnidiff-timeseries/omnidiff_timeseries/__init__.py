"""``timeseries``: an omnidiff domain plugin for 1D time series, event shape ``(C, L)``.

Registered in this package's ``pyproject.toml``::

    [project.entry-points."omnidiff.domains"]
    timeseries = "omnidiff_timeseries:TimeseriesDomain"

It uses only omnidiff's public API (:mod:`omnidiff.nn`, :mod:`omnidiff.io`). Heavy imports
(Lightning, matplotlib) happen on first use, so ``omnidiff domains`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__version__ = "0.1.0"
__all__ = ["TimeseriesDomain"]


class TimeseriesDomain:
    """Noisy waveform mixtures (sine / square / sawtooth / triangle), event ``(C, L)``."""

    name = "timeseries"
    config_searchpath = "pkg://omnidiff_timeseries.conf"

    def build_data(self, **data_cfg: Any):
        """A :class:`~omnidiff_timeseries.data.WaveformData` (see its arguments)."""
        from .data import WaveformData

        return WaveformData(**data_cfg)

    def build_network(self, event_shape: tuple[int, ...], num_classes: int,
                      **model_cfg: Any) -> nn.Module:
        """A :class:`~omnidiff_timeseries.network.ResConv1d` (``width``, ``depth``, ...)."""
        from .network import ResConv1d

        if len(event_shape) != 2:
            raise ValueError(f"timeseries networks take events (channels, length); got "
                             f"{tuple(event_shape)}")
        return ResConv1d(int(event_shape[0]), num_classes, **model_cfg)

    def save_artifacts(self, samples: torch.Tensor, out_dir: str | Path,
                       cond: torch.Tensor | None = None, prefix: str = "samples") -> list[Path]:
        from .artifacts import save_artifacts

        return save_artifacts(samples, out_dir, cond=cond, prefix=prefix)

    def metrics(self, samples: torch.Tensor, reference: torch.Tensor,
                cond: torch.Tensor | None = None,
                ref_cond: torch.Tensor | None = None) -> dict[str, float]:
        """``psd_dist``, ``acf_err``, ``sliced_w2``, ``finite_frac`` (see :mod:`.metrics`)."""
        from .metrics import compute_metrics

        return compute_metrics(samples, reference)

    def __repr__(self) -> str:
        return "TimeseriesDomain()"
