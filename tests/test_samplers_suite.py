"""The full sampler suite against the exact Gaussian-mixture denoiser (no training).

Convergence orders, stochastic samplers' moments, seeds, NFE accounting, every sampler x every
schedule, grids, churn, and guidance rescale / interval.
"""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.core.gaussian_mixture import GaussianMixture, eight_gaussians
from omnidiff.core.guidance import classifier_free
from omnidiff.core.schedules import SCHEDULES, get_schedule
from omnidiff.samplers import SAMPLERS, STOCHASTIC, sample, timesteps

GM = eight_gaussians()
VALID = {"linear": "eps", "discrete": "v", "cosine": "v", "sigmoid": "x0", "edm": "x0", "flow": "flow"}


def _noise(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _draw(sampler, sched="linear", pred="eps", steps=10, n=32, seed=1, stats=None, **kw):
    return sample(GM.model(sched, pred), _noise(n), schedule=sched, prediction=pred,
                  sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(seed),
                  stats=stats, **kw)


@pytest.fixture(scope="module")
def reference():
    """A tight solution of the same ODE (adaptive RK45, rtol = atol = 1e-9)."""
    return _draw("rk45", steps=20, rtol=1e-9, atol=1e-9)


# (sampler, options, expected order, lower bound on the fitted slope); steps 20 -> 40
ORDERS = [
    ("ddim", {}, 1, 0.8),
    ("euler", {}, 1, 0.8),
    ("euler", {"time": "sigma"}, 1, 0.8),
    ("dpmpp_2m", {}, 2, 1.6),
    ("dpmpp_2s_ancestral", {"eta": 0.0}, 2, 1.6),
    ("heun", {}, 2, 1.6),
    ("unipc", {"order": 2, "variant": "bh2"}, 2, 1.6),   # UniP-2 + UniC
    ("unipc", {"order": 3, "variant": "bh1"}, 3, 2.2),
    ("dpmpp_3m", {}, 3, 2.2),
    ("deis", {"order": 3}, 3, 2.2),
    ("lms", {"order": 4}, 4, 2.4),
]


@pytest.mark.parametrize("name,opts,order,bound", ORDERS,
                         ids=[f"{n}-{'-'.join(map(str, o.values()))}" for n, o, *_ in ORDERS])
def test_convergence_order(reference, name, opts, order, bound):
    errs = []
    for steps in (20, 40):
        x = _draw(name, steps=steps, **opts)
        errs.append(float((x - reference).norm(dim=1).mean()))
    slope = math.log2(errs[0] / errs[1])
    assert bound <= slope <= order + 1.5, (name, errs, slope)


def test_rk45_reports_nfe_and_meets_tolerance(reference):
    stats = {}
    x = _draw("rk45", steps=20, rtol=1e-6, atol=1e-6, stats=stats)
    assert stats["nfe"] > 20 and stats["accepted"] > 0 and "rejected" in stats
    # 6 new stages per attempted step (FSAL) + the first evaluation + the final denoising step
    assert stats["nfe"] == 6 * (stats["accepted"] + stats["rejected"]) + 2
    assert float((x - reference).norm(dim=1).max()) < 1e-3


def test_rk45_controls_the_error_of_every_sample_in_a_batch():
    """A narrow mixture where a few trajectories are hard: with the step error measured per
    sample (a step passes when every sample's does) no sample of a large batch drifts off, and
    batches of 64 and 256 agree to the tolerance. (An RMS over the whole batch left samples
    of the 256-batch 960 tolerances off.)"""
    from omnidiff.core.gaussian_mixture import random_mixture

    model = random_mixture(2, components=8, width="narrow", seed=0).model("cosine", "v")
    noise = _noise(256, seed=0)
    kw = dict(schedule="cosine", prediction="v", sampler="rk45", steps=20)
    ref = sample(model, noise, rtol=1e-10, atol=1e-10, **kw)
    tol = 1e-3
    scale = tol + tol * ref.abs()  # (256, 2)
    big = sample(model, noise, rtol=tol, atol=tol, **kw)
    small = torch.cat([sample(model, noise[i:i + 64], rtol=tol, atol=tol, **kw)
                       for i in range(0, 256, 64)])
    assert float(((big - ref) / scale).abs().max()) < 10
    assert float(((small - ref) / scale).abs().max()) < 10
    assert float(((big - small) / scale).abs().max()) < 20


def test_exact_special_cases():
    # deterministic limits of the stochastic / generalised samplers are the plain ones
    base = _draw("dpmpp_2m")
    assert torch.equal(_draw("dpmpp_2m_sde", eta=0.0), base)
    assert torch.equal(_draw("euler_ancestral", eta=0.0), _draw("euler"))
    assert torch.equal(_draw("heun", s_churn=0.0), _draw("heun"))
    assert torch.equal(_draw("deis", order=1), _draw("ddim")) or torch.allclose(
        _draw("deis", order=1), _draw("ddim"), atol=1e-12)
    # edm: Euler in t is Euler in sigma (sigma = sigma_max t) is DDIM
    e = _draw("euler", "edm", "x0")
    assert torch.allclose(e, _draw("euler", "edm", "x0", time="sigma"), atol=1e-9)
    assert torch.allclose(e, _draw("ddim", "edm", "x0"), atol=1e-9)


@pytest.mark.parametrize("name,opts", [("ddpm", {}), ("dpmpp_2m_sde", {}),
                                       ("dpmpp_2s_ancestral", {}), ("euler_ancestral", {}),
                                       ("pc", {"snr": 0.1}), ("heun", {"s_churn": 10.0})])
def test_stochastic_samplers_match_the_mixture(name, opts):
    n = 2000
    x = _draw(name, steps=30, n=n, **opts)
    assert torch.isfinite(x).all()
    assert torch.allclose(x.mean(0), GM.mean(), atol=0.12)
    assert torch.allclose(torch.cov(x.T), GM.covariance(), atol=0.25)
    # and they land on the modes: distance to the nearest mean ~ the modes' std 0.2
    d = torch.cdist(x, GM.means).min(1).values
    assert float(d.median()) < 0.35


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_seeded_and_deterministic(name):
    a = _draw(name, steps=6, n=8, seed=3)
    b = _draw(name, steps=6, n=8, seed=3)
    assert torch.equal(a, b)
    c = _draw(name, steps=6, n=8, seed=4)
    assert torch.equal(a, c) == (name not in STOCHASTIC)


def _expected_nfe(name: str, steps: int) -> int | None:
    if name in ("heun", "dpmpp_2s_ancestral", "pc"):
        return 2 * (steps - 1) + 1
    if name == "rk45":
        return None
    return steps


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_sampler_every_schedule(name, sched):
    stats = {}
    opts = {"rtol": 1e-3, "atol": 1e-3} if name == "rk45" else {}
    x = _draw(name, sched, VALID[sched], steps=5, n=16, stats=stats, **opts)
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    assert float(x.abs().max()) < 10.0
    expected = _expected_nfe(name, 5)
    if expected is not None:
        assert stats["nfe"] == expected == stats["network_evals"]


@pytest.mark.parametrize("sched", sorted(SCHEDULES))
@pytest.mark.parametrize("grid", ["uniform", "logsnr", "karras", "trailing"])
def test_grids_never_start_later_than_t_max(sched, grid):
    s = get_schedule(sched)
    ts = timesteps(s, 10, grid)
    assert float(ts[0]) == s.t_max and float(ts[-1]) == 0.0
    assert bool((ts[:-1] >= s.t_min - 1e-12).all()) and bool((ts[1:] < ts[:-1]).all())
    if sched == "flow":
        assert float(ts[0]) == 1.0  # zero terminal SNR: start exactly at pure noise


def test_eps_on_flow_is_a_clear_error():
    with pytest.raises(ValueError, match="eps"):
        _draw("ddim", "flow", "eps")


# ---- guidance -----------------------------------------------------------------------------

TWO = GaussianMixture([1.0, 1.0], [[-2.0, 0.0], [2.0, 0.0]], [0.09, 0.09])
ONE = GaussianMixture([1.0], [[2.0, 0.0]], [0.09])


def _cond_model(sched: str, pred: str):
    """model(x_t, t, cond=, drop=): class 1 -> ONE, unconditional -> TWO (a toy conditional)."""
    m_c, m_u = ONE.model(sched, pred), TWO.model(sched, pred)

    def model(x_t, t, cond=None, drop=None):
        out_c, out_u = m_c(x_t, t), m_u(x_t, t)
        if drop is None:
            return out_c
        return torch.where(drop[:, None], out_u, out_c)
    return model


def test_guidance_rescale_and_interval():
    sched, pred = "cosine", "v"
    model = _cond_model(sched, pred)
    cond = torch.ones(64, dtype=torch.long)
    plain = classifier_free(model, cond, 3.0)
    same = classifier_free(model, cond, 3.0, rescale=0.0, schedule=sched, prediction=pred)
    resc = classifier_free(model, cond, 3.0, rescale=0.7, schedule=sched, prediction=pred)
    band = classifier_free(model, cond, 3.0, interval=(0.5, 2.0), schedule=sched,
                           prediction=pred)
    x = _noise(64)
    st = {}
    kw = dict(schedule=sched, prediction=pred, sampler="dpmpp_2m", steps=10)
    a = sample(plain, x, stats=st, **kw)
    assert st["nfe"] == 10 and st["network_evals"] == 20
    assert torch.equal(a, sample(same, x, **kw))
    b = sample(resc, x, **kw)
    assert torch.isfinite(b).all() and not torch.allclose(a, b)
    # rescale pulls the over-saturated guided x0 std back toward the conditional one
    t = torch.full((64,), 0.5, dtype=torch.float64)
    xt = 0.5 * x
    from omnidiff.core.predictions import to_x0_eps
    x0 = {k: to_x0_eps(pred, f(xt, t), xt, t, get_schedule(sched))[0]
          for k, f in {"c": lambda u, v: model(u, v), "g": plain, "r": resc}.items()}
    sd = {k: v.std(1) for k, v in x0.items()}
    assert bool(((sd["r"] - sd["c"]).abs() <= (sd["g"] - sd["c"]).abs() + 1e-12).all())
    # interval: outside the band the conditional model, inside CFG
    s = get_schedule(sched)
    for tv in (0.05, 0.5, 0.95):
        tt = torch.full((64,), tv, dtype=torch.float64)
        sig = float(torch.exp(-s.log_snr(torch.tensor(tv, dtype=torch.float64))))
        want = plain(xt, tt) if 0.5 < sig <= 2.0 else model(xt, tt)
        assert torch.allclose(band(xt, tt), want)
    with pytest.raises(ValueError, match="schedule"):
        classifier_free(model, cond, 3.0, rescale=0.5)
