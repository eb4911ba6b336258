"""``timeseries``: an omnidiff domain plugin for 1D time series, event shape ``(C, L)``.

Registered in this package's ``pyproject.toml``::

    [project.entry-points."omnidiff.domains"]
    timeseries = "omnidiff_timeseries:TimeseriesDomain"

It uses only omnidiff's public API (:mod:`omnidiff.nn`, :mod:`omnidiff.io`). Heavy imports
(Lightning, matplotlib) happen on first use, so ``omnidiff domains`` stays fast.
"""

from __future__ import annotations

from omnidiff.plugins.contract import LazyDomain

__version__ = "0.1.0"
__all__ = ["TimeseriesDomain"]


class TimeseriesDomain(LazyDomain):
    """Noisy waveform mixtures (sine / square / sawtooth / triangle), event ``(C, L)``.

    Network :class:`~omnidiff_timeseries.network.ResConv1d` (``width``, ``depth``, ...);
    metrics ``psd_dist``, ``acf_err``, ``sliced_w2``, ``finite_frac`` (see :mod:`.metrics`).
    """

    name = "timeseries"
    config_searchpath = "pkg://omnidiff_timeseries.conf"
    data_factory = ".data:WaveformData"
    network_factory = ".network:build_network"
    artifact_writer = ".artifacts:save_artifacts"
    metrics_fn = ".metrics:compute_metrics"
