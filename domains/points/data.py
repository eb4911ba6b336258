"""The points domain's data module: toy densities, point clouds, or a user's own file.

``PointsData(kind, name | path, ...)`` yields batches ``{"x": (B, *event) float32}`` plus
``"cond": (B,) long`` when the data is labelled, and exposes ``event_shape``, ``num_classes``
and ``reference(n, generator)`` (held-out samples for metrics).

Where the data come from and how held-out data are kept apart from training data:

* synthetic sources (every density, ``shapes``) are drawn on the fly from three generator
  streams derived from ``seed``: training (``train_size`` samples), validation (``val_size``)
  and the default reference stream; draws from a continuous law never coincide.
* finite sources (``digits``' 1797 images, a user's file) are split once into training and
  held-out parts by a fixed permutation (independent of ``seed``, so every run is scored
  against the same held-out part); ``holdout`` is the held-out fraction. Digit clouds are
  sampled from the images (``train_size`` clouds from the training images); a user's samples
  are used as they are (at most ``train_size`` of them).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader

from omnidiff.core.conditions import CondSpec, LabelCond, NamedCond, NoCond, TensorCond
from omnidiff.plugins.data import TensorDictDataset, collate_batch, eval_loader, train_loader

from .affine import AFFINE_DIM, apply_affine, cloud_properties, draw_affine
from .clouds import (
    CLOUDS,
    SHAPES,
    digit_images,
    load_cloud_file,
    sample_digit_clouds,
    sample_shapes,
)
from .densities import DENSITIES, NUM_MODES, load_points_file, mixture_law, sample_density

__all__ = ["KINDS", "PointsData"]

KINDS = ("density", "cloud")
_TRAIN, _VAL, _REF = 0, 1, 2
_SPLIT_SEED = 0  # fixed: held-out rows / images do not depend on the run's seed


def _stream(seed: int, stream: int) -> torch.Generator:
    """Disjoint generator streams for (seed, purpose)."""
    return torch.Generator().manual_seed(3 * int(seed) + stream)


def _check_args(kind: str, batch_size: int, train_size: int, val_size: int, holdout: float,
                num_workers: int) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown data.kind {kind!r}; use one of: {', '.join(KINDS)}")
    for key, value in (("batch_size", batch_size), ("train_size", train_size),
                       ("val_size", val_size)):
        if int(value) < 1:
            raise ValueError(f"data.{key} must be a positive integer; got {value}")
    if not 0.0 < float(holdout) < 1.0:
        raise ValueError(f"data.holdout must be a fraction in (0, 1); got {holdout}")
    if num_workers < 0:
        raise ValueError(f"data.num_workers must be >= 0; got {num_workers}")


def _balanced(count: int, n: int, g: torch.Generator) -> torch.Tensor:
    """``n`` indices into ``range(count)``, each used once before any is used twice."""
    reps = math.ceil(n / count)
    return torch.cat([torch.randperm(count, generator=g) for _ in range(reps)])[:n]


class PointsData(pl.LightningDataModule):
    """2D densities (event ``(2,)``) or point clouds (event ``(num_points, 2)``).

    Args:
        kind: ``"density"`` or ``"cloud"``.
        name: a density (:data:`~omnidiff_domains.points.densities.DENSITIES`) or a cloud
            dataset (``shapes``, ``digits``); ignored when ``path`` is given.
        path: a user's file: ``(M, 2)`` points (``.npy`` / ``.csv``) for densities, ``(M, N, 2)``
            clouds (``.npy``) for clouds; ``.npz`` with ``x`` and optional labels ``y`` also works.
        batch_size, num_workers: for the data loaders.
        num_points: points per cloud (clouds only; at most the file's ``N`` for a user file,
            ``None`` keeps all).
        train_size, val_size: numbers of training / validation samples.
        seed: seeds the generator streams (training, validation, reference) and shuffling.
        conditional: ``None`` uses the labels of cloud datasets and of a user's file, not the
            mixture modes of the built-in densities; ``True`` requires labels (for densities:
            the mode each point came from); ``False`` drops them.
        holdout: held-out fraction of a finite source (digit images, a user's file).
        affine: shift and scale every sample at random and condition on the vector
            ``(shift_x, shift_y, log_scale)`` (:mod:`~omnidiff_domains.points.affine`), alone
            or with the labels (then the condition is ``{"label": ..., "affine": ...}``).
        affine_shift: shifts are uniform in ``[-affine_shift, affine_shift]`` per axis.
        affine_scale: ``[lo, hi]``: scales are log-uniform in this range.
        dim: the ``mixture`` density's dimension (event ``(dim,)``); the other densities are 2D.
    """

    def __init__(self, kind: str = "density", name: str | None = "moons",
                 path: str | Path | None = None, batch_size: int = 256,
                 num_points: int | None = 128, train_size: int = 50_000,
                 val_size: int = 2_000, seed: int = 0, num_workers: int = 0,
                 conditional: bool | None = None, holdout: float = 0.2, affine: bool = False,
                 affine_shift: float = 1.0, affine_scale: Sequence[float] = (0.5, 2.0),
                 dim: int = 2):
        super().__init__()
        self.save_hyperparameters()
        _check_args(kind, batch_size, train_size, val_size, holdout, num_workers)
        self.kind, self.path = kind, (None if path is None else Path(path).expanduser())
        self.name = None if path is not None else name
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.train_size, self.val_size = int(train_size), int(val_size)
        self.seed, self.holdout, self.dim = int(seed), float(holdout), int(dim)
        self._data: dict[str, tuple[torch.Tensor, Any]] = {}
        # finite sources: the full samples / images and the fixed split
        self._pool: torch.Tensor | None = None  # (M, *event) or digit images (M, 8, 8)
        self._pool_labels: torch.Tensor | None = None
        if kind == "density":
            has_labels, n_cls = self._init_density()
        else:
            has_labels, n_cls = self._init_cloud(num_points)
        self._init_conditions(conditional, has_labels, n_cls, affine, affine_shift, affine_scale)
        if self._pool is not None:
            m = len(self._pool)
            held = min(m - 1, max(1, round(self.holdout * m)))
            perm = torch.randperm(m, generator=torch.Generator().manual_seed(_SPLIT_SEED))
            self._held_idx, self._train_idx = perm[:held], perm[held:]

    def _init_density(self) -> tuple[bool, int]:
        """Event ``(2,)`` (``mixture``: ``(dim,)``); returns (has labels, label count)."""
        self.event_shape: tuple[int, ...] = (2,)
        self.num_points = None
        if self.dim != 2 and (self.path is not None or self.name != "mixture"):
            raise ValueError(f"data.dim={self.dim}: only data.name=mixture has a dimension to "
                             "choose; the other densities and a user's points are 2D")
        if self.path is not None:
            self._pool, self._pool_labels = load_points_file(self.path)
            return self._pool_labels is not None, self._label_count()
        if self.name not in DENSITIES:
            raise ValueError(
                f"unknown density {self.name!r}; valid: {', '.join(DENSITIES)} (or set "
                f"data.path to your own (M, 2) .npy/.csv; for point clouds set data.kind=cloud)")
        if self.name == "mixture":
            self.event_shape = (self.dim,)
        return NUM_MODES[self.name] > 0, NUM_MODES[self.name]

    def _init_cloud(self, num_points: int | None) -> tuple[bool, int]:
        """Event ``(num_points, 2)``; returns (has labels, label count)."""
        if self.path is not None:
            self._pool, self._pool_labels = load_cloud_file(self.path)
            file_n = self._pool.shape[1]
            if num_points is not None and int(num_points) > file_n:
                raise ValueError(f"{self.path} holds clouds of {file_n} points; set "
                                 f"data.num_points<={file_n} (or null to keep all)")
            self.num_points = file_n if num_points is None else int(num_points)
            found = self._pool_labels is not None, self._label_count()
        else:
            if self.name not in CLOUDS:
                raise ValueError(
                    f"unknown cloud dataset {self.name!r}; valid: {', '.join(CLOUDS)} (or set "
                    f"data.path to your own (M, N, 2) .npy; for 2D densities set "
                    f"data.kind=density)")
            if num_points is None or int(num_points) < 1:
                raise ValueError(f"data.num_points must be a positive integer for the "
                                 f"{self.name} clouds; got {num_points}")
            self.num_points = int(num_points)
            if self.name == "digits":
                self._pool, self._pool_labels = digit_images()
                found = True, 10
            else:
                found = True, len(SHAPES)
        self.event_shape = (self.num_points, 2)
        return found

    def _init_conditions(self, conditional: bool | None, has_labels: bool, n_cls: int,
                         affine: bool, shift: float, scale: Sequence[float]) -> None:
        """The condition specification: none, labels, the affine vector, or both (named)."""
        if conditional is None:
            conditional = has_labels and (self.kind == "cloud" or self.path is not None)
        if conditional and not has_labels:
            what = self.path if self.path is not None else repr(self.name)
            raise ValueError(f"{what} has no class labels; set data.conditional=false (a user "
                             "file gets labels from an .npz with arrays 'x' and 'y')")
        self.conditional, self.affine = bool(conditional), bool(affine)
        scale = tuple(float(v) for v in scale)
        if len(scale) != 2 or not 0 < scale[0] <= scale[1] or float(shift) < 0:
            raise ValueError(f"data.affine_scale must be [lo, hi] with 0 < lo <= hi and "
                             f"data.affine_shift >= 0; got {list(scale)}, {shift}")
        self.affine_shift, self.affine_scale = float(shift), scale
        label = LabelCond(n_cls) if self.conditional else None
        vector = TensorCond((AFFINE_DIM,)) if self.affine else None
        if label is not None and vector is not None:
            self.cond_spec: CondSpec = NamedCond((("label", label), ("affine", vector)))
        else:
            self.cond_spec = label or vector or NoCond()

    @property
    def law(self) -> Any:
        """The data's exact law (a :class:`~omnidiff.core.gaussian_mixture.GaussianMixture`)
        for the ``mixture`` density, else None."""
        if self.kind == "density" and self.path is None and self.name == "mixture":
            return mixture_law(self.dim)
        return None

    @property
    def num_classes(self) -> int:
        """Class count of the labels (0 when not conditioned on labels)."""
        label = (self.cond_spec.field_specs["label"] if isinstance(self.cond_spec, NamedCond)
                 else self.cond_spec)
        return label.num_classes

    def _label_count(self) -> int:
        return 0 if self._pool_labels is None else int(self._pool_labels.max()) + 1

    # -- drawing samples ---------------------------------------------------------------------
    def _draw(self, n: int, g: torch.Generator, split: str) -> tuple[torch.Tensor, Any]:
        """``n`` samples ``(n, *event)`` and their conditions from the training or held-out
        part (labels, affine vectors, both, or None)."""
        x, y = self._draw_base(n, g, split)
        labels = y.long() if self.conditional and y is not None else None
        if not self.affine:
            return x, labels
        params = draw_affine(n, g, self.affine_shift, self.affine_scale)  # (n, 3)
        x = apply_affine(x.double(), params).float().contiguous()
        return x, (params if labels is None else {"label": labels, "affine": params})

    def _draw_base(self, n: int, g: torch.Generator, split: str
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``n`` samples ``(n, *event)`` and labels (or None), before any affine map."""
        if self._pool is None:  # synthetic
            if self.kind == "density":
                x, y = sample_density(self.name, n, g, dim=self.dim,
                                      stratified=split == "held_out")
            else:
                x, y = sample_shapes(n, self.num_points, g)
        else:
            rows = self._train_idx if split == "train" else self._held_idx
            if self.path is not None and split == "train" and n >= len(rows):
                idx = rows  # a user's training samples, as they are
            elif self.path is not None and n <= len(rows):  # without replacement
                idx = rows[torch.randperm(len(rows), generator=g)[:n]]
            else:
                idx = rows[_balanced(len(rows), n, g)]
            y = None if self._pool_labels is None else self._pool_labels[idx]
            if self.name == "digits":
                x = sample_digit_clouds(self._pool[idx], self.num_points, g)
            else:
                x = self._pool[idx]
                if self.kind == "cloud" and self.num_points < x.shape[1]:
                    keep = torch.rand(x.shape[:2], generator=g).argsort(1)[:, :self.num_points]
                    x = torch.gather(x, 1, keep[..., None].expand(-1, -1, 2))
        return x.float().contiguous(), y

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """The affine condition ``(n, 3)`` of clouds ``x: (n, N, 2)`` (centroid, log RMS
        radius): clouds with ``data.affine=true`` carry their condition in the data."""
        if not self.affine or self.conditional or self.kind != "cloud":
            why = ("labels are not computed from data" if self.conditional else
                   "a single point carries no per-sample shift and scale" if self.affine else
                   "this data has no condition")
            raise ValueError(f"points data: the condition is not computed from data here "
                             f"({why}); pass cond= directly")
        if x.dim() != 3 or x.shape[-1] != 2:
            raise ValueError(f"condition(x) takes clouds (n, N, 2); got {tuple(x.shape)}")
        return cloud_properties(x.double())

    def reference(self, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, Any]:
        """Held-out samples ``(n, *event)`` and their conditions (None when unconditional).

        Never drawn from the training set: a separate generator stream for synthetic data,
        the held-out split for digits and user files. The ``mixture`` density's held-out
        points give each mode exactly its weight's share (stratified).
        """
        g = generator if generator is not None else _stream(self.seed, _REF)
        return self._draw(int(n), g, "held_out")

    # -- LightningDataModule hooks -----------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if "train" not in self._data:
            self._data["train"] = self._draw(self.train_size, _stream(self.seed, _TRAIN),
                                             "train")
            self._data["val"] = self._draw(self.val_size, _stream(self.seed, _VAL), "held_out")

    def _dataset(self, split: str) -> TensorDictDataset:
        self.setup()
        return TensorDictDataset(*self._data[split])

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._dataset("train"), self.batch_size, seed=self.seed,
                            num_workers=self.num_workers, collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self._dataset("val"), self.batch_size,
                           num_workers=self.num_workers, collate_fn=collate_batch)

    def __repr__(self) -> str:
        src = str(self.path) if self.path is not None else self.name
        return (f"PointsData(kind={self.kind!r}, source={src!r}, event_shape={self.event_shape},"
                f" cond={self.cond_spec.describe()!r})")

    __str__ = __repr__
