"""Prediction types: targets have the promised meaning and every conversion round-trips."""

from __future__ import annotations

import pytest
import torch

from omnidiff.core.forward import add_noise
from omnidiff.core.predictions import PREDICTIONS, target, to_x0_eps, x0_scale
from omnidiff.core.schedules import SCHEDULES, get_schedule

F64 = torch.float64
ALL = sorted(SCHEDULES)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def batch(schedule, shape=(3, 4), b: int = 64, seed: int = 0):
    """x0, eps: (B, *shape) float64; t: (B,) spanning [t_min, t_max] (both ends included)."""
    g = gen(seed)
    x0 = torch.randn(b, *shape, generator=g, dtype=F64) * 1.7 + 0.3
    eps = torch.randn(b, *shape, generator=g, dtype=F64)
    t = torch.linspace(schedule.t_min, schedule.t_max, b, dtype=F64)
    return x0, eps, t


def test_predictions_tuple():
    assert PREDICTIONS == ("eps", "x0", "v", "flow")


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_round_trip(name, kind):
    sched = get_schedule(name)
    x0, eps, t = batch(sched)
    if kind == "eps" and name == "flow":
        t = t[:-1]  # alpha(1) = 0: x0 cannot be recovered from eps at t = 1
        x0, eps = x0[:-1], eps[:-1]
    x_t = add_noise(x0, t, sched, eps)
    out = target(kind, x0, eps, t, sched)
    assert out.shape == x0.shape and out.dtype == F64
    x0_hat, eps_hat = to_x0_eps(kind, out, x_t, t, sched)
    assert x0_hat.dtype == F64 and eps_hat.dtype == F64
    torch.testing.assert_close(x0_hat, x0, atol=1e-8, rtol=1e-8)
    torch.testing.assert_close(eps_hat, eps, atol=1e-8, rtol=1e-8)


@pytest.mark.parametrize("name", ALL)
def test_targets_mean_what_they_say(name):
    sched = get_schedule(name)
    x0, eps, t = batch(sched, shape=(5,))
    a, s = (v[:, None] for v in sched.alpha_sigma(t))
    assert torch.equal(target("eps", x0, eps, t, sched), eps)
    assert torch.equal(target("x0", x0, eps, t, sched), x0)
    torch.testing.assert_close(target("v", x0, eps, t, sched), a * eps - s * x0)
    # flow is the time derivative of the path x_t = alpha(t) x0 + sigma(t) eps
    h = 1e-6
    tt = ((t * 1000).floor() + 0.5) / 1000  # between `linear`'s knots t_n = n / 1000
    tt = tt.clamp(sched.t_min + h, sched.t_max - h)
    dxdt = (add_noise(x0, tt + h, sched, eps) - add_noise(x0, tt - h, sched, eps)) / (2 * h)
    torch.testing.assert_close(target("flow", x0, eps, tt, sched), dxdt, atol=1e-5, rtol=1e-5)


def test_flow_target_on_flow_schedule_is_eps_minus_x0():
    sched = get_schedule("flow")
    x0, eps, t = batch(sched)
    torch.testing.assert_close(target("flow", x0, eps, t, sched), eps - x0, atol=1e-12, rtol=0)


def test_target_keeps_dtype():
    sched = get_schedule("cosine")
    x0, eps, t = batch(sched)
    for kind in PREDICTIONS:
        assert target(kind, x0.float(), eps.float(), t, sched).dtype == torch.float32


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("kind", PREDICTIONS)
def test_x0_scale_is_the_sensitivity_of_x0_hat(name, kind):
    """An error e in the prediction moves x0_hat by x0_scale * e (what loss weights rely on)."""
    sched = get_schedule(name)
    x0, eps, t = batch(sched, shape=(2,))
    t = t[1:-1]
    x0, eps = x0[1:-1], eps[1:-1]
    x_t = add_noise(x0, t, sched, eps)
    out = target(kind, x0, eps, t, sched)
    e = torch.randn(out.shape, generator=gen(5), dtype=F64)
    moved = to_x0_eps(kind, out + e, x_t, t, sched)[0] - to_x0_eps(kind, out, x_t, t, sched)[0]
    torch.testing.assert_close(moved.abs(), x0_scale(kind, t, sched)[:, None] * e.abs(),
                               atol=1e-9, rtol=1e-7)


def test_unknown_prediction_is_one_clear_line():
    sched = get_schedule("linear")
    x0, eps, t = batch(sched, shape=(2,), b=4)
    for call in (lambda: target("epsilon", x0, eps, t, sched),
                 lambda: to_x0_eps("epsilon", x0, x0, t, sched),
                 lambda: x0_scale("epsilon", t, sched)):
        with pytest.raises(ValueError) as info:
            call()
        msg = str(info.value)
        assert "\n" not in msg and "'epsilon'" in msg
        assert all(k in msg for k in PREDICTIONS)


def test_wrong_output_shape_is_one_clear_line():
    sched = get_schedule("linear")
    x0, eps, t = batch(sched, shape=(2,), b=4)
    with pytest.raises(ValueError, match="shape") as info:
        to_x0_eps("eps", torch.zeros(4, 3, dtype=F64), x0, t, sched)
    assert "\n" not in str(info.value)
    assert "(4, 3)" in str(info.value) and "(4, 2)" in str(info.value)
