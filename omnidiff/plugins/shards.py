"""Sharded training data in LitData's optimized format: written once by ``omnidiff prepare``,
streamed by ``data.stream=DIR`` (a folder, or any URL LitData reads: ``s3://``, ``gs://``...).

Why LitData's format rather than WebDataset tar shards: LitData reads local and object-store
folders through one class with a local chunk cache, serialises tensors as raw bytes (no
per-sample decoding) and gives random access to any record, which is what an exactly
resumable order needs; a WebDataset is a stream whose position is lost when the run is.

A shard folder::

    DIR/meta/     one record: the JSON below (domain, event shape, condition, data config)
    DIR/blocks/   the samples, in blocks of ``block`` consecutive samples

**A sample record is one item of the domain's training dataset**: ``{"x": (*event),
"cond": ...}`` (``cond`` of the kind the data module declares; absent when unconditional).
A plugin gets sharding without code: :func:`write_shards` reads its training dataset
(``__getitems__`` when it has one, else ``__getitem__`` and ``default_collate``) in a seeded
random order and stores the records batched, ``block`` to a record of LitData's; anything a
dataset draws per item (a random crop or flip) is drawn once, when the shards are written.

Streaming (:func:`stream_loader`) is exact and resumable like the in-memory
:func:`~omnidiff.plugins.data.train_loader`: each epoch deals the blocks, shuffled by
``(seed, epoch)``, to the ranks (rank ``r`` of ``R`` takes every R-th: no sample is seen by two
ranks), reads them in windows of about ``window`` samples, shuffles each window by ``(seed,
epoch, rank, window)`` and cuts it into batches. A batch is therefore a pure function of
``(seed, epoch, rank, batch index)``, and the loader's state is the same ``{epoch, batches}``
Lightning stores for the in-memory loader. Every rank runs the same number of batches (the
fewest any rank can fill), as DDP needs.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import shutil
from bisect import bisect_right
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator

import torch
from torch.utils.data import Dataset, default_collate

from omnidiff.core.conditions import as_cond_spec, cat_conds, index_cond
from omnidiff.errors import ConfigError, DataError
from omnidiff.plugins.data import EpochSampler, ResumableLoader, collate_batch

__all__ = ["FORMAT", "Shards", "ShardBatches", "write_shards", "stream_loader",
           "stream_training_data", "check_shards", "need_litdata", "shard_folder_problem"]

FORMAT = "omnidiff-shards/1"
BLOCK_BYTES = 1 << 20  # a block of samples is about this big (at least one sample)
MAX_BLOCK = 1024
MIN_BLOCKS = 64  # small datasets still get this many blocks to shuffle and deal to ranks
CACHE_BYTES = 256 << 20  # decoded blocks kept in memory per process (a small dataset: all)
WINDOW_BYTES = 16 << 20  # a window holds at most this much (and at least one batch)


def need_litdata(who: str = "data.stream and omnidiff prepare need") -> Any:
    """The ``litdata`` module, or one line saying how to install it (``who``: what needs it,
    with its verb)."""
    try:
        import litdata
    except ImportError:
        raise ConfigError(f"{who} the litdata package: pip install 'omnidiff[scale]' "
                          "(or pip install litdata)") from None
    return litdata


def _join(source: str, part: str) -> str:
    return source.rstrip("/") + "/" + part


def shard_folder_problem(source: str) -> str | None:
    """What is wrong with ``data.stream=source`` as a local shard folder (None when it holds
    shards, or is a URL, which only LitData can read)."""
    if _is_url(source) or Path(source, "meta", "index.json").is_file():
        return None
    what = "does not exist" if not Path(source).exists() else "holds no shards"
    return (f"data.stream={source} {what}; write shards with `omnidiff prepare recipe=NAME "
            "out=DIR` and pass that DIR")


def _is_url(source: str) -> bool:
    return "://" in source


# ---- writing ------------------------------------------------------------------------------


def _fetch(dataset: Any, idx: list[int]) -> dict[str, Any]:
    """Items ``idx`` of a training dataset as one batch ``{"x": (k, *event), "cond": ...}``."""
    if hasattr(dataset, "__getitems__"):
        batch = dataset.__getitems__(idx)
    else:
        batch = default_collate([dataset[i] for i in idx])
    if not isinstance(batch, dict) or "x" not in batch:
        raise DataError("a shard record is a dict with 'x' (and 'cond'); the training dataset "
                        f"gave {type(batch).__name__}")
    out = {"x": batch["x"].detach().cpu().contiguous()}
    if batch.get("cond") is not None:
        out["cond"] = _contiguous(batch["cond"])
    return out


def _contiguous(cond: Any) -> Any:
    if isinstance(cond, dict):
        return {k: _contiguous(v) for k, v in cond.items()}
    return torch.as_tensor(cond).detach().cpu().contiguous()


def _nbytes(batch: Any) -> int:
    if isinstance(batch, dict):
        return sum(_nbytes(v) for v in batch.values())
    return batch.numel() * batch.element_size() if isinstance(batch, torch.Tensor) else 8


def _write_one(folder: Path, items: Iterator[Any], chunk_bytes: str | None = None) -> None:
    from litdata.streaming.writer import BinaryWriter

    folder.mkdir(parents=True)
    writer = BinaryWriter(str(folder), chunk_bytes=chunk_bytes,
                          chunk_size=None if chunk_bytes else 1)
    for i, item in enumerate(items):
        writer.add_item(i, item)
    writer.done()
    writer.merge()


def write_shards(dataset: Any, out: str | Path, meta: dict[str, Any], *, seed: int = 0,
                 block_bytes: int = BLOCK_BYTES, chunk_bytes: str = "64MB",
                 progress: Any = None, overwrite: bool = False) -> dict[str, Any]:
    """Write every sample of ``dataset`` to the shard folder ``out``, in a random order drawn
    from ``seed``; returns the folder's metadata (``meta`` plus ``samples``, ``block``,
    ``blocks``, ``bytes``). Written under a temporary name and renamed when complete: an
    existing ``out`` (replaced only with ``overwrite``) stays whole until then.
    ``progress(n)`` is called after each block with the samples written."""
    need_litdata()
    out = Path(out)
    n = len(dataset)
    if n == 0:
        raise DataError("the training dataset is empty: nothing to write")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(int(seed))).tolist()
    first = _fetch(dataset, order[:1])
    block = int(max(1, min(MAX_BLOCK, block_bytes // max(1, _nbytes(first)),
                           math.ceil(n / MIN_BLOCKS))))
    starts = range(0, n, block)
    info = {"format": FORMAT, **meta, "samples": n, "block": block, "blocks": len(starts),
            "bytes": _nbytes(first) * n}
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)

    def blocks() -> Iterator[dict[str, Any]]:
        for s in starts:
            batch = _fetch(dataset, order[s: s + block])
            yield batch
            if progress is not None:
                progress(len(batch["x"]))

    try:
        _write_one(tmp / "blocks", blocks(), chunk_bytes)
        _write_one(tmp / "meta", iter([json.dumps(info)]))
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        if out.exists() and overwrite:
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return info


# ---- reading ------------------------------------------------------------------------------


class Shards:
    """A shard folder opened for reading: ``meta`` (its JSON) and ``block(j)`` (a dict of
    batched tensors). Opens LitData's reader lazily, once per process (dataloader workers
    included)."""

    def __init__(self, source: str | Path):
        litdata = need_litdata()
        self.source = str(source)
        problem = shard_folder_problem(self.source)
        if problem:
            raise DataError(problem)
        try:
            meta = json.loads(litdata.StreamingDataset(_join(self.source, "meta"))[0])
        except Exception as exc:
            raise DataError(f"data.stream={self.source}: cannot read its shard metadata "
                            f"({type(exc).__name__}: {str(exc)[:120]}); is it a folder written "
                            "by `omnidiff prepare`?") from None
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise DataError(f"data.stream={self.source}: not a shard folder of this omnidiff "
                            f"(format {meta.get('format') if isinstance(meta, dict) else '?'},"
                            f" expected {FORMAT}); write it again with `omnidiff prepare`")
        self.meta = meta
        self.cache_bytes = CACHE_BYTES
        self._fresh()

    def _fresh(self) -> None:
        self._blocks: Any = None
        self._pid: int | None = None
        self._cache: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self._cached = 0

    def __getstate__(self) -> dict[str, Any]:  # a dataloader worker opens its own reader
        state = dict(self.__dict__)
        for key in ("_blocks", "_pid", "_cache", "_cached"):
            state.pop(key)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._fresh()

    def block(self, j: int) -> dict[str, Any]:
        """Block ``j``: read through LitData (and its local chunk cache for remote data), then
        kept in memory while the blocks held stay under ``cache_bytes`` (least recently used
        out first), so a dataset that fits is read once per process."""
        j = int(j)
        if j in self._cache:
            self._cache.move_to_end(j)
            return self._cache[j]
        if self._blocks is None or self._pid != os.getpid():
            self._blocks = need_litdata().StreamingDataset(_join(self.source, "blocks"))
            self._pid = os.getpid()
        block = self._blocks[j]
        size = _nbytes(block)
        if size <= self.cache_bytes:
            self._cache[j] = block
            self._cached += size
            while self._cached > self.cache_bytes:
                self._cached -= _nbytes(self._cache.popitem(last=False)[1])
        return block

    @property
    def sample_bytes(self) -> float:
        return float(self.meta["bytes"]) / max(1, int(self.meta["samples"]))

    def block_size(self, j: int) -> int:
        """Samples in block ``j`` (all hold ``block`` but the last)."""
        n, k = int(self.meta["samples"]), int(self.meta["block"])
        return min(k, n - j * k)


def check_shards(shards: Shards, domain: str, event_shape: Any, cond_spec: Any) -> None:
    """One line when the shards were written for another domain, sample shape or condition."""
    meta, src = shards.meta, shards.source
    if meta.get("domain") != domain:
        raise DataError(f"data.stream={src} holds {meta.get('domain')} data (recipe "
                        f"{meta.get('recipe')}); this run trains the {domain} domain: prepare "
                        "shards with this recipe")
    if tuple(meta.get("event_shape", ())) != tuple(event_shape):
        raise DataError(f"data.stream={src} holds samples of shape {tuple(meta['event_shape'])}"
                        f"; this run's data makes {tuple(event_shape)}: prepare the shards with "
                        "the same data settings")
    want, got = as_cond_spec(cond_spec).to_dict(), as_cond_spec(meta.get("cond")).to_dict()
    if want != got:
        raise DataError(f"data.stream={src} holds {as_cond_spec(got).describe()}; this run's "
                        f"data declares {as_cond_spec(want).describe()}: prepare the shards "
                        "with the same data settings")


class ShardBatches(Dataset):
    """Batches of a shard folder for one rank: item ``(epoch, b)`` is batch ``b`` of that
    epoch, ``{"x": (batch, *event), "cond": ...}`` (see the module docstring for the order)."""

    def __init__(self, shards: Shards, batch_size: int, *, seed: int = 0,
                 window: int | None = None, rank: int = 0, world: int = 1):
        self.shards, self.batch_size, self.seed = shards, int(batch_size), int(seed)
        self.rank, self.world = int(rank), int(world)
        k, nb = int(shards.meta["block"]), int(shards.meta["blocks"])
        if nb < self.world:
            raise DataError(f"data.stream={shards.source} has {nb} block(s) for {self.world} "
                            "ranks; prepare more data or train on fewer devices")
        if window is None:  # 16 batches, at most WINDOW_BYTES (but one batch at least)
            fit = int(WINDOW_BYTES // max(1.0, shards.sample_bytes))
            window = max(self.batch_size, min(16 * self.batch_size, fit))
        self.window_blocks = max(1, math.ceil(int(window) / k))
        # the fewest samples a rank can be dealt: floor(nb / R) blocks, the short last among them
        fill = (nb // self.world) * k - (k - shards.block_size(nb - 1))
        self.batches = max(1, fill // self.batch_size)
        self._cache: dict[tuple[int, int], dict[str, Any]] = {}
        self._epoch: tuple[int, list[int], list[int]] | None = None  # (epoch, blocks, ends)

    def _plan(self, epoch: int) -> tuple[list[int], list[int]]:
        """This rank's blocks in ``epoch`` and the cumulative sample counts of its windows."""
        if self._epoch is None or self._epoch[0] != epoch:
            nb = int(self.shards.meta["blocks"])
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            blocks = torch.randperm(nb, generator=g)[self.rank::self.world].tolist()
            sizes = [self.shards.block_size(j) for j in blocks]
            per = self.window_blocks
            ends = list(itertools.accumulate(sum(sizes[i: i + per])
                                             for i in range(0, len(sizes), per)))
            self._epoch = (epoch, blocks, ends)
        return self._epoch[1], self._epoch[2]

    def __len__(self) -> int:
        return self.batches

    def _window(self, epoch: int, w: int) -> dict[str, Any]:
        """Window ``w`` of this rank's epoch: its blocks' samples in a random order, written
        once into a new batch (``{"x": (n, *event), ...}``; batches are slices of it)."""
        per = self.window_blocks
        parts = [self.shards.block(j) for j in self._plan(epoch)[0][w * per: (w + 1) * per]]
        g = torch.Generator().manual_seed(
            ((self.seed * 1_000_003 + epoch) * 65_537 + self.rank) * 1_000_033 + w)
        sizes = [len(p["x"]) for p in parts]
        to = torch.randperm(sum(sizes), generator=g).split(sizes)  # where each sample goes
        return _scatter(parts, list(to))

    def _get_window(self, epoch: int, w: int) -> dict[str, Any]:
        key = (epoch, w)
        if key not in self._cache:
            if len(self._cache) >= 2:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self._window(epoch, w)
        return self._cache[key]

    def __getitem__(self, index: tuple[int, int]) -> dict[str, Any]:
        epoch, b = int(index[0]), int(index[1])
        ends = self._plan(epoch)[1]
        lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, ends[-1])
        pieces, pos = [], lo
        while pos < hi:
            w = bisect_right(ends, pos)
            start = ends[w - 1] if w else 0
            stop = min(hi, ends[w])
            window = self._get_window(epoch, w)
            pieces.append(index_cond(window, slice(pos - start, stop - start)))
            pos = stop
        return pieces[0] if len(pieces) == 1 else cat_conds(pieces)


def _scatter(parts: list[Any], to: list[torch.Tensor]) -> Any:
    """Batched trees (dicts of tensors) ``parts`` written into one: row ``i`` of part ``k``
    lands at ``to[k][i]`` (one copy of each sample, as an in-memory batch takes)."""
    first = parts[0]
    if isinstance(first, dict):
        return {key: _scatter([p[key] for p in parts], to) for key in first}
    out = first.new_empty((sum(len(t) for t in to), *first.shape[1:]))
    for part, rows in zip(parts, to):
        out.index_copy_(0, rows, part)
    return out


class _EpochBatchSampler(EpochSampler):
    """:class:`EpochSampler` over one rank's batch indices, yielding ``(epoch, b)``."""

    def __iter__(self) -> Iterator[tuple[int, int]]:  # type: ignore[override]
        return ((self.epoch, b) for b in super().__iter__())


def _rank_world() -> tuple[int, int]:
    dist = torch.distributed
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def stream_loader(shards: Shards, batch_size: int, *, seed: int = 0, window: int | None = None,
                  num_workers: int = 0) -> ResumableLoader:
    """The training loader over a shard folder, for this process's DDP rank: resumable at the
    exact batch (Lightning stores its state in every checkpoint)."""
    rank, world = _rank_world()
    data = ShardBatches(shards, batch_size, seed=seed, window=window, rank=rank, world=world)
    sampler = _EpochBatchSampler(len(data), seed=seed, shuffle=False, num_replicas=1, rank=0)
    extra = {"persistent_workers": True} if num_workers > 0 else {}
    return ResumableLoader(data, batch_size=None, sampler=sampler, collate_fn=collate_batch,
                           num_workers=int(num_workers), generator=torch.Generator(), **extra)


def stream_training_data(dm: Any, shards: Shards, *, seed: int,
                         window: int | None = None) -> Any:
    """Make the data module ``dm`` train from ``shards``: its ``train_dataloader`` becomes a
    :func:`stream_loader` with the module's batch size and workers; its held-out data,
    condition and everything else stay its own. Returns ``dm``."""
    batch_size = getattr(dm, "batch_size", None)
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError("data.stream needs a data module with an integer batch_size "
                          f"attribute; {type(dm).__name__} has none")
    workers = int(getattr(dm, "num_workers", 0) or 0)

    def train_dataloader() -> ResumableLoader:
        return stream_loader(shards, batch_size, seed=seed, window=window, num_workers=workers)

    dm.train_dataloader = train_dataloader
    return dm

