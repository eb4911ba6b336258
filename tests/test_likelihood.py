"""Exact log-likelihood through the probability-flow ODE vs the Gaussian mixture's true density."""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.core.gaussian_mixture import eight_gaussians
from omnidiff.samplers.likelihood import log_likelihood

GM = eight_gaussians()


@pytest.fixture(scope="module")
def data():
    x, _ = GM.sample(48, torch.Generator().manual_seed(0))
    return x, GM.log_prob(x)


@pytest.mark.parametrize("sched,pred,solver", [("flow", "flow", "rk45"), ("cosine", "v", "rk45"),
                                                ("linear", "eps", "heun")])
def test_exact_divergence_matches_true_log_density(data, sched, pred, solver):
    x, true = data
    r = log_likelihood(GM.model(sched, pred), x, schedule=sched, prediction=pred,
                       divergence="exact", solver=solver, steps=60, rtol=1e-5, atol=1e-5,
                       dtype=torch.float64)
    assert r.nats.shape == (48,) and r.nfe > 0
    err = (r.nats - true).abs()
    assert float(err.mean()) < 0.01 * float(true.abs().mean())  # within 1%
    assert float(err.max()) < 0.05
    assert torch.allclose(r.bits_per_dim, -r.nats / (2 * math.log(2)))


def test_hutchinson_is_unbiased(data):
    x, true = data
    x, true = x[:8].repeat(32, 1), true[:8].repeat(32)  # 32 Rademacher probes per point
    r = log_likelihood(GM.model("flow", "flow"), x, schedule="flow", prediction="flow",
                       divergence="hutchinson", solver="heun", steps=30,
                       generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    per = r.nats.reshape(32, 8)
    se = per.std(0) / math.sqrt(32)
    assert bool(((per.mean(0) - true[:8]).abs() < 4 * se + 0.02).all())  # per point
    diff = r.nats - true
    assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(256) + 0.02
    # reproducible given the generator, and a different probe gives a different estimate
    r2 = log_likelihood(GM.model("flow", "flow"), x, schedule="flow", prediction="flow",
                        divergence="hutchinson", solver="heun", steps=30,
                        generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.equal(r.nats, r2.nats)


def test_dequantisation():
    # data on a grid of spacing delta = 2 / (levels - 1): the estimate is log p(x + delta (u - 1/2))
    # + D log delta with u ~ U[0, 1)^D from the generator (the uniform-dequantisation bound)
    levels = 64
    delta = 2.0 / (levels - 1)
    x, _ = GM.sample(32, torch.Generator().manual_seed(1))
    x = torch.round(x / delta) * delta
    r = log_likelihood(GM.model("flow", "flow"), x, schedule="flow", prediction="flow",
                       divergence="exact", solver="heun", steps=40, dequantize=levels,
                       generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    u = torch.rand(x.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = GM.log_prob(x + delta * (u - 0.5)) + 2 * math.log(delta)
    assert float((r.nats - want).abs().mean()) < 0.01 * float(want.abs().mean())


def test_pipeline_and_cli_likelihood(tmp_path, capsys):
    import numpy as np

    from omnidiff.cli.commands import main
    from omnidiff.inference.pipeline import load
    from omnidiff.model_file import save_inference
    from omnidiff.model_spec import ModelSpec
    from omnidiff.training.diffusion_module import DiffusionModule

    torch.manual_seed(0)
    m = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 16, "depth": 1},
                                  {"name": "cosine"}, (2,), 0, prediction="v",
                                  data={"kind": "density", "name": "moons", "train_size": 256,
                                        "val_size": 32, "batch_size": 32}))
    ckpt = save_inference(m, tmp_path / "model.pt")
    pipe = load(ckpt, device="cpu")
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0))
    r = pipe.log_likelihood(x, solver="heun", steps=8)
    assert r.nats.shape == (6,) and torch.isfinite(r.nats).all()
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["likelihood", f"checkpoint={ckpt}", f"data={tmp_path / 'x.npy'}",
                 "solver=heun", "steps=8"]) == 0
    out = capsys.readouterr().out
    assert "nats" in out and "bits/dim" in out
    assert main(["likelihood", f"checkpoint={ckpt}", "data=nope.txt"]) == 2
