"""Data helpers shared by domains (a plugin may use them too; they are public API)."""

from __future__ import annotations

from typing import Any

import torch
from torch.utils.data import Dataset, default_collate

__all__ = ["TensorDictDataset", "collate_batch"]


class TensorDictDataset(Dataset):
    """In-memory samples ``x: (N, *event)`` with optional labels ``cond: (N,)``.

    Items are dicts ``{"x": (*event), "cond": ()}``; ``__getitems__`` fetches a whole batch with
    one indexing op (``{"x": (B, *event), "cond": (B,)}``), which :func:`collate_batch` passes
    through unchanged.
    """

    def __init__(self, x: torch.Tensor, cond: torch.Tensor | None = None):
        if cond is not None and len(cond) != len(x):
            raise ValueError(f"{len(x)} samples but {len(cond)} labels")
        self.x, self.cond = x, cond

    def __len__(self) -> int:
        return len(self.x)

    def _get(self, i: Any) -> dict[str, torch.Tensor]:
        out = {"x": self.x[i]}
        if self.cond is not None:
            out["cond"] = self.cond[i]
        return out

    __getitem__ = _get

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        return self._get(torch.as_tensor(idx, dtype=torch.long))


def collate_batch(batch: Any) -> Any:
    """``DataLoader`` collate: a batch already fetched as a dict passes through."""
    return batch if isinstance(batch, dict) else default_collate(batch)
