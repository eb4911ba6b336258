"""Classifier-free guidance: u + w (c - u) from one batched call."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from omnidiff.core.guidance import classifier_free, composed, conditional
from omnidiff.core.model import DiffusionModel
from omnidiff.core.schedules import get_schedule
from omnidiff.nn import ClassEmbedding
from omnidiff.samplers import sample

F64 = torch.float64


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


class CountingModel:
    """A conditional 'network': different, non-linear outputs for each class and for null."""

    def __init__(self):
        self.calls = []
        self.table = torch.randn(4, 3, generator=gen(0), dtype=F64)  # row 3: the null class

    def __call__(self, x_t, t, cond=None, drop=None):
        self.calls.append((x_t.shape[0], None if drop is None else drop.clone()))
        label = cond.clone()
        if drop is not None:
            label[drop] = 3
        return torch.tanh(x_t) * (1 + t[:, None]) + self.table[label]

    def cond_only(self, x_t, t, cond):
        return self(x_t, t, cond=cond, drop=torch.zeros(len(cond), dtype=torch.bool))

    def uncond_only(self, x_t, t, cond):
        return self(x_t, t, cond=cond, drop=torch.ones(len(cond), dtype=torch.bool))


def inputs(b: int = 5):
    x = torch.randn(b, 3, generator=gen(1), dtype=F64)
    t = torch.rand(b, generator=gen(2), dtype=F64)
    cond = torch.tensor([0, 1, 2, 1, 0])[:b]
    return x, t, cond


@pytest.mark.parametrize("scale", [0.0, 1.0, 3.5, -0.5])
def test_guided_output_is_u_plus_w_c_minus_u(scale):
    m = CountingModel()
    x, t, cond = inputs()
    c, u = m.cond_only(x, t, cond), m.uncond_only(x, t, cond)
    m.calls.clear()
    out = classifier_free(m, cond, scale)(x, t)
    torch.testing.assert_close(out, u + scale * (c - u), atol=1e-12, rtol=0)
    if scale == 1.0:
        torch.testing.assert_close(out, c, atol=1e-12, rtol=0)
    if scale == 0.0:
        torch.testing.assert_close(out, u, atol=1e-12, rtol=0)
    # one batched call: the conditional and unconditional halves together
    assert len(m.calls) == 1
    batch, drop = m.calls[0]
    assert batch == 2 * len(x)
    assert drop.tolist() == [False] * 5 + [True] * 5


def test_unguided_and_conditional():
    m = CountingModel()
    x, t, cond = inputs()
    c = m.cond_only(x, t, cond)
    m.calls.clear()
    for fn in (classifier_free(m, cond, None), conditional(m, cond)):
        torch.testing.assert_close(fn(x, t), c)
    assert [b for b, _ in m.calls] == [5, 5]
    assert all(d is None for _, d in m.calls)  # no drop mask: the plain conditional model


def test_guidance_without_condition_is_a_clear_error():
    with pytest.raises(ValueError, match="cond") as info:
        classifier_free(CountingModel(), None, 2.0)
    assert "\n" not in str(info.value)


class TinyCondNet(nn.Module):
    """net(x, t, cond, drop) with a learned null class, as domains build them."""

    def __init__(self):
        super().__init__()
        self.emb = ClassEmbedding(3, 8)
        self.lin = nn.Linear(2 + 8 + 1, 2)

    def forward(self, x, t, cond=None, drop=None):
        e = self.emb(cond, drop, x.shape[0], x.device)  # (B, 8)
        return self.lin(torch.cat([x, e, t[:, None]], -1))


def test_guidance_through_sampler_counts_network_evals():
    torch.manual_seed(0)
    sched = get_schedule("cosine")
    model = DiffusionModel(TinyCondNet(), sched, "v")
    cond = torch.tensor([0, 1, 2, 0])
    noise = torch.randn(4, 2, generator=gen(3))
    stats = {}
    with torch.no_grad():
        x = sample(classifier_free(model, cond, 2.0), noise, schedule=sched, prediction="v",
                   sampler="ddim", steps=6, stats=stats)
        assert x.shape == (4, 2) and torch.isfinite(x).all()
        assert stats["nfe"] == 6 and stats["network_evals"] == 12
        # scale 1 through the sampler is the conditional model's sampler run
        a = sample(classifier_free(model, cond, 1.0), noise, schedule=sched, prediction="v",
                   sampler="ddim", steps=6)
        b = sample(conditional(model, cond), noise, schedule=sched, prediction="v",
                   sampler="ddim", steps=6)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
        assert not torch.allclose(x, b, atol=1e-3)


def test_composed_guidance_adds_each_conditions_push_in_one_call():
    m = CountingModel()
    x, t, c1 = inputs()
    c2 = torch.tensor([2, 2, 0, 0, 1])
    a, b = m.cond_only(x, t, c1), m.cond_only(x, t, c2)
    u = m.uncond_only(x, t, c1)
    m.calls.clear()
    out = composed(m, [c1, c2], [2.0, 5.0])(x, t)
    torch.testing.assert_close(out, u + 2.0 * (a - u) + 5.0 * (b - u), atol=1e-12, rtol=0)
    assert len(m.calls) == 1 and m.calls[0][0] == 15
    assert m.calls[0][1].tolist() == [False] * 10 + [True] * 5
    # one condition is classifier-free guidance at that scale
    torch.testing.assert_close(composed(m, [c1], [3.5])(x, t),
                               classifier_free(m, c1, 3.5)(x, t), atol=1e-12, rtol=0)
    # a negative condition takes the null one's place, as in classifier_free
    neg = torch.tensor([1, 0, 0, 2, 2])
    torch.testing.assert_close(composed(m, [c1], [3.5], uncond=neg)(x, t),
                               classifier_free(m, c1, 3.5, uncond=neg)(x, t), atol=1e-12, rtol=0)
    n_ = m.cond_only(x, t, neg)
    torch.testing.assert_close(composed(m, [c1, c2], [2.0, 5.0], uncond=neg)(x, t),
                               n_ + 2.0 * (a - n_) + 5.0 * (b - n_), atol=1e-12, rtol=0)


def test_composed_guidance_through_a_sampler_counts_its_halves():
    torch.manual_seed(0)
    sched = get_schedule("cosine")
    model = DiffusionModel(TinyCondNet(), sched, "v")
    c1, c2 = torch.tensor([0, 1, 2, 0]), torch.tensor([1, 1, 0, 2])
    noise = torch.randn(4, 2, generator=gen(3))
    stats = {}
    with torch.no_grad():
        x = sample(composed(model, [c1, c2], [1.0, 1.0]), noise, schedule=sched,
                   prediction="v", sampler="ddim", steps=6, stats=stats)
    assert torch.isfinite(x).all() and stats["network_evals"] == 18


@pytest.mark.parametrize("conds,weights,needle", [
    ([], [], "one weight per condition"), ([torch.tensor([0])], [1.0, 2.0], "one weight"),
    ([None], [1.0], "every condition")])
def test_composed_guidance_mistakes_are_one_line(conds, weights, needle):
    with pytest.raises(ValueError, match=needle) as info:
        composed(CountingModel(), conds, weights)
    assert "\n" not in str(info.value)
