"""The ``image`` domain: a U-Net denoiser, image datasets, PNG grids and offline metrics.

Registered under the entry-point group ``omnidiff.domains`` as
``image = "omnidiff_domains.image:ImageDomain"``. Submodules, one concept each:
:mod:`.unet` (ADM-style U-Net), :mod:`.data` (``ImageData``: digits / mnist / fashion_mnist /
cifar10 / imagefolder / folder), :mod:`.classifier` (the project's digits classifier),
:mod:`.metrics` (class accuracy, Fréchet distance, precision / recall, pixel statistics),
:mod:`.artifacts` (PNG grids + raw tensors); Hydra defaults in ``conf/domain/image.yaml``.

Heavy imports (Lightning, torchvision, scikit-learn) happen on first use, so listing domains
stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["ImageDomain", "ImageData", "UNet"]


class ImageDomain:
    """Images, event ``(C, H, W)`` with values in [-1, 1]."""

    name = "image"
    config_searchpath = "pkg://omnidiff_domains.image.conf"

    def build_data(self, **data_cfg: Any):
        """An :class:`~omnidiff_domains.image.data.ImageData` (see its arguments)."""
        from .data import ImageData

        return ImageData(**data_cfg)

    def build_network(self, event_shape: tuple[int, ...], num_classes: int,
                      **model_cfg: Any) -> nn.Module:
        """A :class:`~omnidiff_domains.image.unet.UNet` (keys: base_channels, channel_mult,
        num_res_blocks, attn_resolutions, dropout, num_head_channels, norm_groups,
        channels_last, compile)."""
        from .unet import build_unet

        return build_unet(event_shape, num_classes, **model_cfg)

    def save_artifacts(self, samples: torch.Tensor, out_dir: str | Path,
                       cond: torch.Tensor | None = None, prefix: str = "samples") -> list[Path]:
        """``<prefix>.png`` (grid; one row per class when ``cond`` is given), ``.pt``, ``.npy``."""
        from .artifacts import save_artifacts

        return save_artifacts(samples, out_dir, cond=cond, prefix=prefix)

    def metrics(self, samples: torch.Tensor, reference: torch.Tensor,
                cond: torch.Tensor | None = None,
                ref_cond: torch.Tensor | None = None) -> dict[str, float]:
        """Always ``pixel_fd``, ``pixel_mean_gap``, ``pixel_std_gap``; for digits also ``fd``,
        ``precision``, ``recall`` and (with ``cond``) ``class_acc``. See :mod:`.metrics`."""
        from .metrics import image_metrics

        return image_metrics(samples, reference, cond=cond, ref_cond=ref_cond)

    def __repr__(self) -> str:
        return "ImageDomain()"


def __getattr__(name: str):
    if name == "ImageData":
        from .data import ImageData

        return ImageData
    if name == "UNet":
        from .unet import UNet

        return UNet
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
