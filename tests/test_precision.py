"""Numerics: networks in float64 / bfloat16 / float16 (every domain's network is checked by the
domain contract, omnidiff.testing._check_precisions), sampling in any precision through the
pipeline, and bf16-mixed training through Lightning on CPU."""

from __future__ import annotations

import json

import pytest
import torch
from test_fault_tolerance import TINY

import omnidiff
from omnidiff.cli.commands import main


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run = tmp_path_factory.mktemp("precision") / "run"
    assert main(["train"] + TINY + [f"out={run}", "trainer.max_steps=150",
                                    "eval.n_samples=16"]) == 0
    return run / "model.pt"


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).norm() / b.double().norm())


def test_generate_in_every_precision_agrees_with_float32(trained):
    pipe = omnidiff.load(trained)
    ref = pipe.generate(256, steps=10, seed=3)  # float32 network and state
    assert ref.dtype == torch.float32 and torch.isfinite(ref).all()
    # a float64 sampler state over the float32 network (the README's float64 noise)
    state64 = pipe.generate(256, steps=10, seed=3, state_dtype=torch.float64)
    assert _rel(state64, ref) < 1e-4
    for dtype, tol in ((torch.float64, 1e-4), (torch.bfloat16, 0.1), (torch.float16, 0.05)):
        low = omnidiff.load(trained)
        low.model.to(dtype)
        x = low.generate(256, steps=10, seed=3)
        assert torch.isfinite(x).all() and _rel(x, ref) < tol, (dtype, _rel(x, ref))


def test_likelihood_of_a_float64_network(trained):
    pipe = omnidiff.load(trained)
    x, _ = pipe.reference(16)
    a = pipe.log_likelihood(x, seed=0).nats
    pipe.model.double()
    b = pipe.log_likelihood(x, seed=0).nats
    assert torch.isfinite(b).all() and torch.allclose(a.double(), b.double(), atol=2e-2)


def test_bf16_mixed_training_on_cpu_matches_float32(tmp_path):
    """Lightning's bf16-mixed autocast on CPU trains as well as float32 (sample quality after
    300 steps; the per-step loss of v-prediction with log-normal times is too noisy to rank)."""
    w2 = {}
    for precision in ("32-true", "bf16-mixed"):
        run = tmp_path / precision
        assert main(["train"] + TINY + [f"out={run}", "trainer.max_steps=300",
                                        "eval.n_samples=256", "eval.n_ref=256",
                                        f"trainer.precision={precision}"]) == 0
        w2[precision] = json.loads((run / "metrics.json").read_text())["final"]["sliced_w2"]
    assert w2["bf16-mixed"] < 1.2 * w2["32-true"] and w2["32-true"] < 0.4, w2
