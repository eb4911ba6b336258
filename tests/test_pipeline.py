"""omnidiff.load / Pipeline: shapes, seeds, conditions, artifacts, metrics, checkpoint formats."""

from __future__ import annotations

import pytest
import torch

import omnidiff
from omnidiff.errors import CheckpointError, PipelineError
from omnidiff.model_file import read_checkpoint, save_inference
from omnidiff.model_spec import ModelSpec
from omnidiff.training.diffusion_module import DiffusionModule

DENSITY = {"kind": "density", "name": "moons", "train_size": 512, "val_size": 64,
           "batch_size": 64}
CLOUDS = {"kind": "cloud", "name": "shapes", "num_points": 16, "train_size": 256,
          "val_size": 32, "batch_size": 32}


def _module(data_cfg, model_cfg, event_shape, num_classes):
    torch.manual_seed(0)
    return DiffusionModule(ModelSpec("points", model_cfg, {"name": "cosine"}, event_shape,
                                     num_classes, prediction="v", data=data_cfg))


@pytest.fixture(scope="module")
def uncond_ckpt(tmp_path_factory):
    m = _module(DENSITY, {"name": "mlp", "width": 32, "depth": 1}, (2,), 0)
    return save_inference(m, tmp_path_factory.mktemp("uncond") / "model.pt")


@pytest.fixture(scope="module")
def cond_ckpt(tmp_path_factory):
    from omnidiff_domains.points.clouds import SHAPES
    m = _module(CLOUDS, {"name": "set_transformer", "width": 16, "depth": 1, "heads": 2},
                (16, 2), len(SHAPES))
    return save_inference(m, tmp_path_factory.mktemp("cond") / "model.pt")


def test_model_pt_is_plain_and_weights_only(uncond_ckpt):
    obj = torch.load(uncond_ckpt, weights_only=True)
    assert obj["format"] == "omnidiff" and obj["omnidiff_version"] == omnidiff.__version__
    assert obj["domain"] == "points" and obj["event_shape"] == [2] and obj["num_classes"] == 0
    assert obj["schedule"]["name"] == "cosine" and obj["prediction"] == "v"
    assert obj["data"]["name"] == "moons"
    assert all(isinstance(v, torch.Tensor) for v in obj["state_dict"].values())


def test_generate_shape_and_seed(uncond_ckpt):
    pipe = omnidiff.load(uncond_ckpt, device="cpu")
    a = pipe.generate(37, steps=4, seed=3)
    b = pipe.generate(37, steps=4, seed=3)
    c = pipe.generate(37, steps=4, seed=4)
    assert a.shape == (37, 2) and torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)
    d = pipe.generate(37, steps=4, seed=3, batch_size=10)  # noise does not depend on batching
    assert torch.allclose(a, d, atol=1e-4)
    assert pipe.last_cond is None


@pytest.mark.parametrize("sampler", ["ddim", "euler", "heun", "dpmpp_2m"])
def test_generate_samplers(uncond_ckpt, sampler):
    x = omnidiff.load(uncond_ckpt, device="cpu").generate(8, sampler=sampler, steps=3, seed=0)
    assert x.shape == (8, 2) and torch.isfinite(x).all()


def test_save_and_metrics(uncond_ckpt, tmp_path):
    pipe = omnidiff.load(uncond_ckpt, device="cpu")
    x = pipe.generate(64, steps=4, seed=0)
    files = pipe.save(x, tmp_path / "out")
    assert files and all(f.exists() for f in files)
    assert any(f.suffix == ".png" for f in files)
    m = pipe.metrics(x, n_ref=64)
    assert "sliced_w2" in m and all(isinstance(v, float) for v in m.values())


def test_conditional_generation(cond_ckpt, tmp_path):
    pipe = omnidiff.load(cond_ckpt, device="cpu")
    k = pipe.num_classes
    x = pipe.generate(6, steps=3, seed=0, cond=1)
    assert x.shape == (6, 16, 2) and pipe.last_cond.tolist() == [1] * 6
    x = pipe.generate(3, steps=3, seed=0, cond=[0, 1, k - 1], guidance=2.0)
    assert x.shape == (3, 16, 2)
    x = pipe.generate(3, steps=3, seed=0, cond=torch.tensor([2, 2, 0]))
    assert pipe.last_cond.tolist() == [2, 2, 0]
    # no cond: labels drawn uniformly with the seed, recorded, used by save()
    x1 = pipe.generate(10, steps=3, seed=5)
    c1 = pipe.last_cond.clone()
    x2 = pipe.generate(10, steps=3, seed=5)
    assert torch.equal(x1, x2) and torch.equal(c1, pipe.last_cond)
    assert c1.min() >= 0 and c1.max() < k
    assert pipe.save(x2, tmp_path)


def test_bad_conditions(uncond_ckpt, cond_ckpt):
    uncond = omnidiff.load(uncond_ckpt, device="cpu")
    with pytest.raises(PipelineError, match="unconditional"):
        uncond.generate(4, cond=1)
    with pytest.raises(PipelineError, match="needs a conditional model"):
        uncond.generate(4, guidance=3.0)
    cond = omnidiff.load(cond_ckpt, device="cpu")
    with pytest.raises(PipelineError, match="out of range"):
        cond.generate(2, cond=cond.num_classes)
    with pytest.raises(PipelineError, match="labels for n=3"):
        cond.generate(3, cond=[0, 1])
    with pytest.raises(PipelineError, match="unknown sampler"):
        cond.generate(2, sampler="nope")


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_text("hello")
    with pytest.raises(CheckpointError, match="not an omnidiff checkpoint"):
        omnidiff.load(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not an omnidiff checkpoint"):
        omnidiff.load(other)
    with pytest.raises(CheckpointError, match="not found"):
        omnidiff.load(tmp_path / "missing.pt")


def test_lightning_ckpt_loads_weights_only(tmp_path):
    import lightning.pytorch as pl

    from omnidiff.training.callbacks import EMA
    from omnidiff.training.checkpoints import model_checkpoint

    m = _module(DENSITY, {"name": "mlp", "width": 16, "depth": 1}, (2,), 0)
    dm = m.domain.build_data(**DENSITY)
    trainer = pl.Trainer(max_steps=3, accelerator="cpu", logger=False,
                         enable_progress_bar=False, enable_model_summary=False,
                         callbacks=[EMA(decay=0.9), model_checkpoint(tmp_path)],
                         limit_val_batches=0)
    trainer.fit(m, datamodule=dm)
    ckpt = tmp_path / "last.ckpt"
    raw = torch.load(ckpt, weights_only=True)
    assert raw["hyper_parameters"]["domain"] == "points"
    payload = read_checkpoint(ckpt)
    assert payload["ema"] is True and payload["global_step"] == 3
    pipe = omnidiff.load(ckpt, device="cpu")
    assert pipe.generate(5, steps=2, seed=0).shape == (5, 2)
    # the .ckpt holds the EMA weights, which the module holds after fit
    for k, v in m.model.state_dict().items():
        assert torch.allclose(pipe.model.state_dict()[k], v)


def test_sampler_options_and_domain_sample_defaults(uncond_ckpt, monkeypatch):
    """generate() passes sampler options through, over the domain's sample_defaults."""
    pipe = omnidiff.load(uncond_ckpt, device="cpu")
    free = pipe.generate(256, steps=4, seed=0)
    assert free.abs().max() > 0.3  # an untrained net: x0 estimates roam
    clipped = pipe.generate(256, steps=4, seed=0, clip_x0=0.3)
    assert clipped.abs().max() <= 0.3 + 1e-6
    karras = pipe.generate(256, steps=4, seed=0, grid="karras")
    assert not torch.allclose(karras, free)  # the grid option reached the sampler
    monkeypatch.setattr(type(pipe.domain), "sample_defaults", {"clip_x0": 0.2}, raising=False)
    assert pipe.generate(256, steps=4, seed=0).abs().max() <= 0.2 + 1e-6
    assert torch.equal(pipe.generate(256, steps=4, seed=0, clip_x0=None), free)


def test_image_domain_clips_x0_to_pixel_range():
    from omnidiff.plugins.registry import get_domain
    assert get_domain("image").sample_defaults == {"clip_x0": 1.0}
