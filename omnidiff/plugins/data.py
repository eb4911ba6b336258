"""Data helpers shared by domains (a plugin may use them too; they are public API)."""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, default_collate

from omnidiff.core.conditions import cond_batch_size, index_cond
from omnidiff.errors import ConditionError, DataError

__all__ = ["TensorDictDataset", "collate_batch", "EpochSampler", "ResumableLoader", "train_loader",
           "eval_loader", "prepare_data_module", "check_batch", "mask_along", "parse_numbers"]


def check_batch(batch: Any, event_shape: tuple[int, ...], spec: Any,
                dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, Any]:
    """A training batch as the core reads it: a dict with ``x: (B, *event)`` (any sizes of that
    rank where the condition fixes the shape; floating, finite once cast to the network's
    ``dtype``) and, for conditional data, ``cond`` of the kind
    ``spec`` declares. :class:`DataError` names what is wrong (the keys found, the shape)."""
    if not isinstance(batch, dict) or "x" not in batch:
        got = (f"a dict with keys {sorted(map(str, batch))}" if isinstance(batch, dict)
               else type(batch).__name__)
        raise DataError(f"batches must be dicts with 'x' (and 'cond' for conditional data); "
                        f"got {got}")
    x = batch["x"]
    fits = isinstance(x, torch.Tensor) and (
        x.dim() == len(event_shape) + 1 if getattr(spec, "variable_shape", False)  # a mel
        else tuple(x.shape[1:]) == tuple(event_shape))  # fixes the length of its audio
    if not (fits and x.is_floating_point() and x.shape[0] >= 1):
        raise DataError(f"batch['x'] must be a float tensor (B, *{tuple(event_shape)}); got "
                        f"{getattr(x, 'dtype', type(x).__name__)} "
                        f"{tuple(getattr(x, 'shape', ()))}")
    if not bool(torch.isfinite(x.detach().to(dtype)).all()):
        where = "" if bool(torch.isfinite(x).all()) else " (already before the cast)"
        raise DataError(f"batch['x'] holds NaN or inf once cast to the network's {dtype}{where}: "
                        "the data is out of range; clean or rescale it")
    if not spec.conditional:
        return x, None
    try:
        spec.check_batch(batch.get("cond"), x.shape[0])
    except ConditionError as exc:
        raise DataError(f"the data module declares {spec.describe()}: batch['cond']: {exc}"
                        ) from None
    return x, batch.get("cond")


def prepare_data_module(dm: Any) -> Any:
    """Run a data module's ``prepare_data()`` and ``setup("fit")`` (idempotent hooks), so that
    its shapes, conditions and reference data are known outside a Trainer; returns ``dm``."""
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    if hasattr(dm, "setup"):
        dm.setup("fit")
    return dm


class TensorDictDataset(Dataset):
    """In-memory samples ``x: (N, *event)`` with optional conditions of any kind: labels
    ``(N,)``, a tensor ``(N, *shape)`` or a dict of them (:mod:`omnidiff.core.conditions`).

    Items are dicts ``{"x": (*event), "cond": ...}``; ``__getitems__`` fetches a whole batch
    with one indexing op per tensor (``{"x": (B, *event), "cond": (B, ...)}``), which
    :func:`collate_batch` passes through unchanged.
    """

    def __init__(self, x: torch.Tensor, cond: Any = None):
        if cond is not None and cond_batch_size(cond) != len(x):
            raise DataError(f"{len(x)} samples but {cond_batch_size(cond)} conditions")
        self.x, self.cond = x, cond

    def __len__(self) -> int:
        return len(self.x)

    def _get(self, i: Any) -> dict[str, Any]:
        out: dict[str, Any] = {"x": self.x[i]}
        if self.cond is not None:
            out["cond"] = index_cond(self.cond, i)
        return out

    __getitem__ = _get

    def __getitems__(self, idx: list[int]) -> dict[str, torch.Tensor]:
        return self._get(torch.as_tensor(idx, dtype=torch.long))


def collate_batch(batch: Any) -> Any:
    """``DataLoader`` collate: a batch already fetched as a dict passes through."""
    return batch if isinstance(batch, dict) else default_collate(batch)


class EpochSampler(DistributedSampler):
    """Indices whose order depends only on ``(seed, epoch)``, sharded across ranks, and able to
    start partway through an epoch: the sampler behind :func:`train_loader`'s exact resume.

    Each epoch is a fresh permutation drawn from a generator seeded by ``(seed, epoch)`` (not by
    how many epochs ran before), so a resumed run that knows its epoch draws the same order as
    the run that was killed. Rank ``r`` of ``R`` takes every R-th index (padded to a multiple of
    R, as :class:`~torch.utils.data.DistributedSampler`; Lightning leaves a DistributedSampler
    in place instead of wrapping it). :meth:`skip` drops the first ``n`` indices of the next
    iteration only. ``len()`` stays the full epoch so Lightning's epoch bookkeeping holds.
    """

    def __init__(self, n: int, *, seed: int = 0, shuffle: bool = True,
                 num_replicas: int | None = None, rank: int | None = None):
        if num_replicas is None or rank is None:
            dist = torch.distributed
            on = dist.is_available() and dist.is_initialized()
            num_replicas = num_replicas if num_replicas is not None else (
                dist.get_world_size() if on else 1)
            rank = rank if rank is not None else (dist.get_rank() if on else 0)
        super().__init__(range(int(n)), num_replicas=num_replicas, rank=rank, shuffle=shuffle,
                         seed=int(seed))
        self._resume: tuple[int, int] | None = None  # (epoch, indices to skip in it)
        self.start = 0  # indices the current iteration skipped

    def skip(self, n: int, epoch: int | None = None) -> None:
        """Start the next iteration at its ``n``-th index (0 <= n <= len), if that iteration is
        of ``epoch`` (default: the current one). Lightning moves on to the next epoch by itself
        when a run stopped after an epoch's last batch; the skip then lapses."""
        if not 0 <= n <= self.num_samples:
            raise ValueError(f"cannot skip {n} of an epoch of {self.num_samples} indices")
        self._resume = (self.epoch if epoch is None else int(epoch), int(n))

    @property
    def pending(self) -> tuple[int, int] | None:
        """The (epoch, skip) the next iteration will honour, if any."""
        return self._resume

    def epoch_seed(self, stream: int = 0) -> int:
        """A seed that depends only on (seed, epoch, stream)."""
        return self.seed * 1_000_003 + self.epoch + stream

    def __iter__(self) -> Iterator[int]:
        n = len(self.dataset)
        if self.shuffle:
            g = torch.Generator().manual_seed(self.epoch_seed())
            order = torch.randperm(n, generator=g)
        else:
            order = torch.arange(n)
        if self.total_size > n:  # pad so every rank gets the same count
            order = torch.cat([order, order[: self.total_size - n]])
        mine = order[self.rank: self.total_size: self.num_replicas]
        resume, self._resume = self._resume, None
        self.start = resume[1] if resume is not None and resume[0] == self.epoch else 0
        return iter(mine[self.start:].tolist())


class ResumableLoader(DataLoader):
    """A training ``DataLoader`` over an :class:`EpochSampler` that Lightning treats as
    stateful: its ``state_dict`` (epoch and batches consumed in it) goes into every checkpoint
    and ``load_state_dict`` makes the next iteration continue where the killed run stopped."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if not isinstance(self.sampler, EpochSampler):
            raise TypeError("ResumableLoader needs sampler=EpochSampler(...); build it with "
                            "omnidiff.plugins.data.train_loader")
        # sampler indices per batch (1 where each index fetches a whole batch: shards)
        self._per = self.batch_size or 1
        self._iter: Any = None

    def __iter__(self):
        # worker seeds come from this generator, never from the global RNG (which drives the
        # training noise and must see the same draws in a resumed run as in an unbroken one)
        self.generator.manual_seed(self.sampler.epoch_seed(stream=1))
        self._iter = super().__iter__()
        return self._iter

    def state_dict(self) -> dict[str, int]:
        """{"epoch", "batches"}: the epoch in progress and how many of its batches were used."""
        yielded = self._iter._num_yielded if self._iter is not None else 0
        if yielded == 0 and self.sampler.pending is not None:  # loaded, not yet iterated
            epoch, skip = self.sampler.pending
            return {"epoch": epoch, "batches": skip // self._per}
        done = (self.sampler.start // self._per if yielded else 0) + yielded
        return {"epoch": int(self.sampler.epoch), "batches": int(done)}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, batches = int(state["epoch"]), int(state["batches"])
        if batches >= len(self):  # saved after an epoch's last batch: the next one is due
            epoch, batches = epoch + 1, 0
        self.sampler.set_epoch(epoch)
        self.sampler.skip(batches * self._per, epoch)
        self._iter = None


def train_loader(dataset: Dataset, batch_size: int, *, seed: int = 0, shuffle: bool = True,
                 drop_last: bool | None = None, **kwargs: Any) -> ResumableLoader:
    """The training loader every domain should use: shuffled per ``(seed, epoch)``, sharded
    across DDP ranks, and resumed at the exact batch after a kill (``resume=auto``).

    ``drop_last`` defaults to True when the dataset holds at least one full batch per rank.
    ``kwargs`` go to ``DataLoader`` (``num_workers``, ``collate_fn``, ...).
    """
    sampler = EpochSampler(len(dataset), seed=seed, shuffle=shuffle)
    if drop_last is None:
        drop_last = sampler.num_samples >= batch_size
    if kwargs.get("num_workers", 0) > 0:
        kwargs.setdefault("persistent_workers", True)
    return ResumableLoader(dataset, batch_size=int(batch_size), sampler=sampler,
                           drop_last=drop_last, generator=torch.Generator(), **kwargs)


def eval_loader(dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
    """An ordered validation loader with its own generator: iterating it never draws from the
    global RNG, so validation does not shift the training noise of the steps after it."""
    return DataLoader(dataset, batch_size=int(batch_size), shuffle=False,
                      generator=torch.Generator().manual_seed(0), **kwargs)


def mask_along(event_shape: Sequence[int], axis: int, known: Sequence[int]) -> torch.Tensor:
    """A mask ``(*event_shape)`` bool, True at the positions ``known`` of axis ``axis`` (for
    ``read_mask``: the given frames of a clip, the samples of a waveform outside a gap)."""
    size = int(event_shape[axis])
    line = torch.zeros(size, dtype=torch.bool)
    line[torch.as_tensor(list(known), dtype=torch.long)] = True
    view = [1] * len(event_shape)
    view[axis] = size
    return line.view(view).expand(*event_shape).contiguous()


def parse_numbers(value: Any, kind: type, what: str) -> list:
    """``1,2,5`` / ``[1, 2, 5]`` / ``0.10-0.13,0.5-0.6`` (spans, for ``kind=tuple``) as a list;
    a :class:`DataError` naming ``what`` otherwise."""
    items = value if isinstance(value, (list, tuple)) else str(value).strip("[]").split(",")
    try:
        if kind is tuple:
            out = [tuple(float(v) for v in str(s).split("-", 1)) for s in items if str(s)]
            if any(len(s) != 2 or not s[0] < s[1] for s in out):
                raise ValueError
            return out
        return [kind(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        raise DataError(f"mask={value!r}: give {what}") from None
