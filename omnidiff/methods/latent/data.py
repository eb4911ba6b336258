"""The data module of latent diffusion: a domain's data module whose batches hold latents.

The whole training set is encoded once when its latents fit in :data:`CACHE_BYTES` (in order,
before training, on a GPU when there is one), else each batch is encoded as it is drawn.
Conditions pass through untouched; ``reference`` returns held-out *data* (the metrics compare
decoded samples with it).
"""

from __future__ import annotations

import copy
import math
from typing import Any, Iterator

import lightning.pytorch as pl
import torch

from omnidiff.core.conditions import cat_conds, cond_spec_of
from omnidiff.errors import CheckpointError, ConfigError
from omnidiff.methods.latent.autoencoder import ENCODE_BATCH, encode_batches
from omnidiff.plugins.data import TensorDictDataset, collate_batch, eval_loader, train_loader

__all__ = ["LatentData", "CACHE_BYTES"]

CACHE_BYTES = 1 << 30  # encode the training set once when its latents fit in this many bytes


class _EncodedLoader:
    """A training loader whose batches are encoded as they are drawn (data too large to
    cache); resumable like the loader it wraps."""

    def __init__(self, loader: Any, ae: torch.nn.Module):
        self.loader, self.ae = loader, ae

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            yield {**batch, "x": encode_batches(self.ae, batch["x"])}

    def state_dict(self) -> dict[str, Any]:
        return self.loader.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loader.load_state_dict(state)


class LatentData(pl.LightningDataModule):
    """The base domain's data module with latents for ``x``. Attributes it does not define
    (``classes``, ``sample_rate``, ``condition``, ...) are the base module's."""

    def __init__(self, base: Any, autoencoder: torch.nn.Module):
        super().__init__()
        self.base, self.ae = base, autoencoder
        self._train: Any = None
        self._val: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("base", "ae"):
            raise AttributeError(name)
        return getattr(self.base, name)

    # ---- what the core reads --------------------------------------------------------------
    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self.ae.latent_shape)

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.ae.data_shape)

    @property
    def cond_spec(self) -> Any:
        spec = cond_spec_of(self.base)
        if spec.variable_shape:
            raise ConfigError(f"latent diffusion needs samples of one shape; this data's "
                              f"condition ({spec.describe()}) sets the shape of each sample")
        return spec

    def reference(self, n: int, generator: torch.Generator | None = None) -> tuple[Any, Any]:
        """Held-out data ``(n, *data)`` (not latents) and its conditions."""
        return self.base.reference(n, generator)

    # ---- Lightning hooks -------------------------------------------------------------------
    def prepare_data(self) -> None:
        if hasattr(self.base, "prepare_data"):
            self.base.prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if hasattr(self.base, "setup"):
            self.base.setup(stage)
        got = tuple(int(s) for s in self.base.event_shape)
        if got != tuple(self.ae.data_shape):
            raise CheckpointError(f"the autoencoder encodes samples of shape "
                                  f"{tuple(self.ae.data_shape)}, this data's are {got}; use the "
                                  "data settings of the autoencoder's run")

    def train_dataloader(self) -> Any:
        if self._train is None:
            self._train = self._latent_loader(self.base.train_dataloader(), train=True)
        return self._train

    def val_dataloader(self) -> Any:
        if not hasattr(self.base, "val_dataloader"):
            return []
        if self._val is None:
            self._val = self._latent_loader(self.base.val_dataloader(), train=False)
        return self._val

    def _latent_loader(self, loader: Any, train: bool) -> Any:
        """The same batches with latents: a loader over the encoded dataset when it fits in
        memory (encoded once, in order), else one that encodes each batch as drawn."""
        dataset = getattr(loader, "dataset", None)
        size = len(dataset) if dataset is not None and hasattr(dataset, "__len__") else None
        fits = size is not None and size * 4 * math.prod(self.ae.latent_shape) <= CACHE_BYTES
        if not fits:
            return _EncodedLoader(loader, self.ae)
        z, cond = self._encode_all(dataset)
        batch_size = int(getattr(loader, "batch_size", None) or ENCODE_BATCH)
        data = TensorDictDataset(z, cond)
        if train:
            sampler = getattr(loader, "sampler", None)
            return train_loader(data, batch_size, seed=int(getattr(sampler, "seed", 0)),
                                collate_fn=collate_batch)
        return eval_loader(data, batch_size, collate_fn=collate_batch)

    def _encode_all(self, dataset: Any) -> tuple[torch.Tensor, Any]:
        """Every item of ``dataset`` (in order) as latents, with its conditions."""
        zs, conds = [], []
        ae = copy.deepcopy(self.ae).to("cuda") if torch.cuda.is_available() else self.ae
        for batch in eval_loader(dataset, ENCODE_BATCH, collate_fn=collate_batch):
            zs.append(encode_batches(ae, batch["x"]).cpu())
            conds.append(batch.get("cond"))
        return torch.cat(zs), cat_conds(conds)

    def __repr__(self) -> str:
        return f"LatentData({self.base!r}, latents {self.event_shape})"

