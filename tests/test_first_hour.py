"""What a new user meets in their first hour: files others can read, a quiet console, threads,
class names as conditions, a step callback, ``omnidiff info``."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from omnidiff.io import atomic_save_npy, atomic_torch_save, atomic_write_json, atomic_write_text


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_keep_the_permissions_a_plain_write_would_have(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        files = [atomic_write_text("x", tmp_path / "a.txt"),
                 atomic_write_json({"a": 1}, tmp_path / "b.json"),
                 atomic_torch_save({"w": torch.ones(2)}, tmp_path / "c.pt"),
                 atomic_save_npy(torch.ones(3), tmp_path / "d.npy")]
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f


def test_an_atomic_rewrite_keeps_the_files_own_mode(tmp_path):
    f = atomic_write_text("one", tmp_path / "a.txt")
    f.chmod(0o640)
    atomic_write_text("two", f)
    assert f.read_text() == "two" and stat.S_IMODE(f.stat().st_mode) == 0o640


# ---- the step callback ---------------------------------------------------------------------

from omnidiff.samplers import SAMPLERS, sample  # noqa: E402
from omnidiff.samplers.watch import SamplingStep  # noqa: E402

_POINT = torch.tensor([0.5, -1.0])  # data at one point: the exact x0 estimate is the point


def _point_eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    from omnidiff.core.schedules import get_schedule

    a, s = get_schedule("cosine").alpha_sigma(t.double())
    return ((x_t.double() - a[:, None] * _POINT.double()) / s[:, None]).to(x_t.dtype)


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"rk45", "consistency"}))
def test_the_step_callback_sees_every_step_of_a_10_step_sampler(sampler):
    seen: list[SamplingStep] = []
    x = sample(_point_eps, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)),
               schedule="cosine", prediction="eps", sampler=sampler, steps=10,
               generator=torch.Generator().manual_seed(1), callback=seen.append)
    assert [s.step for s in seen] == list(range(1, 11))
    assert all(s.steps == 10 for s in seen)
    times = [s.t for s in seen]
    assert all(a > b for a, b in zip(times, times[1:])) and times[-1] == 0.0
    for s in seen:  # the exact denoiser's estimate is the data point at every step
        torch.testing.assert_close(s.x0.float(), _POINT.expand(3, 2), atol=1e-4, rtol=0)
    assert seen[-1].x0 is x or torch.equal(seen[-1].x0.to(x.dtype), x)


def test_a_callback_that_raises_stops_sampling():
    calls = []

    def stop_at_3(info):
        calls.append(info.step)
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample(_point_eps, torch.randn(2, 2), schedule="cosine", prediction="eps",
               sampler="heun", steps=10, callback=stop_at_3)
    assert calls == [1, 2, 3]
