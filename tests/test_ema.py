"""EMA warm-up: a short run samples from a trained average, not from its random start."""

from __future__ import annotations

import json

import pytest
import torch

from omnidiff.training.optim import ema_decay_at, ema_update


def test_decay_warms_up_to_the_configured_value():
    assert ema_decay_at(0, 0.999) == pytest.approx(0.1)  # the first update keeps 10%
    assert ema_decay_at(90, 0.999) == pytest.approx(91 / 100)
    assert ema_decay_at(100_000, 0.999) == pytest.approx(0.999)  # capped by the decay
    assert ema_decay_at(0, 0.999, warmup=False) == 0.999


def test_update_rule_is_the_warmed_up_lerp():
    """n updates toward a constant target leave prod(decay_k) of the initial gap."""
    avg, target = [torch.zeros(3), torch.tensor([5])], [torch.ones(3), torch.tensor([7])]
    update = ema_update(0.999)
    gap = 1.0
    for n in range(1, 40):
        update(avg, target, torch.tensor(n))
        gap *= ema_decay_at(n, 0.999)
    torch.testing.assert_close(avg[0], torch.full((3,), 1.0 - gap))
    assert int(avg[1]) == 7  # integer buffers follow the model


def _sliced_w2(tmp_path, name, *overrides):
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.train import train

    cfg = compose("points2d", ["trainer.max_steps=300", "trainer.enable_progress_bar=false",
                               "eval.n_samples=1024", "threads=1", f"out={tmp_path / name}",
                               *overrides])
    run = train(cfg)
    return json.loads((run / "metrics.json").read_text())["final"]["sliced_w2"]


def test_short_run_with_default_ema_matches_the_run_without(tmp_path):
    """300 points2d steps: the EMA model (default decay 0.999) samples within 1.25x of the raw
    model's sliced W2 (without warm-up it is about 3.4x worse: the average still holds most of
    the initial weights)."""
    with_ema = _sliced_w2(tmp_path, "ema")
    without = _sliced_w2(tmp_path, "raw", "optim.ema_decay=null")
    assert with_ema < 1.25 * without, (with_ema, without)
