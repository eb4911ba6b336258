"""The ``points`` domain: 2D toy densities and 2D point clouds.

Registered under the entry-point group ``omnidiff.domains`` as
``points = "omnidiff_domains.points:PointsDomain"``. Submodules, one concept each:
:mod:`.densities`, :mod:`.clouds`, :mod:`.data`, :mod:`.networks`, :mod:`.metrics`,
:mod:`.artifacts`; Hydra defaults in ``conf/domain/points.yaml``.

Heavy imports (Lightning, matplotlib) happen on first use, so listing domains stays fast.
"""

from __future__ import annotations

from omnidiff.plugins.contract import LazyDomain, lazy_exports

__all__ = ["PointsDomain", "PointsData"]


class PointsDomain(LazyDomain):
    """2D densities (event ``(2,)``) and point clouds (event ``(N, 2)``).

    Networks (``model.name``): ``mlp`` (densities) or ``set_transformer`` (clouds). Metrics:
    densities ``sliced_w2``, ``mmd_rbf``; clouds ``mmd_cd``, ``coverage_cd``, ``nna_cd``;
    ``class_acc`` when both label sets are given; ``finite_frac`` always.
    """

    name = "points"
    config_searchpath = "pkg://omnidiff_domains.points.conf"
    main_metric = ("sliced_w2", "mmd_cd")  # what `omnidiff compare` plots (2D sets, clouds)
    data_factory = ".data:PointsData"
    network_factory = ".networks:build_network"
    artifact_writer = ".artifacts:save_artifacts"
    metrics_fn = ".metrics:compute_metrics"


__getattr__ = lazy_exports(__name__, {"PointsData": ".data:PointsData"})
