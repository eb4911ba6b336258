"""The base samplers against the exact denoiser of a Gaussian mixture (no training involved).

Stochastic and deterministic samplers must reproduce the mixture's mean, covariance and mode
weights within statistical tolerances; the deterministic ones must converge to the same
probability-flow ODE solution as the step count doubles.
"""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.core.gaussian_mixture import GaussianMixture
from omnidiff.core.predictions import PREDICTIONS
from omnidiff.core.schedules import SCHEDULES, get_schedule
from omnidiff.samplers import GRIDS, SAMPLERS, sample, timesteps

F64 = torch.float64
BASE = ("ddpm", "ddim", "dpmpp_2m", "euler", "heun")
DETERMINISTIC = ("ddim", "dpmpp_2m", "euler", "heun")
SECOND_ORDER = ("dpmpp_2m", "heun")
# steps that make the discretisation bias small next to the Monte Carlo error of 2000 samples
STEPS = {"ddpm": 200, "ddim": 100, "dpmpp_2m": 25, "euler": 100, "heun": 25}
N = 2000
Z = 4.5  # tolerance in standard errors


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture() -> GaussianMixture:
    """Three unequal, anisotropic, correlated modes with a non-zero mean."""
    return GaussianMixture(
        [0.5, 0.3, 0.2],
        [[-2.0, 0.0], [1.5, 1.5], [1.0, -2.0]],
        [[[0.3, 0.1], [0.1, 0.2]], [[0.1, 0.0], [0.0, 0.4]], [[0.2, -0.05], [-0.05, 0.1]]])


MIX = mixture()


def noise(n: int = N, seed: int = 0, dtype=F64) -> torch.Tensor:
    return torch.randn(n, 2, generator=gen(seed), dtype=dtype)


def draw(sampler: str, schedule: str = "linear", prediction: str = "eps", steps: int = 20,
         n: int = N, seed: int = 0, **kw) -> torch.Tensor:
    return sample(MIX.model(schedule, prediction), noise(n, seed), schedule=schedule,
                  prediction=prediction, sampler=sampler, steps=steps, generator=gen(seed + 1),
                  **kw)


def check_matches_mixture(x: torch.Tensor, z: float = Z) -> None:
    """Mean, covariance and mode weights of x: (N, 2) vs the exact mixture, within z SE.

    Standard errors come from the samples (their fourth moments), so no Gaussian assumption.
    Mode weights: the mean of the posterior component probabilities r_k(x) at t = 0 equals
    w_k exactly when x follows the mixture.
    """
    assert torch.isfinite(x).all()
    n = x.shape[0]
    m = x.mean(0)
    err = (m - MIX.mean()).abs()
    assert (err < z * x.std(0) / math.sqrt(n)).all(), f"mean {m.tolist()} vs {MIX.mean()}"
    dev = x - m
    prods = dev[:, :, None] * dev[:, None, :]  # (N, 2, 2)
    cov = prods.sum(0) / (n - 1)
    se = prods.std(0) / math.sqrt(n)
    assert ((cov - MIX.covariance()).abs() < z * se).all(), \
        f"cov {cov.tolist()} vs {MIX.covariance().tolist()} (se {se.tolist()})"
    r = MIX.responsibilities(x, torch.zeros(n, dtype=F64), get_schedule("flow"))  # (N, K)
    w = r.mean(0)
    se_w = r.std(0) / math.sqrt(n)
    assert ((w - MIX.weights).abs() < z * se_w + 1e-3).all(), \
        f"mode weights {w.tolist()} vs {MIX.weights.tolist()}"


def test_base_samplers_are_registered():
    for name in BASE:
        assert name in SAMPLERS and callable(SAMPLERS[name])


def test_reference_samples_pass_the_check():
    """The check accepts true mixture samples ..."""
    x, _ = MIX.sample(N, generator=gen(3))
    check_matches_mixture(x)


@pytest.mark.parametrize("sampler", BASE)
def test_sampler_reproduces_the_mixture(sampler):
    x = draw(sampler, steps=STEPS[sampler])
    assert x.shape == (N, 2) and x.dtype == F64
    check_matches_mixture(x)


def test_the_check_has_power():
    """... and rejects a too-coarse ancestral sampler (its samples are visibly too narrow)."""
    with pytest.raises(AssertionError, match="cov"):
        check_matches_mixture(draw("ddpm", steps=5))


@pytest.mark.parametrize("schedule, prediction, sampler", [
    ("cosine", "v", "dpmpp_2m"),
    ("sigmoid", "x0", "heun"),
    ("edm", "eps", "heun"),
    ("edm", "x0", "dpmpp_2m"),
    ("flow", "flow", "heun"),
    ("flow", "v", "dpmpp_2m"),
    ("flow", "x0", "ddpm"),
    ("linear", "flow", "euler"),
    ("cosine", "eps", "ddim"),
])
def test_other_schedules_and_predictions(schedule, prediction, sampler):
    steps = {"ddpm": 200, "euler": 100, "ddim": 100}.get(sampler, 30)
    check_matches_mixture(draw(sampler, schedule, prediction, steps=steps, seed=5))


SPACED_GRIDS = [g for g in GRIDS if g != "diffwave"]  # diffwave: 6 fixed noise levels


@pytest.mark.parametrize("grid", SPACED_GRIDS)
def test_every_grid_samples_the_mixture(grid):
    check_matches_mixture(draw("dpmpp_2m", "cosine", "eps", steps=30, grid=grid, seed=7))


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_samples_do_not_depend_on_the_prediction_type(schedule):
    """The exact model in any parameterisation is the same denoiser: identical trajectories."""
    kinds = [k for k in PREDICTIONS if not (schedule == "flow" and k == "eps")]
    for sampler in ("dpmpp_2m", "heun"):
        outs = [draw(sampler, schedule, k, steps=8, n=256) for k in kinds]
        for k, x in zip(kinds[1:], outs[1:]):
            torch.testing.assert_close(x, outs[0], atol=1e-6, rtol=1e-6,
                                       msg=lambda m: f"{sampler}/{schedule}/{k}: {m}")


@pytest.mark.parametrize("schedule, reference", [("linear", "dpmpp_2m"), ("flow", "heun"),
                                                  ("edm", "heun")])
def test_deterministic_samplers_converge(schedule, reference):
    """Error against a tight reference of the same ODE falls as the step count doubles.

    Every deterministic sampler must approach the same limit (the probability-flow ODE's
    solution from the same noise), whichever second-order solver gives the reference.
    """
    n = 256
    pred = "eps" if schedule != "flow" else "x0"
    ref = draw(reference, schedule, pred, steps=400 if reference == "dpmpp_2m" else 200, n=n)
    for sampler in DETERMINISTIC:
        errs = [float((draw(sampler, schedule, pred, steps=s, n=n) - ref).norm(dim=1).mean())
                for s in (10, 20, 40)]
        assert errs[1] < 0.65 * errs[0] and errs[2] < 0.65 * errs[1], (sampler, errs)
        if sampler in SECOND_ORDER:
            assert errs[2] < 0.2 * errs[0], (sampler, errs)  # ~ 1/16 for second order
        assert errs[2] < 0.15, (sampler, errs)


@pytest.mark.parametrize("schedule", ["edm", "flow"])
def test_ddim_is_euler_when_x_over_alpha_is_linear_in_sigma_over_alpha(schedule):
    """DDIM is Euler's method on the ODE in (sigma/alpha, x/alpha) (Karras et al. 2022, sec. 4;
    Song et al. 2021, eq. 14). For edm (alpha = 1, sigma = sigma_max t) and for rectified flow
    that ODE is the schedule's own t-ODE up to an affine change of variables, so the two
    samplers agree step for step."""
    torch.testing.assert_close(draw("ddim", schedule, "x0", steps=9, n=128),
                               draw("euler", schedule, "x0", steps=9, n=128),
                               atol=1e-9, rtol=1e-9)


def test_same_seed_same_samples():
    for sampler in BASE:
        a, b = draw(sampler, steps=6, n=64), draw(sampler, steps=6, n=64)
        assert torch.equal(a, b), sampler
    x1 = sample(MIX.model("linear", "eps"), noise(64), schedule="linear", prediction="eps",
                sampler="ddpm", steps=6, generator=gen(1))
    x2 = sample(MIX.model("linear", "eps"), noise(64), schedule="linear", prediction="eps",
                sampler="ddpm", steps=6, generator=gen(2))
    assert not torch.allclose(x1, x2), "ddpm must use the generator's randomness"
    for sampler in DETERMINISTIC:
        y1 = sample(MIX.model("linear", "eps"), noise(64), schedule="linear", prediction="eps",
                    sampler=sampler, steps=6, generator=gen(1))
        y2 = sample(MIX.model("linear", "eps"), noise(64), schedule="linear", prediction="eps",
                    sampler=sampler, steps=6, generator=gen(2))
        assert torch.equal(y1, y2), f"{sampler} is deterministic"


@pytest.mark.parametrize("sampler", BASE)
def test_model_calls_and_nfe(sampler):
    sched = get_schedule("cosine")
    exact = MIX.model(sched, "v")
    calls = []

    def model(x_t, t):
        calls.append(t.clone())
        assert x_t.dtype == torch.float32 and t.dtype == torch.float32
        assert t.shape == (x_t.shape[0],) and x_t.shape == (32, 2)
        assert torch.all(t == t[0])
        return exact(x_t, t)

    stats = {}
    x = sample(model, noise(32, dtype=torch.float32), schedule=sched, prediction="v",
               sampler=sampler, steps=7, generator=gen(0), stats=stats)
    assert x.dtype == torch.float32 and torch.isfinite(x).all()
    expected = 2 * 7 - 1 if sampler == "heun" else 7
    assert stats["nfe"] == len(calls) == expected
    assert stats["network_evals"] == expected
    assert float(calls[0][0]) == pytest.approx(sched.t_max, rel=1e-6)
    assert float(calls[-1][0]) == pytest.approx(sched.t_min, rel=1e-5)


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
@pytest.mark.parametrize("grid", SPACED_GRIDS)
def test_grids(schedule, grid):
    sched = get_schedule(schedule)
    for steps in (1, 2, 10, 50):
        ts = timesteps(sched, steps, grid)
        assert ts.shape == (steps + 1,) and ts.dtype == F64
        assert float(ts[0]) == sched.t_max and float(ts[-1]) == 0.0
        if steps > 1 and grid not in ("trailing", "logsnr_trailing"):
            assert float(ts[-2]) == sched.t_min
        if steps > 1 and grid == "logsnr_trailing":  # never lands on t_min: even log-SNR steps
            assert float(ts[-2]) > sched.t_min
            lam = sched.log_snr(ts[1:-1])
            torch.testing.assert_close(lam[1:] - lam[:-1], (lam[1:] - lam[:-1])[:1].expand(
                steps - 2), rtol=1e-6, atol=1e-9)
        assert (ts[1:] < ts[:-1]).all(), ts
        assert (ts[:-1] >= sched.t_min).all()


@pytest.mark.parametrize("schedule", sorted(SCHEDULES))
def test_diffwave_grid_sits_at_the_fast_schedules_noise_levels(schedule):
    from omnidiff.samplers.grids import DIFFWAVE_FAST_BETAS

    sched = get_schedule(schedule)
    ts = timesteps(sched, 6, "diffwave")
    gamma = torch.cumprod(1 - torch.tensor(DIFFWAVE_FAST_BETAS, dtype=F64), 0).flip(0)
    snr = (sched.alpha(ts[:-1]) / sched.sigma(ts[:-1])) ** 2
    inside = ts[:-1] > sched.t_min  # a level less noisy than t_min is clamped to t_min
    assert inside[:-1].all() and (inside | (ts[:-1] == sched.t_min)).all()
    torch.testing.assert_close((snr / (1 + snr))[inside], gamma[inside], rtol=1e-6, atol=1e-9)
    assert (ts[1:] < ts[:-1]).all() and float(ts[-1]) == 0.0
    with pytest.raises(ValueError, match="pass steps=6"):
        timesteps(sched, 20, "diffwave")


def test_ddpm_on_the_diffwave_grid_is_diffwaves_fast_sampler():
    """Kong et al. 2021, Algorithm 2 with the fast inference schedule and aligned times,
    written out here, equals sampler=ddpm grid=diffwave step for step (same noise draws)."""
    from omnidiff.samplers.grids import DIFFWAVE_FAST_BETAS

    sched = get_schedule("linear")

    def eps_model(x, t):  # any smooth eps prediction
        return torch.tanh(x) * (0.5 + t.reshape(-1, 1)) + 0.1 * x

    x_T = torch.randn(64, 3, generator=gen(0), dtype=F64)
    ours = sample(eps_model, x_T, schedule=sched, prediction="eps", sampler="ddpm", steps=6,
                  grid="diffwave", generator=gen(1))
    beta = torch.tensor(DIFFWAVE_FAST_BETAS, dtype=F64)
    gamma = torch.cumprod(1 - beta, 0)
    ts = timesteps(sched, 6, "diffwave")[:-1].flip(0)  # t_1 .. t_6, aligned
    x, g = x_T.clone(), gen(1)
    for s in reversed(range(6)):
        eps = eps_model(x, ts[s].expand(x.shape[0]))
        x = (x - beta[s] / torch.sqrt(1 - gamma[s]) * eps) / torch.sqrt(1 - beta[s])
        if s > 0:
            sigma = torch.sqrt((1 - gamma[s - 1]) / (1 - gamma[s]) * beta[s])
            x = x + sigma * torch.randn(x.shape, generator=g, dtype=F64)
    torch.testing.assert_close(ours, x, rtol=1e-9, atol=1e-9)


def test_grid_spacing():
    sched = get_schedule("cosine")
    lam = sched.log_snr(timesteps(sched, 12, "logsnr")[:-1])
    torch.testing.assert_close(lam.diff(), torch.full((11,), float(lam.diff()[0]), dtype=F64),
                               atol=1e-8, rtol=1e-6)
    edm = get_schedule("edm")
    ts = timesteps(edm, 12, "karras")[:-1]
    root = (edm.sigma(ts)) ** (1 / 7)  # sigma^(1/rho) is uniform (Karras et al. 2022, eq. 5)
    torch.testing.assert_close(root.diff(), torch.full((11,), float(root.diff()[0]),
                                                       dtype=F64), atol=1e-9, rtol=1e-6)
    torch.testing.assert_close(edm.sigma(ts[[0, -1]]), torch.tensor([80.0, 0.002], dtype=F64))
    flow = get_schedule("flow")
    torch.testing.assert_close(timesteps(flow, 5, "uniform"),
                               torch.tensor([1.0, 0.75025, 0.5005, 0.25075, 0.001, 0.0],
                                            dtype=F64))


# -- bad input -------------------------------------------------------------------------------

def one_line_naming(info: pytest.ExceptionInfo, bad, choices) -> None:
    msg = str(info.value)
    assert "\n" not in msg and repr(bad) in msg, msg
    for c in choices:
        assert c in msg, (c, msg)


def test_bad_choices_fail_with_one_clear_line():
    model = MIX.model("linear", "eps")
    kw = dict(schedule="linear", prediction="eps", steps=3)
    with pytest.raises(ValueError) as info:
        sample(model, noise(4), **{**kw, "sampler": "dpm++"})
    one_line_naming(info, "dpm++", BASE)
    with pytest.raises(ValueError) as info:
        sample(model, noise(4), **kw, grid="log")
    one_line_naming(info, "log", GRIDS)
    with pytest.raises(ValueError) as info:
        sample(model, noise(4), **{**kw, "prediction": "noise"})
    one_line_naming(info, "noise", PREDICTIONS)
    with pytest.raises(ValueError) as info:
        sample(model, noise(4), **{**kw, "schedule": "scaled_linear"})
    one_line_naming(info, "scaled_linear", sorted(SCHEDULES))


@pytest.mark.parametrize("steps", [0, -3, 2.5])
def test_bad_steps_fail_with_one_clear_line(steps):
    with pytest.raises(ValueError, match="steps") as info:
        sample(MIX.model("linear", "eps"), noise(4), schedule="linear", prediction="eps",
               steps=steps)
    assert "\n" not in str(info.value) and repr(steps) in str(info.value)


def test_wrong_model_output_shape_fails_with_one_clear_line():
    with pytest.raises(ValueError, match="shape") as info:
        sample(lambda x, t: x[:, :1], noise(4), schedule="linear", prediction="eps", steps=3)
    msg = str(info.value)
    assert "\n" not in msg and "(4, 1)" in msg and "(4, 2)" in msg


def test_eps_on_flow_schedule_is_a_clear_error():
    # alpha(t_max) = 0 makes x0 = (x - sigma eps) / alpha undefined: refuse, don't return NaN
    with pytest.raises(ValueError, match="eps") as info:
        draw("dpmpp_2m", "flow", "eps", steps=5, n=8)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("schedule", ["cosine", "flow"])
def test_denoiser_fast_paths_equal_the_prediction_inverse(prediction, schedule):
    """x0(), combine() and __call__ use float coefficients and fused kernels; they must equal
    predictions.to_x0_eps with per-sample tensors, for every parameterisation."""
    from omnidiff.core.predictions import to_x0_eps
    from omnidiff.samplers.denoiser import Denoiser

    sched = get_schedule(schedule)
    out = torch.randn(5, 3, 2, generator=gen(1), dtype=F64)
    x = torch.randn(5, 3, 2, generator=gen(2), dtype=F64)
    d = Denoiser(lambda x_t, t: out, sched, prediction, F64)
    t = 0.37
    x0_ref, eps_ref = to_x0_eps(prediction, out, x, torch.full((5,), t, dtype=F64), sched)
    x0, eps = d(x, t)
    torch.testing.assert_close(x0, x0_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(eps, eps_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.x0(x, t), x0_ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(d.combine(x, t, 0.7, -1.3), 0.7 * x0_ref - 1.3 * eps_ref,
                               rtol=1e-12, atol=1e-12)
    a, s = sched.alpha_sigma(torch.tensor(t, dtype=F64))
    da, ds = sched.derivatives(torch.tensor(t, dtype=F64))
    torch.testing.assert_close(d.velocity(x, t), da * x0_ref + ds * eps_ref, rtol=1e-12,
                               atol=1e-12)
    assert d.nfe == 4


def test_lincomb_merges_terms_and_returns_a_new_tensor():
    from omnidiff.samplers.denoiser import lincomb

    a, b = torch.randn(4, generator=gen(0)), torch.randn(4, generator=gen(1))
    torch.testing.assert_close(lincomb((2.0, a), (0.5, b), (-1.0, a)), a + 0.5 * b)
    one = lincomb((1.0, a))
    assert torch.equal(one, a) and one is not a
    assert torch.equal(lincomb((1.0, a), (-1.0, a)), torch.zeros(4))


@pytest.mark.parametrize("sampler", ["dpmpp_2m", "unipc", "heun", "lms"])
def test_float32_state_tracks_float64_state(sampler):
    """float32 noise keeps a float32 state by default (what diffusers does; half the bytes per
    step); the result stays within float32 rounding of the float64-state solution."""
    mix = mixture()
    sched = get_schedule("linear")
    model = mix.model(sched, "eps")
    noise = torch.randn(256, 2, generator=gen(0))
    kw = dict(schedule=sched, prediction="eps", sampler=sampler, steps=20)
    seen = []
    x32 = sample(lambda x, t: (seen.append(x.dtype), model(x, t))[1], noise, **kw)
    x64 = sample(model, noise, state_dtype=F64, **kw)
    assert x32.dtype == x64.dtype == torch.float32 and set(seen) == {torch.float32}
    err = (x32 - x64).abs().max().item()
    assert 0 < err < 1e-4, err


@pytest.mark.parametrize("clip", [1.0, (-0.5, 1.0), "dynamic", "dynamic:0.9"])
def test_clip_x0_keeps_every_estimate_in_range(clip):
    """Modes at radius 2 sampled with x0 clipped into [-1, 1]: every x0 estimate, and so the
    sample, stays in range, and eps_hat stays consistent with x_t = alpha x0 + sigma eps."""
    from omnidiff.core.gaussian_mixture import eight_gaussians
    from omnidiff.samplers.denoiser import Denoiser, coefficients

    sched = get_schedule("cosine")
    model = eight_gaussians().model(sched, "v")
    lo, hi = clip if isinstance(clip, tuple) else (-1.0, 1.0)
    noise = torch.randn(512, 2, generator=gen(0), dtype=F64)
    free = sample(model, noise, schedule=sched, prediction="v", sampler="dpmpp_2m", steps=10)
    assert free.abs().max() > 1.5  # without clipping the samples leave the range
    for name in ("dpmpp_2m", "heun", "ddpm"):
        x = sample(model, noise, schedule=sched, prediction="v", sampler=name, steps=10,
                   clip_x0=clip, generator=gen(1))
        assert x.min() >= lo - 1e-9 and x.max() <= hi + 1e-9, name
        assert x.std() > 0.2  # clipped, not collapsed
    d = Denoiser(model, sched, "v", F64, clip_x0=clip)
    x_t = 3.0 * torch.randn(64, 2, generator=gen(2), dtype=F64)
    x0, eps = d(x_t, 0.5)
    a, s, _ = coefficients(sched, 0.5)
    assert x0.min() >= lo - 1e-9 and x0.max() <= hi + 1e-9
    torch.testing.assert_close(a * x0 + s * eps, x_t)
    torch.testing.assert_close(d.combine(x_t, 0.5, 0.3, 2.0), 0.3 * x0 + 2.0 * eps)


@pytest.mark.parametrize("bad", [0.0, -1.0, (1.0, 0.0), "dynamic:2", "dynamic:x", "nope"])
def test_bad_clip_x0_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="clip_x0="):
        sample(lambda x, t: x, torch.randn(4, 2), schedule="cosine", prediction="eps",
               steps=2, clip_x0=bad)
