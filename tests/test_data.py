"""The training loader: per-(seed, epoch) order, rank sharding and exact mid-epoch resume."""

from __future__ import annotations

import pytest
import torch

from omnidiff.plugins.data import EpochSampler, TensorDictDataset, collate_batch, train_loader


def _loader(n=50, bs=8, seed=3, **kw):
    ds = TensorDictDataset(torch.arange(n).float()[:, None], torch.arange(n) % 5)
    return train_loader(ds, bs, seed=seed, collate_fn=collate_batch, **kw)


def _ids(batches):
    return [b["x"][:, 0].long().tolist() for b in batches]


def test_order_depends_on_seed_and_epoch_only():
    a, b = _loader(), _loader()
    a.sampler.set_epoch(0)
    first = _ids(a)
    a.sampler.set_epoch(1)
    second = _ids(a)
    b.sampler.set_epoch(1)  # a fresh loader jumping straight to epoch 1
    assert _ids(b) == second != first
    assert len(first) == len(a) == 50 // 8  # drop_last: 6 full batches
    flat = sum(first, [])
    assert len(set(flat)) == len(flat) == 48  # a permutation, no repeats
    assert _ids(_loader(seed=4)) != first


@pytest.mark.parametrize("consumed", [0, 1, 4, 6])
def test_state_dict_resumes_at_the_exact_batch(consumed):
    ref = _loader()
    ref.sampler.set_epoch(2)
    full = _ids(ref)
    ref.sampler.set_epoch(3)
    following = _ids(ref)
    run = _loader()
    run.sampler.set_epoch(2)
    it = iter(run)
    seen = [next(it) for _ in range(consumed)]
    state = run.state_dict()
    assert state == {"epoch": 2, "batches": consumed}
    fresh = _loader()  # the process that resumes knows nothing but the state
    fresh.load_state_dict(state)
    if consumed == len(full):  # saved after the epoch's last batch: the next epoch is due
        assert fresh.state_dict() == {"epoch": 3, "batches": 0}
        assert _ids(fresh) == following
        return
    assert fresh.state_dict() == state  # loaded, not yet iterated: the same state is saved
    rest = _ids(fresh)
    assert _ids(seen) + rest == full
    assert len(fresh) == len(full)  # the epoch length Lightning sees does not shrink
    assert fresh.state_dict() == {"epoch": 2, "batches": len(full)}
    assert _ids(fresh) == full  # the skip applies to one iteration only


def test_a_skip_for_another_epoch_lapses():
    run = _loader()
    run.load_state_dict({"epoch": 0, "batches": 2})
    run.sampler.set_epoch(1)  # Lightning moved on before iterating
    ref = _loader()
    ref.sampler.set_epoch(1)
    assert _ids(run) == _ids(ref)


def test_ranks_partition_each_epoch():
    ranks = [EpochSampler(10, seed=1, num_replicas=3, rank=r) for r in range(3)]
    parts = [list(s) for s in ranks]
    assert [len(p) for p in parts] == [4, 4, 4]  # padded to a multiple of 3
    flat = sum(parts, [])
    assert set(flat) == set(range(10)) and len(flat) == 12
    single = list(EpochSampler(10, seed=1))
    assert sorted(single) == list(range(10))
    with pytest.raises(ValueError, match="cannot skip"):
        ranks[0].skip(5)
