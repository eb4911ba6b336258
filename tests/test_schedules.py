"""Noise schedules: the closed forms they promise, checked against independent formulas."""

from __future__ import annotations

import math

import pytest
import torch

from omnidiff.core.schedules import SCHEDULES, VPSchedule, get_schedule

ALL = sorted(SCHEDULES)
VP = ["linear", "cosine", "sigmoid"]
F64 = torch.float64


def interior(schedule, n: int = 257) -> torch.Tensor:
    """(n,) float64 times strictly inside [t_min, t_max]."""
    return torch.linspace(schedule.t_min, schedule.t_max, n + 2, dtype=F64)[1:-1]


def test_names():
    assert set(ALL) == {"linear", "discrete", "cosine", "sigmoid", "edm", "flow"}


@pytest.mark.parametrize("name", VP)
def test_vp_is_variance_preserving(name):
    sched = get_schedule(name)
    assert isinstance(sched, VPSchedule)
    t = torch.linspace(0, 1, 1001, dtype=F64)
    a, s = sched.alpha_sigma(t)
    assert a.dtype == F64 and s.dtype == F64
    torch.testing.assert_close(a * a + s * s, torch.ones_like(t), atol=1e-12, rtol=0)
    assert prior_std_close(sched, 1.0)


def prior_std_close(sched, value: float) -> bool:
    return math.isclose(sched.prior_std, value, rel_tol=1e-9)


@pytest.mark.parametrize("name", ALL)
def test_clean_at_zero(name):
    sched = get_schedule(name)
    a, s = sched.alpha_sigma(torch.zeros(3, dtype=F64))
    assert torch.equal(a, torch.ones(3, dtype=F64))
    assert torch.equal(s, torch.zeros(3, dtype=F64))
    assert torch.equal(sched.alpha(torch.zeros(1, dtype=F64)), torch.ones(1, dtype=F64))
    assert torch.equal(sched.sigma(torch.zeros(1, dtype=F64)), torch.zeros(1, dtype=F64))


@pytest.mark.parametrize("name", ALL)
def test_log_snr_is_log_alpha_over_sigma_and_decreasing(name):
    sched = get_schedule(name)
    t = interior(sched)
    a, s = sched.alpha_sigma(t)
    lam = sched.log_snr(t)
    torch.testing.assert_close(lam, torch.log(a / s), atol=1e-9, rtol=1e-9)
    assert (lam[1:] < lam[:-1]).all(), "log-SNR must fall strictly with t"
    assert 0.0 <= sched.t_min < sched.t_max <= 1.0


@pytest.mark.parametrize("name", ALL)
def test_t_of_lambda_inverts_log_snr(name):
    sched = get_schedule(name)
    t = interior(sched)
    lam = sched.log_snr(t)
    torch.testing.assert_close(sched.t_of_lambda(lam), t, atol=1e-9, rtol=1e-9)
    # and the other way round, on lambdas the schedule covers
    lam_grid = torch.linspace(float(lam[-1]), float(lam[0]), 101, dtype=F64)
    torch.testing.assert_close(sched.log_snr(sched.t_of_lambda(lam_grid)), lam_grid,
                               atol=1e-8, rtol=1e-8)


def test_linear_matches_ddpm_alphas_cumprod():
    sched = get_schedule("linear")
    # independent of the implementation: DDPM's discrete alpha-bar (Ho et al. 2020)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    alphas_cumprod = torch.cumprod(1.0 - betas, 0)  # alpha-bar_n, n = 1..1000
    t = torch.arange(1, 1001, dtype=F64) / 1000
    a, s = sched.alpha_sigma(t)
    torch.testing.assert_close(a * a, alphas_cumprod, atol=0, rtol=1e-12)
    torch.testing.assert_close(s * s, 1 - alphas_cumprod, atol=0, rtol=1e-10)
    assert sched.t_min == pytest.approx(1e-3)
    assert float(a[-1] ** 2) == pytest.approx(4.036e-5, rel=1e-3)  # the well-known value


def test_linear_between_knots_interpolates_log_alpha():
    sched = get_schedule("linear")
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=F64)
    log_abar = torch.cumsum(torch.log1p(-betas), 0)
    n = torch.arange(1, 999)
    t_mid = (n.double() + 0.5) / 1000  # halfway between t_n and t_{n+1}
    expected = 0.5 * (0.5 * log_abar[n - 1] + 0.5 * log_abar[n])  # log alpha, linear in t
    torch.testing.assert_close(torch.log(sched.alpha(t_mid)), expected, atol=1e-12, rtol=0)


def test_cosine_matches_nichol_dhariwal():
    s = 0.008
    sched = get_schedule("cosine", s=s)
    t = torch.linspace(0, 0.99, 100, dtype=F64)

    def f(u):
        return torch.cos((u + s) / (1 + s) * math.pi / 2) ** 2

    abar = f(t) / f(torch.zeros((), dtype=F64))
    torch.testing.assert_close(sched.alpha(t) ** 2, abar, atol=1e-12, rtol=1e-10)


def test_shifted_cosine_lowers_log_snr_by_log_shift():
    base, shifted = get_schedule("cosine"), get_schedule("cosine", shift=4.0)
    t = torch.linspace(0.01, 0.99, 99, dtype=F64)
    torch.testing.assert_close(shifted.log_snr(t), base.log_snr(t) - math.log(4.0),
                               atol=1e-9, rtol=0)
    a, s_ = shifted.alpha_sigma(t)
    torch.testing.assert_close(a ** 2 + s_ ** 2, torch.ones_like(t), atol=1e-12, rtol=0)
    torch.testing.assert_close(shifted.t_of_lambda(shifted.log_snr(t)), t, atol=1e-9, rtol=0)
    assert shifted.config()["shift"] == 4.0 and "shift" not in base.config()
    assert get_schedule(**shifted.config()).log_snr(t).equal(shifted.log_snr(t))
    with pytest.raises(ValueError, match="schedule.shift"):
        get_schedule("cosine", shift=0.0)


def test_sigmoid_matches_closed_form():
    start, end, tau = -3.0, 3.0, 1.0
    sched = get_schedule("sigmoid", start=start, end=end, tau=tau)
    t = torch.linspace(0, 0.99, 100, dtype=F64)

    def sig(u):
        return 1 / (1 + math.exp(-u))

    v0, v1 = sig(start / tau), sig(end / tau)
    abar = (v1 - torch.sigmoid((t * (end - start) + start) / tau)) / (v1 - v0)
    torch.testing.assert_close(sched.alpha(t) ** 2, abar, atol=1e-12, rtol=1e-10)


def test_edm_and_flow_closed_forms():
    t = torch.linspace(0, 1, 11, dtype=F64)
    edm = get_schedule("edm", sigma_min=0.002, sigma_max=80.0)
    a, s = edm.alpha_sigma(t)
    torch.testing.assert_close(a, torch.ones_like(t))
    torch.testing.assert_close(s, 80.0 * t)
    assert edm.t_min == pytest.approx(0.002 / 80) and edm.t_max == 1.0
    assert edm.prior_std == pytest.approx(math.sqrt(1 + 80.0 ** 2))
    flow = get_schedule("flow")
    a, s = flow.alpha_sigma(t)
    torch.testing.assert_close(a, 1 - t)
    torch.testing.assert_close(s, t)
    assert flow.prior_std == pytest.approx(1.0)


@pytest.mark.parametrize("name", ALL)
def test_derivatives_match_finite_differences(name):
    sched = get_schedule(name)
    # for `linear`, stay between the knots t_n = n / 1000 where log alpha bends
    t = (torch.tensor([37, 150, 421, 700, 901], dtype=F64) + 0.5) / 1000
    t = t.clamp(sched.t_min + 1e-4, sched.t_max - 1e-4)
    h = 1e-6
    a_p, s_p = sched.alpha_sigma(t + h)
    a_m, s_m = sched.alpha_sigma(t - h)
    da, ds = sched.derivatives(t)
    assert da.shape == t.shape and ds.shape == t.shape
    torch.testing.assert_close(da, (a_p - a_m) / (2 * h), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(ds, (s_p - s_m) / (2 * h), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_config_rebuilds_the_same_schedule(name):
    sched = get_schedule(name)
    again = get_schedule(**sched.config())
    assert type(again) is type(sched)
    t = interior(sched, 17)
    torch.testing.assert_close(again.log_snr(t), sched.log_snr(t), atol=0, rtol=0)
    assert (again.t_min, again.t_max) == (sched.t_min, sched.t_max)
    assert get_schedule(sched) is sched
    assert name in repr(sched) or type(sched).__name__ in repr(sched)


def test_config_with_arguments_round_trips():
    sched = get_schedule("edm", sigma_min=0.01, sigma_max=10.0)
    assert get_schedule(**sched.config()).sigma_max == 10.0
    lin = get_schedule("linear", beta_start=1e-4, beta_end=0.03, num_steps=500)
    assert get_schedule(**lin.config()).num_steps == 500
    assert lin.t_min == pytest.approx(1 / 500)


def test_unknown_schedule_is_one_clear_line():
    with pytest.raises(ValueError) as info:
        get_schedule("cosin")
    msg = str(info.value)
    assert "\n" not in msg and "'cosin'" in msg
    for name in ALL:
        assert name in msg


def test_bad_schedule_arguments_are_clear():
    with pytest.raises(ValueError, match="edm") as info:
        get_schedule("edm", sigma_min=5.0, sigma_max=1.0)
    assert "\n" not in str(info.value)
    with pytest.raises(ValueError, match="bad arguments for schedule 'cosine'"):
        get_schedule("cosine", sigma_max=3.0)
