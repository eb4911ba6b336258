"""Generated 1D time series: noisy waveforms with random frequency, phase and amplitude.

``WaveformData`` yields batches ``{"x": (B, C, L) float32}`` plus ``"cond": (B,) long`` (the
waveform type) when ``conditional``. Training, validation and reference samples come from
three disjoint generator streams derived from ``seed``, so held-out data never repeat training
data. Every channel is the same waveform type and frequency with its own phase offset.
"""

from __future__ import annotations

import math
from typing import Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from omnidiff.core.conditions import LabelCond, NoCond
from omnidiff.plugins.data import TensorDictDataset, collate_batch, eval_loader, train_loader

__all__ = ["WAVEFORMS", "WaveformData", "sample_waveforms"]

WAVEFORMS = ("sine", "square", "sawtooth", "triangle")
_TRAIN, _VAL, _REF = 0, 1, 2


def _shape(kind: str, theta: torch.Tensor) -> torch.Tensor:
    """A waveform of unit amplitude at phases ``theta`` (any shape)."""
    if kind == "sine":
        return torch.sin(theta)
    if kind == "square":  # smoothed, so the data are not discontinuous
        return torch.tanh(4 * torch.sin(theta)) / math.tanh(4)
    saw = 2 * torch.frac(theta / (2 * math.pi)) - 1  # theta >= 0
    if kind == "sawtooth":
        return saw
    if kind == "triangle":
        return 2 * saw.abs() - 1
    raise ValueError(f"unknown waveform {kind!r}; choose from {', '.join(WAVEFORMS)}")


def sample_waveforms(n: int, *, channels: int, length: int, kinds: Sequence[str],
                     freq: Sequence[float] = (1.5, 6.0), noise: float = 0.05,
                     scale: float = 1.5, generator: torch.Generator | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` series ``(n, channels, length)`` and their waveform indices ``(n,)`` into ``kinds``.

    ``freq``: cycles per window (uniform in the range); amplitude uniform in [0.6, 1.2];
    Gaussian noise of std ``noise``; everything times ``scale`` (about unit variance).
    """
    g = generator
    labels = torch.randint(len(kinds), (n,), generator=g)  # (n,)
    f = torch.empty(n, 1, 1).uniform_(float(freq[0]), float(freq[1]), generator=g)
    phase = torch.rand(n, channels, 1, generator=g) * 2 * math.pi  # (n, C, 1)
    amp = torch.empty(n, 1, 1).uniform_(0.6, 1.2, generator=g)
    t = torch.arange(length, dtype=torch.float32) / length  # (L,)
    theta = 2 * math.pi * f * t + phase  # (n, C, L)
    x = torch.empty(n, channels, length)
    for k, kind in enumerate(kinds):
        rows = labels == k
        x[rows] = _shape(kind, theta[rows])
    x = amp * x + noise * torch.randn(n, channels, length, generator=g)
    return (scale * x).float(), labels


class WaveformData(pl.LightningDataModule):
    """Noisy waveforms, event ``(channels, length)``.

    Args:
        channels, length: the event shape.
        kinds: waveform types (the classes when ``conditional``).
        conditional: yield ``cond`` labels (the waveform type).
        freq: range of cycles per window; noise: noise std; scale: overall scale.
        train_size, val_size, batch_size, num_workers, seed: as usual.
    """

    def __init__(self, channels: int = 1, length: int = 64,
                 kinds: Sequence[str] = WAVEFORMS, conditional: bool = True,
                 freq: Sequence[float] = (1.5, 6.0), noise: float = 0.05, scale: float = 1.5,
                 train_size: int = 20_000, val_size: int = 1_000, batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0):
        super().__init__()
        kinds = tuple(str(k) for k in kinds)
        bad = [k for k in kinds if k not in WAVEFORMS]
        if bad or not kinds:
            raise ValueError(f"unknown waveform(s) {bad or '[]'} in data.kinds; choose from "
                             f"{', '.join(WAVEFORMS)}")
        if int(channels) < 1 or int(length) < 8:
            raise ValueError(f"data.channels must be >= 1 and data.length >= 8; got "
                             f"{channels}, {length}")
        self.channels, self.length, self.kinds = int(channels), int(length), kinds
        self.conditional = bool(conditional)
        self.gen_kw = dict(channels=self.channels, length=self.length, kinds=kinds,
                           freq=tuple(float(f) for f in freq), noise=float(noise),
                           scale=float(scale))
        self.train_size, self.val_size = int(train_size), int(val_size)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.event_shape = (self.channels, self.length)
        self.cond_spec = LabelCond(len(kinds)) if self.conditional else NoCond()
        self.num_classes = self.cond_spec.num_classes
        self._sets: dict[str, TensorDictDataset] = {}

    def _draw(self, n: int, stream: int) -> TensorDictDataset:
        g = torch.Generator().manual_seed(3 * self.seed + stream)
        x, y = sample_waveforms(n, generator=g, **self.gen_kw)
        return TensorDictDataset(x, y if self.conditional else None)

    def setup(self, stage: str | None = None) -> None:
        if not self._sets:
            self._sets = {"train": self._draw(self.train_size, _TRAIN),
                          "val": self._draw(self.val_size, _VAL)}

    def train_dataloader(self) -> DataLoader:
        self.setup()
        return train_loader(self._sets["train"], self.batch_size, seed=self.seed,
                            num_workers=self.num_workers, collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        self.setup()
        return eval_loader(self._sets["val"], self.batch_size, num_workers=self.num_workers,
                           collate_fn=collate_batch)

    def reference(self, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` held-out series ``(n, C, L)`` and labels ``(n,)`` (None if unconditional)."""
        g = generator if generator is not None else torch.Generator().manual_seed(
            3 * self.seed + _REF)
        # a fresh stream, disjoint from the training / validation ones
        g = torch.Generator().manual_seed(int(torch.randint(2**31, (), generator=g)) * 3 + _REF
                                          + 10**6)
        x, y = sample_waveforms(n, generator=g, **self.gen_kw)
        return x, (y if self.conditional else None)
