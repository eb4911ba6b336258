"""Latent diffusion for any domain: a registered domain seen through a trained autoencoder.

:class:`LatentDomain` wraps a domain and an
:class:`~omnidiff.methods.latent.autoencoder.Autoencoder`. Its event is the latent shape, so the
core trains, samples and guides on latents exactly as on data, with the base domain's network
(built for the latent shape), conditions and null condition. Two optional parts of the domain
contract carry the rest:

* ``decode(z) -> x``: the core decodes samples before the base domain's artifacts and metrics,
  so ``omnidiff.load(...).generate(...)`` returns data; ``sample_shape`` is a sample's shape as
  data (the data module's ``reference`` returns data of that shape);
* ``encode(x) -> z``: data into the event space (likelihoods are computed there, and reported
  as latent-space numbers).

:class:`~omnidiff.methods.latent.data.LatentData` wraps the base domain's data module: its batches
hold latents; ``reference`` returns the base domain's held-out data, since the metrics compare
decoded samples with real data. Conditions pass through untouched.
"""

from __future__ import annotations

from typing import Any

import torch

from omnidiff.methods.latent.autoencoder import ENCODE_BATCH, encode_batches, module_device
from omnidiff.plugins.contract import data_kwargs

__all__ = ["LatentDomain"]


class LatentDomain:
    """``base`` (a registered domain) on the latents of ``autoencoder``.

    It answers to the base domain's name and configs (its ``model:`` options build the base
    domain's network for the latent shape), so recipes compose as for the base domain.
    """

    def __init__(self, base: Any, autoencoder: torch.nn.Module):
        self.base = base
        self.autoencoder = autoencoder  # its mode is its owner's: GroupNorm only, no dropout
        self.name = base.name
        self.config_searchpath = getattr(base, "config_searchpath", None)
        self.sample_defaults = dict(getattr(base, "sample_defaults", {}) or {})
        self.sample_defaults.pop("clip_x0", None)  # a data-range clip means nothing on latents

    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.autoencoder.latent_shape)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.autoencoder.data_shape)

    @torch.no_grad()
    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Latents (B, *latent) -> data (B, *data), float32 on z's device."""
        out = [self.autoencoder.decode(chunk.to(module_device(self.autoencoder))).float()
               for chunk in z.split(ENCODE_BATCH)]
        return torch.cat(out).to(z.device)  # (B, *data)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, *data) -> latents (B, *latent)."""
        return encode_batches(self.autoencoder, x)

    def build_data(self, **data_cfg: Any) -> Any:
        """The base domain's data module with latents
        (:class:`~omnidiff.methods.latent.data.LatentData`; imported here, as it needs
        Lightning, which sampling does not)."""
        from omnidiff.methods.latent.data import LatentData

        return LatentData(self.base.build_data(**data_cfg), self.autoencoder)

    def build_network(self, event_shape: tuple[int, ...], cond_spec: Any, **model_cfg: Any
                      ) -> torch.nn.Module:
        return self.base.build_network(tuple(event_shape), cond_spec, **model_cfg)

    def part_for(self, method: str) -> Any:
        part = getattr(self.base, "part_for", None)
        return part(method) if part is not None else getattr(self.base, method)

    def save_artifacts(self, samples: torch.Tensor, out_dir: Any, cond: Any = None,
                       prefix: str = "samples", data: Any = None, **extra: Any) -> list:
        """The base domain's artifacts of decoded samples ``(B, *data)`` (``extra``: keywords
        such as ``captions`` for a base writer that takes them)."""
        fn = self.base.save_artifacts
        return fn(samples, out_dir, cond=cond, prefix=prefix,
                  **data_kwargs(fn, getattr(data, "base", data)), **extra)

    def metrics(self, samples: torch.Tensor, reference: torch.Tensor, cond: Any = None,
                ref_cond: Any = None, data: Any = None) -> dict[str, float]:
        """The base domain's metrics of decoded samples against held-out data."""
        fn = self.base.metrics
        return fn(samples, reference, cond=cond, ref_cond=ref_cond,
                  **data_kwargs(fn, getattr(data, "base", data)))

    def __repr__(self) -> str:
        return (f"LatentDomain({self.name}, {self.sample_shape} -> latents "
                f"{self.event_shape})")
