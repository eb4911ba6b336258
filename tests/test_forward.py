"""The forward process: the closed form add_noise equals the iterated DDPM Markov chain."""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.core.forward import markov_step, add_noise
from omnidiff.core.gaussian_mixture import GaussianMixture
from omnidiff.core.schedules import get_schedule

F64 = torch.float64
N_MC = 20_000


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def toy_data() -> GaussianMixture:
    """A small, non-Gaussian, correlated 2D distribution with a non-zero mean."""
    return GaussianMixture([0.7, 0.3], [[2.0, -1.0], [-1.0, 3.0]],
                           [[[0.5, 0.2], [0.2, 0.3]], [[0.2, 0.0], [0.0, 0.1]]])


def moments_agree(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor, z: float = 4.5):
    """Sample mean / covariance of x: (N, D) vs exact values, within z standard errors.

    The standard errors are estimated from the samples themselves (fourth moments included),
    so the check holds for non-Gaussian x as well.
    """
    n = x.shape[0]
    m = x.mean(0)
    se_mean = x.std(0) / math.sqrt(n)
    assert ((m - mean).abs() < z * se_mean).all(), (m, mean, se_mean)
    dev = x - m
    prods = dev[:, :, None] * dev[:, None, :]  # (N, D, D)
    c = prods.mean(0) * n / (n - 1)
    se_cov = prods.std(0) / math.sqrt(n)
    assert ((c - cov).abs() < z * se_cov).all(), (c, cov, se_cov)


def test_q_sample_is_alpha_x0_plus_sigma_eps():
    sched = get_schedule("cosine")
    x0 = torch.randn(5, 3, 4, generator=gen(0))
    eps = torch.randn(5, 3, 4, generator=gen(1))
    t = torch.tensor([0.0, 0.1, 0.5, 0.9, 0.99])
    xt = add_noise(x0, t, sched, eps)
    assert xt.shape == x0.shape and xt.dtype == x0.dtype
    a, s = sched.alpha_sigma(t.double())
    expected = a[:, None, None] * x0.double() + s[:, None, None] * eps.double()
    torch.testing.assert_close(xt, expected.float())
    torch.testing.assert_close(xt[0], x0[0])  # t = 0 is clean data


def test_q_sample_rejects_bad_t_shape():
    sched = get_schedule("linear")
    with pytest.raises(ValueError, match=r"t must have shape \(B,\)") as info:
        add_noise(torch.zeros(4, 2), torch.zeros(3), sched, torch.zeros(4, 2))
    assert "\n" not in str(info.value)


def test_markov_step_formula_and_per_sample_beta():
    x = torch.randn(6, 2, dtype=F64, generator=gen(2))
    z = torch.randn(6, 2, dtype=F64, generator=gen(3))
    torch.testing.assert_close(markov_step(x, 0.1, z), math.sqrt(0.9) * x + math.sqrt(0.1) * z)
    beta = torch.linspace(0.01, 0.5, 6, dtype=F64)
    torch.testing.assert_close(markov_step(x, beta, z),
                               torch.sqrt(1 - beta)[:, None] * x + torch.sqrt(beta)[:, None] * z)


def test_markov_chain_matches_closed_form_in_distribution():
    """Iterating DDPM's chain n times has the marginal of add_noise at t = n / 1000 (linear)."""
    sched = get_schedule("linear")
    data = toy_data()
    mu, cov0 = data.mean(), data.covariance()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)  # DDPM's betas, independent of sched
    x0, _ = data.sample(N_MC, generator=gen(10))
    chain_gen, q_gen = gen(11), gen(12)

    x = x0.clone()
    checkpoints = {1, 10, 100, 300, 1000}
    for n in range(1, 1001):
        x = markov_step(x, betas[n - 1], torch.randn(x.shape, generator=chain_gen, dtype=F64))
        if n not in checkpoints:
            continue
        t = torch.full((N_MC,), n / 1000, dtype=F64)
        abar = float(torch.prod(1 - betas[:n]))
        # exact marginal: alpha x0 + sigma eps with alpha^2 = alpha-bar_n
        mean_n = math.sqrt(abar) * mu
        cov_n = abar * cov0 + (1 - abar) * torch.eye(2, dtype=F64)
        moments_agree(x, mean_n, cov_n)
        x_closed = add_noise(x0, t, sched, torch.randn(x0.shape, generator=q_gen, dtype=F64))
        moments_agree(x_closed, mean_n, cov_n)
        # chain vs closed form directly (two independent samples)
        diff = x.mean(0) - x_closed.mean(0)
        se = torch.sqrt(x.var(0) / N_MC + x_closed.var(0) / N_MC)
        assert (diff.abs() < 4.5 * se).all(), (n, diff, se)
        sq, sq_closed = (x - x.mean(0)) ** 2, (x_closed - x_closed.mean(0)) ** 2
        diff = sq.mean(0) - sq_closed.mean(0)
        se = torch.sqrt(sq.var(0) / N_MC + sq_closed.var(0) / N_MC)
        assert (diff.abs() < 4.5 * se).all(), (n, diff, se)


def test_moment_check_has_power():
    """The tolerance above is tight enough to catch an off-by-one-step chain."""
    data = toy_data()
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    x0, _ = data.sample(N_MC, generator=gen(20))
    x = x0
    g = gen(21)
    for n in range(1, 301):
        x = markov_step(x, betas[n - 1], torch.randn(x.shape, generator=g, dtype=F64))
    abar_wrong = float(torch.prod(1 - betas[:280]))  # 20 steps off
    with pytest.raises(AssertionError):
        moments_agree(x, math.sqrt(abar_wrong) * data.mean(),
                      abar_wrong * data.covariance() + (1 - abar_wrong) * torch.eye(2, dtype=F64))


def _float64_batches(fn, numel: int) -> list[str]:
    """Names of the ops inside ``fn()`` that produce a float64 tensor as large as the batch."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen: list[str] = []

    class Record(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for o in (out if isinstance(out, (tuple, list)) else (out,)):
                if isinstance(o, torch.Tensor) and o.dtype == F64 and o.numel() >= numel:
                    seen.append(str(func))
            return out

    with Record():
        fn()
    return seen


@pytest.mark.parametrize("prediction", ["eps", "x0", "v", "flow"])
def test_training_arithmetic_stays_in_the_data_dtype(prediction):
    """add_noise and the loss target never upcast the (B, *event) batch to float64: only the
    per-sample coefficients are float64 (a float64 copy of a video batch doubles its memory)."""
    from omnidiff.core.losses import diffusion_loss

    sched = get_schedule("flow" if prediction == "flow" else "cosine")
    x0 = torch.randn(4, 3, 8, 8, generator=gen(0))

    def model(x_t, t, cond=None, drop=None):
        assert x_t.dtype == torch.float32
        return x_t * 0.5

    assert _float64_batches(lambda: diffusion_loss(model, x0, schedule=sched,
                                                   prediction=prediction,
                                                   generator=gen(1)), x0.numel()) == []
    t = torch.full((4,), 0.3, dtype=F64)
    noise = torch.randn(x0.shape, generator=gen(2))
    x_t = add_noise(x0, t, sched, noise)
    assert x_t.dtype == torch.float32
    a, s = sched.alpha_sigma(t)
    exact = a[:, None, None, None] * x0.double() + s[:, None, None, None] * noise.double()
    torch.testing.assert_close(x_t.double(), exact, rtol=1e-6, atol=1e-6)
