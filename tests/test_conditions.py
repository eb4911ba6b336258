"""Conditions of every kind (omnidiff.conditions): specifications, checks, the core's pass-
through (losses, guidance, generate), shapes fixed by a condition, files, and a trained model
that follows a tensor condition and a named set (labels + tensor)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from omnidiff.core.conditions import (
    LabelCond,
    NamedCond,
    NoCond,
    TensorCond,
    as_cond_spec,
    cat_conds,
    index_cond,
    cond_spec_of,
)
from omnidiff.core.guidance import classifier_free
from omnidiff.core.model import DiffusionModel
from omnidiff.errors import ConditionError, PipelineError
from omnidiff.inference.pipeline import Pipeline
from omnidiff.model_spec import ModelSpec
from omnidiff.nn import null_where

SPECS = [NoCond(), LabelCond(10), TensorCond((80, None)), TensorCond((3,), "float32"),
         TensorCond((4,), "bool"),
         NamedCond((("label", LabelCond(3)), ("mel", TensorCond((8, None)))))]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_spec_round_trips_through_plain_dicts(spec):
    d = spec.to_dict()
    assert torch.serialization.get_unsafe_globals_in_checkpoint is not None or True
    assert as_cond_spec(d) == spec and as_cond_spec(spec) is spec
    assert all(isinstance(k, str) for k in d)


def test_legacy_num_classes_and_data_modules():
    assert as_cond_spec(0) == NoCond() and as_cond_spec(7) == LabelCond(7)

    class Old:  # a data module written before cond_spec existed
        num_classes = 4
    assert cond_spec_of(Old()) == LabelCond(4)

    class New:
        cond_spec = TensorCond((3,))
        num_classes = 0
    assert cond_spec_of(New()) == TensorCond((3,))


def test_tensor_check_shapes_dtypes_and_n():
    spec = TensorCond((2, None))
    one = torch.randn(2, 5)
    c, n = spec.check(one)
    assert n == 1 and c.shape == (1, 2, 5)
    c, n = spec.check(one, 4)
    assert n == 4 and c.shape == (4, 2, 5) and torch.equal(c[3], one)
    c, n = spec.check(np.zeros((3, 2, 7), dtype=np.float64))  # numpy, float64 -> float32
    assert n == 3 and c.dtype == torch.float32
    with pytest.raises(ConditionError, match=r"expected float32 \(2, \*\)"):
        spec.check(torch.randn(3, 5))
    with pytest.raises(ConditionError, match="dtype int64"):
        spec.check(torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ConditionError, match="for n=2"):
        spec.check(torch.randn(3, 2, 5), 2)
    with pytest.raises(ConditionError, match="different shapes"):
        spec.check([torch.randn(2, 5), torch.randn(2, 6)])
    with pytest.raises(ConditionError, match="NaN"):
        spec.check(torch.full((2, 5), float("nan")))
    with pytest.raises(ConditionError, match="bool"):
        TensorCond((4,), "bool").check(torch.zeros(4))


def test_named_check_and_batch_ops():
    spec = NamedCond({"label": LabelCond(3), "props": TensorCond((2,))})
    c, n = spec.check({"label": [0, 1, 2], "props": torch.zeros(2)})
    assert n == 3 and c["props"].shape == (3, 2) and c["label"].tolist() == [0, 1, 2]
    with pytest.raises(ConditionError, match="missing"):
        spec.check({"label": 1})
    with pytest.raises(ConditionError, match=r"cond\['label'\].*out of range"):
        spec.check({"label": 5, "props": torch.zeros(2)})
    both = cat_conds([c, c])
    assert both["label"].shape == (6,) and torch.equal(index_cond(both, slice(3, 6))["props"],
                                                       c["props"])
    spec.check_batch(c, 3)
    with pytest.raises(ConditionError):
        spec.check_batch({"label": c["label"].float(), "props": c["props"]}, 3)


# ---- a tiny domain whose condition fixes the sample's shape (a vocoder in miniature) ------

HOP = 4


class _RampData:
    """Event (1, HOP * frames); condition (2, frames): each frame's mean and spread."""
    event_shape = (1, 8)
    cond_spec = TensorCond((2, None))

    def event_shape_for(self, cond):
        return (1, HOP * cond.shape[-1])

    def condition(self, x):  # (n, 1, L) -> (n, 2, L / HOP)
        frames = x.reshape(x.shape[0], -1, HOP)
        return torch.stack([frames.mean(-1), frames.std(-1)], dim=1)


class _RampNet(nn.Module):
    """Reads its dense condition upsampled to the waveform rate; zeros are its null."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(3, 1, 3, padding=1)
        self.calls = 0

    def forward(self, x, t, cond=None, drop=None):
        self.calls += 1
        if cond is None:
            cond = torch.zeros(x.shape[0], 2, x.shape[-1] // HOP)
        cond = null_where(drop, cond, torch.zeros(()))
        up = cond.repeat_interleave(HOP, dim=-1)  # (B, 2, L)
        return self.conv(torch.cat([x, up], dim=1)) * t[:, None, None]


class _RampDomain:
    name = "ramp"
    sample_defaults: dict = {}

    def build_data(self, **cfg):
        return _RampData()


def _ramp_pipe(spec=TensorCond((2, None))):
    torch.manual_seed(0)
    net = _RampNet()
    model = DiffusionModel(net, "cosine", "v")
    return Pipeline(model, ModelSpec("ramp", {}, {"name": "cosine"}, (1, 8), spec,
                                     prediction="v"), domain=_RampDomain()), net


def test_condition_fixes_the_shape_and_n():
    pipe, _ = _ramp_pipe()
    x = pipe.generate(cond=torch.randn(2, 5), steps=2, seed=0)
    assert x.shape == (1, 1, 20)
    x = pipe.generate(cond=torch.randn(3, 2, 6), steps=2, seed=0)
    assert x.shape == (3, 1, 24)
    x = pipe.generate(4, cond=torch.randn(2, 3), steps=2, seed=0)
    assert x.shape == (4, 1, 12)
    # real data round-trips: the condition of a waveform fixes a waveform of its length
    wave = torch.randn(2, 1, 36)
    assert pipe.generate(cond=pipe.condition(wave), steps=2, seed=0).shape == wave.shape


def test_the_network_sees_the_condition_and_guidance_is_one_call():
    pipe, net = _ramp_pipe()
    c = torch.randn(2, 2, 5)
    a = pipe.generate(cond=c, steps=3, seed=0)
    b = pipe.generate(cond=c + 3.0, steps=3, seed=0)
    assert not torch.allclose(a, b)  # the condition reaches the network
    net.calls = 0
    g = pipe.generate(cond=c, steps=3, seed=0, sampler="ddim", guidance=2.0)
    assert net.calls == 3  # one batched (cond + null) call per step
    assert not torch.allclose(g, pipe.generate(cond=c, steps=3, seed=0, sampler="ddim"))
    # guidance 1 is the conditional model, guidance 0 the null condition
    cond1 = pipe.generate(cond=c, steps=3, seed=0, sampler="ddim")
    torch.testing.assert_close(pipe.generate(cond=c, steps=3, seed=0, sampler="ddim",
                                             guidance=1.0), cond1)
    null = pipe.generate(cond=torch.zeros_like(c), steps=3, seed=0, sampler="ddim")
    torch.testing.assert_close(pipe.generate(cond=c, steps=3, seed=0, sampler="ddim",
                                             guidance=0.0), null, rtol=1e-5, atol=1e-5)


def test_bad_tensor_conditions_fail_in_one_line():
    pipe, _ = _ramp_pipe()
    for bad, needle in ((torch.randn(3, 5), r"expected float32 \(2, \*\)"),
                        (torch.ones(2, 5, dtype=torch.long), "dtype int64"),
                        ("abc", "cond must be"),
                        ([torch.randn(2, 4), torch.randn(2, 5)], "different shapes")):
        with pytest.raises(PipelineError, match=needle) as err:
            pipe.generate(cond=bad, steps=2)
        assert "\n" not in str(err.value)
    with pytest.raises(PipelineError, match="pass cond="):
        pipe.generate(2, steps=2)  # a tensor condition cannot be drawn without data
    with pytest.raises(PipelineError, match="pass n"):
        _ramp_pipe(NoCond())[0].generate(steps=2)
    with pytest.raises(PipelineError, match="unconditional"):
        _ramp_pipe(NoCond())[0].generate(2, cond=torch.randn(2, 5), steps=2)


def test_condition_files(tmp_path):
    pipe, _ = _ramp_pipe()
    np.save(tmp_path / "mel.npy", np.random.default_rng(0).normal(size=(3, 2, 5)))
    assert pipe.read_condition(tmp_path / "mel.npy").shape == (3, 2, 5)
    wave = torch.randn(2, 1, 16)
    torch.save(wave, tmp_path / "wave.pt")  # data: the domain computes its condition
    torch.testing.assert_close(pipe.read_condition(tmp_path / "wave.pt"), pipe.condition(wave))
    (tmp_path / "a.wav").write_bytes(b"RIFF")
    with pytest.raises(PipelineError, match="cannot read .wav"):
        pipe.read_condition(tmp_path / "a.wav")
    np.save(tmp_path / "bad.npy", np.zeros((3, 7)))
    with pytest.raises(PipelineError, match=r"expected float32 \(2, \*\).*or data"):
        pipe.read_condition(tmp_path / "bad.npy")


def test_loss_passes_any_condition_through_with_the_drop_mask():
    from omnidiff.core.losses import diffusion_loss
    from omnidiff.core.schedules import get_schedule

    seen = {}

    def model(x_t, t, cond=None, drop=None):
        seen["cond"], seen["drop"] = cond, drop
        return torch.zeros_like(x_t)

    cond = {"label": torch.arange(64) % 3, "props": torch.randn(64, 2)}
    diffusion_loss(model, torch.randn(64, 2), schedule=get_schedule("cosine"), cond=cond,
                   p_uncond=0.5, generator=torch.Generator().manual_seed(0))
    assert seen["cond"] is cond and seen["drop"].dtype == torch.bool
    assert 10 < int(seen["drop"].sum()) < 54


def test_guidance_concatenates_named_conditions():
    calls = []

    def model(x_t, t, cond=None, drop=None):
        calls.append((cond, drop))
        return x_t * 0 + drop[:, None].float()

    cond = {"label": torch.tensor([1, 2]), "props": torch.randn(2, 3)}
    fn = classifier_free(model, cond, 3.0)
    out = fn(torch.zeros(2, 4), torch.full((2,), 0.5))
    (c, drop), = calls
    assert c["props"].shape == (4, 3) and torch.equal(c["label"], torch.tensor([1, 2, 1, 2]))
    assert drop.tolist() == [False, False, True, True]
    torch.testing.assert_close(out, torch.full((2, 4), 1.0 + 3.0 * (0.0 - 1.0)))


def test_optional_tensor_fields_are_filled_and_round_trip():
    from omnidiff.core.conditions import LabelCond, NamedCond, TensorCond, as_cond_spec

    spec = NamedCond({"label": LabelCond(3), "frames": TensorCond((2, 4), fill=0.0),
                      "mask": TensorCond((2,), fill=1.0)})
    assert as_cond_spec(spec.to_dict()) == spec and not TensorCond((2,)).drawable
    cond, n = spec.check({"label": [0, 2]})  # optional fields left out
    assert n == 2 and cond["frames"].shape == (2, 2, 4) and (cond["frames"] == 0).all()
    assert (cond["mask"] == 1).all() and list(cond) == ["label", "frames", "mask"]
    drawn = spec.draw(5, torch.Generator().manual_seed(0))
    assert drawn["label"].shape == (5,) and drawn["mask"].shape == (5, 2)
    with pytest.raises(ConditionError, match="missing \\['label'\\]"):
        spec.check({"mask": torch.ones(2)})
    with pytest.raises(ConditionError, match="pass n"):
        NamedCond({"a": TensorCond((1,), fill=0.0)}).check({})
    with pytest.raises(ValueError, match="fixed shape"):
        TensorCond((None,), fill=0.0)
