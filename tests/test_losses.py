"""Training losses: weightings equal their closed forms, and a small MLP actually learns."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from omnidiff.core.gaussian_mixture import GaussianMixture, eight_gaussians
from omnidiff.core.losses import (
    TIME_SAMPLING,
    WEIGHTINGS,
    cfg_drop_mask,
    diffusion_loss,
    loss_weight,
    sample_time,
)
from omnidiff.core.model import DiffusionModel
from omnidiff.core.predictions import PREDICTIONS, target
from omnidiff.core.schedules import SCHEDULES, get_schedule

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class TinyMLP(nn.Module):
    """net(x_in, t, cond, drop) for 2D points: x and Fourier features of t -> (B, 2)."""

    def __init__(self, dim: int = 2, width: int = 64):
        super().__init__()
        self.register_buffer("freqs", torch.tensor([1.0, 2.0, 4.0, 8.0]) * math.pi)
        self.body = nn.Sequential(nn.Linear(dim + 9, width), nn.SiLU(), nn.Linear(width, width),
                                  nn.SiLU(), nn.Linear(width, dim))

    def forward(self, x, t, cond=None, drop=None):
        ft = t.float()[:, None] * self.freqs  # (B, 4)
        feats = torch.cat([x.float(), t.float()[:, None], ft.sin(), ft.cos()], -1)
        return self.body(feats).to(x.dtype)


class Recorder:
    """A fixed 'model' that remembers what diffusion_loss passed it."""

    def __init__(self, value: float = 0.25):
        self.value, self.calls = value, []

    def __call__(self, x_t, t, cond=None, drop=None):
        self.calls.append((x_t.clone(), t.clone(), cond, drop))
        return torch.full_like(x_t, self.value) + 0.1 * x_t


# -- weightings ------------------------------------------------------------------------------

def test_weighting_names():
    assert WEIGHTINGS == ("uniform", "min_snr", "edm")
    assert TIME_SAMPLING == ("uniform", "logit_normal", "edm_lognormal")


@pytest.mark.parametrize("name", ["linear", "cosine", "sigmoid"])
def test_min_snr_closed_forms(name):
    sched = get_schedule(name)
    t = torch.linspace(sched.t_min, sched.t_max, 200, dtype=F64)
    a, s = sched.alpha_sigma(t)
    snr = (a / s) ** 2
    assert (snr > 5).any() and (snr < 5).any()  # both sides of the clamp are exercised
    torch.testing.assert_close(loss_weight("min_snr", t, sched, "eps"),
                               snr.clamp_max(5.0) / snr, rtol=1e-9, atol=0)
    torch.testing.assert_close(loss_weight("min_snr", t, sched, "v"),
                               snr.clamp_max(5.0) / (snr + 1), rtol=1e-9, atol=0)
    torch.testing.assert_close(loss_weight("min_snr", t, sched, "x0"), snr.clamp_max(5.0),
                               rtol=1e-9, atol=0)
    torch.testing.assert_close(loss_weight("min_snr", t, sched, "eps", gamma=1.0),
                               snr.clamp_max(1.0) / snr, rtol=1e-9, atol=0)


@pytest.mark.parametrize("name", ["linear", "cosine", "edm", "flow"])
@pytest.mark.parametrize("sigma_data", [1.0, 0.5])
def test_edm_weighting_closed_forms(name, sigma_data):
    """Karras et al. 2022: lambda(sigma) = (sigma^2 + sd^2) / (sigma sd)^2 on the x0 error,
    with sigma = sigma / alpha the noise level of x_t / alpha."""
    sched = get_schedule(name)
    t = torch.linspace(sched.t_min, 0.95 * sched.t_max, 100, dtype=F64)
    a, s = sched.alpha_sigma(t)
    sig = s / a
    lam = (sig ** 2 + sigma_data ** 2) / (sig * sigma_data) ** 2
    w_eps = loss_weight("edm", t, sched, "eps", sigma_data=sigma_data)
    torch.testing.assert_close(w_eps, lam * sig ** 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(w_eps, (sig ** 2 + sigma_data ** 2) / sigma_data ** 2,
                               rtol=1e-9, atol=0)
    # v = alpha eps - sigma x0: the x0 error is sigma / (alpha^2 + sigma^2) times the v error
    w_v = loss_weight("edm", t, sched, "v", sigma_data=sigma_data)
    torch.testing.assert_close(w_v, lam * (s / (a * a + s * s)) ** 2, rtol=1e-9, atol=0)
    torch.testing.assert_close(loss_weight("edm", t, sched, "x0", sigma_data=sigma_data), lam,
                               rtol=1e-9, atol=0)


def test_uniform_weighting_is_one():
    sched = get_schedule("cosine")
    t = torch.rand(7, dtype=F64, generator=gen(0))
    for kind in PREDICTIONS:
        assert torch.equal(loss_weight("uniform", t, sched, kind), torch.ones(7, dtype=F64))


# -- time sampling ---------------------------------------------------------------------------

@pytest.mark.parametrize("name", sorted(SCHEDULES))
@pytest.mark.parametrize("kind", TIME_SAMPLING)
def test_sample_time_in_range(name, kind):
    sched = get_schedule(name)
    t = sample_time(4000, sched, kind, generator=gen(1))
    assert t.shape == (4000,) and t.dtype == F64
    assert (t >= sched.t_min).all() and (t <= sched.t_max).all()
    again = sample_time(4000, sched, kind, generator=gen(1))
    assert torch.equal(t, again)


def test_sample_time_distributions():
    n = 20_000
    flow = get_schedule("flow", t_min=0.0, t_max=1.0)
    u = sample_time(n, flow, "uniform", generator=gen(2))
    assert abs(float(u.mean()) - 0.5) < 4 * math.sqrt(1 / 12 / n)
    assert abs(float(u.var()) - 1 / 12) < 0.005
    ln = sample_time(n, flow, "logit_normal", generator=gen(3))
    logit = torch.log(ln) - torch.log1p(-ln)
    assert abs(float(logit.mean())) < 4 / math.sqrt(n)
    assert abs(float(logit.std()) - 1.0) < 0.03
    edm = get_schedule("edm")
    t = sample_time(n, edm, "edm_lognormal", generator=gen(4))
    log_sigma = torch.log(edm.sigma(t))  # ln(sigma) ~ N(-1.2, 1.2^2) (clamped far in the tails)
    assert abs(float(log_sigma.mean()) + 1.2) < 4 * 1.2 / math.sqrt(n)
    assert abs(float(log_sigma.std()) - 1.2) < 0.04


# -- the loss itself -------------------------------------------------------------------------

@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_loss_is_weighted_mse_to_the_target(prediction, weighting):
    sched = get_schedule("cosine")
    x0 = torch.randn(32, 3, 2, generator=gen(5), dtype=F64)
    model = Recorder()
    loss, per_sample = diffusion_loss(model, x0, schedule=sched, prediction=prediction,
                                      weighting=weighting, generator=gen(6))
    (x_t, t, cond, drop), = model.calls
    assert cond is None and drop is None
    assert t.shape == (32,)
    a, s = sched.alpha_sigma(t.double())
    eps = (x_t - a[:, None, None] * x0) / s[:, None, None]  # the noise the loss drew
    assert abs(float(eps.mean())) < 0.3 and abs(float(eps.std()) - 1) < 0.2
    tgt = target(prediction, x0, eps, t.double(), sched)
    mse = (model(x_t, t) - tgt).pow(2).flatten(1).mean(1)
    w = loss_weight(weighting, t.double(), sched, prediction)
    torch.testing.assert_close(per_sample.double(), w * mse, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(loss.double(), (w * mse).mean(), rtol=1e-5, atol=1e-6)


def test_loss_passes_the_cfg_drop_mask():
    sched = get_schedule("linear")
    x0 = torch.randn(4000, 2, generator=gen(7))
    cond = torch.randint(0, 3, (4000,), generator=gen(8))
    model = Recorder()
    diffusion_loss(model, x0, schedule=sched, prediction="eps", cond=cond, p_uncond=0.2,
                   generator=gen(9))
    _, _, got_cond, drop = model.calls[0]
    assert got_cond is cond
    assert drop.dtype == torch.bool and drop.shape == (4000,)
    assert abs(float(drop.float().mean()) - 0.2) < 4 * math.sqrt(0.2 * 0.8 / 4000)
    assert not cfg_drop_mask(100, 0.0, generator=gen(1)).any()
    assert cfg_drop_mask(100, 1.0, generator=gen(1)).all()
    with pytest.raises(ValueError, match="p_uncond"):
        cfg_drop_mask(10, 1.5)


def test_same_generator_same_loss():
    sched = get_schedule("cosine")
    torch.manual_seed(0)
    model = DiffusionModel(TinyMLP(), sched, "v")
    x0 = torch.randn(64, 2, generator=gen(1))
    l1, _ = diffusion_loss(model, x0, schedule=sched, prediction="v", generator=gen(3))
    l2, _ = diffusion_loss(model, x0, schedule=sched, prediction="v", generator=gen(3))
    assert torch.equal(l1, l2)


@pytest.mark.parametrize("prediction, schedule", [("eps", "linear"), ("x0", "cosine"),
                                                  ("v", "cosine"), ("flow", "flow"),
                                                  ("flow", "linear")])
def test_small_mlp_learns(prediction, schedule):
    """A few hundred Adam steps on a 2D mixture lower the loss of every prediction type."""
    sched = get_schedule(schedule)
    data = GaussianMixture([0.5, 0.5], [[-1.5, 0.0], [1.5, 0.5]], [0.05, 0.05])
    pool, _ = data.sample(8192, generator=gen(0))
    pool = pool.float()
    torch.manual_seed(0)
    model = DiffusionModel(TinyMLP(), sched, prediction)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def held_out_loss() -> float:  # common random numbers: same x0, t and noise each time
        with torch.no_grad():
            return float(diffusion_loss(model, pool[:2048], schedule=sched,
                                        prediction=prediction, generator=gen(99))[0])

    before = held_out_loss()
    g = gen(1)
    losses = []
    for _ in range(300):
        idx = torch.randint(0, len(pool), (256,), generator=g)
        loss, per_sample = diffusion_loss(model, pool[idx], schedule=sched,
                                          prediction=prediction, generator=g)
        assert per_sample.shape == (256,) and loss.ndim == 0
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    first, last = sum(losses[:50]) / 50, sum(losses[-50:]) / 50
    after = held_out_loss()
    assert math.isfinite(last) and math.isfinite(after)
    assert last < 0.85 * first, (prediction, schedule, first, last)
    assert after < 0.75 * before, (prediction, schedule, before, after)


def test_model_scales_input_and_denoises():
    """DiffusionModel feeds x_t / sqrt(alpha^2 sd^2 + sigma^2) to the net; denoise -> x0_hat."""
    sched = get_schedule("edm")
    seen = {}

    def net(x, t, cond, drop):
        seen["x"], seen["t"] = x, t
        return torch.zeros_like(x)

    class Wrap(nn.Module):
        def forward(self, x, t, cond=None, drop=None):
            return net(x, t, cond, drop)

    model = DiffusionModel(Wrap(), sched, "eps", sigma_data=0.5)
    x = torch.randn(3, 2, generator=gen(0), dtype=F64)
    t = torch.tensor([0.001, 0.1, 1.0], dtype=F64)
    model(x, t)
    a, s = sched.alpha_sigma(t)
    torch.testing.assert_close(seen["x"], x / torch.sqrt(a * a * 0.25 + s * s)[:, None])
    torch.testing.assert_close(model.denoise(x, t), x)  # eps = 0 -> x0_hat = x_t / alpha


# -- bad input -------------------------------------------------------------------------------

def one_line_naming(exc: pytest.ExceptionInfo, bad: str, choices) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and repr(bad) in msg, msg
    for c in choices:
        assert c in msg, (c, msg)


def test_bad_choices_fail_with_one_clear_line():
    sched = get_schedule("linear")
    x0 = torch.randn(8, 2, generator=gen(0))
    with pytest.raises(ValueError) as info:
        diffusion_loss(Recorder(), x0, schedule=sched, prediction="score")
    one_line_naming(info, "score", PREDICTIONS)
    with pytest.raises(ValueError) as info:
        diffusion_loss(Recorder(), x0, schedule=sched, weighting="snr")
    one_line_naming(info, "snr", WEIGHTINGS)
    with pytest.raises(ValueError) as info:
        diffusion_loss(Recorder(), x0, schedule=sched, time_sampling="lognormal")
    one_line_naming(info, "lognormal", TIME_SAMPLING)
    with pytest.raises(ValueError) as info:
        DiffusionModel(TinyMLP(), sched, "score")
    one_line_naming(info, "score", PREDICTIONS)
    with pytest.raises(ValueError) as info:
        DiffusionModel(TinyMLP(), "quadratic", "eps")
    one_line_naming(info, "quadratic", sorted(SCHEDULES))


def test_wrong_output_shape_fails_with_one_clear_line():
    sched = get_schedule("linear")
    x0 = torch.randn(8, 2, generator=gen(0))
    with pytest.raises(ValueError, match="shape") as info:
        diffusion_loss(lambda x, t, cond=None, drop=None: x[:, :1], x0, schedule=sched)
    assert "\n" not in str(info.value) and "(8, 1)" in str(info.value)

    class Bad(nn.Module):
        def forward(self, x, t, cond=None, drop=None):
            return x.sum(-1)

    with pytest.raises(ValueError, match="shape") as info:
        DiffusionModel(Bad(), sched, "eps")(x0, torch.rand(8))
    assert "\n" not in str(info.value) and "(8,)" in str(info.value)


def test_eight_gaussians_is_unit_scale_toy():
    gm = eight_gaussians()
    assert gm.means.shape == (8, 2)
    torch.testing.assert_close(gm.mean(), torch.zeros(2, dtype=F64), atol=1e-12, rtol=0)
    torch.testing.assert_close(gm.covariance(), (2.0 + 0.04) * torch.eye(2, dtype=F64))
