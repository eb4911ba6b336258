"""The learning-rate schedule: a linear warm-up, then constant or a cosine decay to a floor."""

from __future__ import annotations

import pytest
import torch

from omnidiff.errors import ConfigError
from omnidiff.training.optim import adamw, lr_factor, optimizer_args


def test_warmup_then_constant_without_decay():
    assert [lr_factor(s, warmup=4) for s in (0, 1, 3, 4, 1000)] == [0.25, 0.5, 1.0, 1.0, 1.0]


def test_cosine_decay_reaches_the_floor_at_decay_steps_and_stays():
    f = [lr_factor(s, warmup=10, decay_steps=110, final_lr=0.1) for s in range(200)]
    assert f[9] == 1.0 and f[10] == 1.0
    assert f[60] == pytest.approx(0.55)  # half way down the cosine: (1 + 0.1) / 2
    assert f[110] == pytest.approx(0.1) and f[199] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:]))  # never rises after the warm-up


def test_the_optimizer_follows_the_schedule():
    p = torch.nn.Parameter(torch.zeros(3))
    cfg = adamw([p], lr=2e-3, warmup=2, decay_steps=6, final_lr=0.0)
    opt, sched = cfg["optimizer"], cfg["lr_scheduler"]["scheduler"]
    seen = []
    for _ in range(8):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert seen[:2] == pytest.approx([1e-3, 2e-3])
    assert seen[4] == pytest.approx(1e-3)  # the cosine's middle
    assert seen[6] == pytest.approx(0.0, abs=1e-12) and seen[7] == pytest.approx(0.0, abs=1e-12)


def test_bad_decay_settings_are_refused_in_one_line():
    with pytest.raises(ConfigError, match="final_lr"):
        adamw([torch.nn.Parameter(torch.zeros(1))], final_lr=2.0)
    with pytest.raises(ConfigError, match="decay_steps"):  # the block's check, before any work
        optimizer_args({"lr": 1e-3, "decay_steps": -5})
    with pytest.raises(ConfigError, match="ends before optim.warmup=200"):  # no silent no-decay
        optimizer_args({"lr": 1e-3, "warmup": 200, "decay_steps": 150})
    assert optimizer_args({"warmup": 200, "decay_steps": 0})["decay_steps"] == 0  # 0: no decay
