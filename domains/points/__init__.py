"""The ``points`` domain: 2D toy densities and 2D point clouds.

Registered under the entry-point group ``omnidiff.domains`` as
``points = "omnidiff_domains.points:PointsDomain"``. Submodules, one concept each:
:mod:`.densities`, :mod:`.clouds`, :mod:`.data`, :mod:`.networks`, :mod:`.metrics`,
:mod:`.artifacts`; Hydra defaults in ``conf/domain/points.yaml``.

Heavy imports (Lightning, timm, matplotlib) happen on first use, so listing domains stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["PointsDomain", "PointsData"]


class PointsDomain:
    """2D densities (event ``(2,)``) and point clouds (event ``(N, 2)``)."""

    name = "points"
    config_searchpath = "pkg://omnidiff_domains.points.conf"

    def build_data(self, **data_cfg: Any):
        """A :class:`~omnidiff_domains.points.data.PointsData` (see its arguments)."""
        from .data import PointsData

        return PointsData(**data_cfg)

    def build_network(self, event_shape: tuple[int, ...], num_classes: int,
                      name: str = "mlp", **hparams: Any) -> nn.Module:
        """``name``: ``"mlp"`` (densities) or ``"set_transformer"`` (clouds)."""
        from .networks import build_network

        return build_network(event_shape, num_classes, name=name, **hparams)

    def save_artifacts(self, samples: torch.Tensor, out_dir: str | Path,
                       cond: torch.Tensor | None = None, prefix: str = "samples") -> list[Path]:
        from .artifacts import save_artifacts

        return save_artifacts(samples, out_dir, cond=cond, prefix=prefix)

    def metrics(self, samples: torch.Tensor, reference: torch.Tensor,
                cond: torch.Tensor | None = None,
                ref_cond: torch.Tensor | None = None) -> dict[str, float]:
        """Densities ``(n, 2)``: ``sliced_w2``, ``mmd_rbf``; clouds ``(n, N, 2)``: ``mmd_cd``,
        ``coverage_cd``, ``nna_cd``; ``class_acc`` when both label sets are given;
        ``finite_frac`` always."""
        from .metrics import compute_metrics

        return compute_metrics(samples, reference, cond=cond, ref_cond=ref_cond)

    def __repr__(self) -> str:
        return "PointsDomain()"


def __getattr__(name: str):
    if name == "PointsData":
        from .data import PointsData

        return PointsData
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
