"""Configs compose; DiffusionModule trains (loss goes down); checkpoints stay weights_only."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from omnidiff.errors import ConfigError
from omnidiff.tasks.config import compose, group_options, list_recipes, validate


def test_recipes_exist():
    recipes = list_recipes()
    assert {"points2d", "points_digits"} <= set(recipes)
    for info in recipes.values():
        assert info.description, f"recipe {info.name} lacks a description comment"


@pytest.mark.parametrize("recipe", sorted(list_recipes()))
def test_every_recipe_composes(recipe):
    cfg = compose(recipe)
    if cfg.get("autoencoder") == "required":  # a latent recipe: the autoencoder run's model.pt
        cfg = compose(recipe, ["autoencoder=ae/model.pt"])
    if cfg.get("stage") == "distill":  # a distillation recipe: omnidiff distill teacher=...
        cfg = compose(recipe, ["distill.teacher=teacher/model.pt"])
    validate(cfg)
    assert cfg.recipe == recipe and cfg.domain
    assert "model" in cfg and "data" in cfg and cfg.trainer.max_steps > 0
    OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


@pytest.mark.parametrize("schedule", ["linear", "cosine", "sigmoid", "edm", "flow"])
def test_schedule_group(schedule):
    from omnidiff.core.schedules import get_schedule

    cfg = compose("points2d", [f"schedule={schedule}"])
    validate(cfg)
    assert get_schedule(**OmegaConf.to_container(cfg.schedule)).name == schedule


def test_sampler_configs_name_registered_samplers():
    from omnidiff.samplers import SAMPLERS

    opts = group_options("sampler")
    assert "dpmpp_2m" in opts
    for name in opts:
        assert compose("points2d", [f"sampler={name}"]).sampler.name in SAMPLERS


def test_trainer_passthrough_and_gpu_preset():
    cfg = compose("points2d", ["trainer.max_steps=7", "trainer.devices=2", "trainer.strategy=ddp",
                               "trainer.precision=bf16-mixed", "trainer.num_nodes=3",
                               "trainer.accelerator=cpu", "+trainer.accumulate_grad_batches=2"])
    t = cfg.trainer
    assert (t.max_steps, t.devices, t.strategy, t.precision, t.num_nodes, t.accelerator,
            t.accumulate_grad_batches) == (7, 2, "ddp", "bf16-mixed", 3, "cpu", 2)
    gpu = compose("points2d", ["trainer=gpu"]).trainer
    assert gpu.precision == "bf16-mixed" and gpu.accelerator == "gpu"


def test_no_recipe_uses_default_domain():
    cfg = compose(None, [])
    assert cfg.recipe is None and cfg.domain == "points"


@pytest.mark.parametrize("overrides, needle", [
    (["recipe=nope"], "unknown recipe"),
    (["domain=nope"], "unknown domain"),
    (["schedule=nope"], "unknown schedule"),
    (["sampler=nope"], "unknown sampler"),
    (["nope.key=3"], "+KEY=VALUE"),
    (["trainer.nope=3"], "trainer has no option"),
    (["trainer.max_step=3"], "did you mean trainer.max_steps"),
    (["oops"], "bad override"),
])
def test_compose_errors(overrides, needle):
    with pytest.raises(ConfigError, match=needle.replace("+", r"\+")):
        compose(None, overrides)


def test_validate_catches_core_names():
    for ov, needle in ((["sampler.name=nope"], "sampler"), (["loss.prediction=nope"], "prediction"),
                       (["loss.weighting=nope"], "weighting")):
        with pytest.raises(ConfigError, match=needle):
            validate(compose("points2d", ov))


def test_short_training_lowers_loss(tmp_path):
    """Loss on a fixed batch (fixed noise and times) drops after 80 optimizer steps."""
    import lightning.pytorch as pl

    from omnidiff.model_spec import ModelSpec
    from omnidiff.training.callbacks import EMA
    from omnidiff.training.diffusion_module import DiffusionModule

    torch.manual_seed(0)
    data_cfg = {"kind": "density", "name": "eight_gaussians", "train_size": 4096,
                "val_size": 256, "batch_size": 128}
    m = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 64, "depth": 2},
                                  {"name": "cosine"}, (2,), prediction="eps", data=data_cfg),
                        optim={"lr": 3e-3, "warmup": 10})
    dm = m.domain.build_data(**data_cfg)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))

    def fixed_loss():
        with torch.no_grad():
            return float(m._loss(batch, generator=torch.Generator().manual_seed(0)))

    before = fixed_loss()
    trainer = pl.Trainer(max_steps=80, accelerator="cpu", logger=False, enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=0, callbacks=[EMA(decay=0.9)])
    trainer.fit(m, datamodule=dm)
    after = fixed_loss()
    assert after < 0.8 * before, (before, after)


def test_hparams_are_plain_python():
    from omnidiff.model_spec import ModelSpec
    from omnidiff.training.diffusion_module import DiffusionModule

    m = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 8, "depth": 1},
                                  {"name": "flow"}, (2,), prediction="flow",
                                  data={"path": None}))
    hp = dict(m.hparams)
    allowed = (str, int, float, bool, type(None), list, dict)

    def walk(v):
        assert isinstance(v, allowed), type(v)
        if isinstance(v, dict):
            [walk(x) for x in v.values()]
        if isinstance(v, list):
            [walk(x) for x in v]
    walk(hp)


def test_config_blocks_reach_their_readers_whole(monkeypatch):
    """loss.* goes whole to diffusion_loss (min_snr_gamma, the EDM log-normal's p_mean), the
    sampler block to the training-time sampling, optim.* to AdamW."""
    import warnings

    from omnidiff.tasks.config import compose, validate
    from omnidiff.tasks.train import build_callbacks, build_module
    from omnidiff.training.callbacks import SampleCallback

    def loss_with(*overrides):
        cfg = compose("points2d", ["data.train_size=512", "data.val_size=64", *overrides])
        validate(cfg)
        dm, module = build_module(cfg)
        batch = next(iter(dm.train_dataloader()))
        return float(module._loss(batch, generator=torch.Generator().manual_seed(0))), module

    base, _ = loss_with("loss.weighting=min_snr")
    capped, _ = loss_with("loss.weighting=min_snr", "loss.min_snr_gamma=0.01")
    assert capped < 0.1 * base, (base, capped)
    import omnidiff.core.losses as losses

    seen = {}
    real = losses.sample_time
    monkeypatch.setattr(losses, "sample_time", lambda *a, **k: seen.update(k) or real(*a, **k))
    loss_with("loss.time_sampling=edm_lognormal", "loss.p_mean=-6", "loss.p_std=0.01")
    assert (seen["p_mean"], seen["p_std"]) == (-6, 0.01)
    _, module = loss_with("optim.lr=0.02", "+optim.betas=[0.5,0.6]")
    opt = module.configure_optimizers()["optimizer"]
    assert opt.defaults["lr"] == 0.02 and opt.defaults["betas"] == (0.5, 0.6)

    cfg = compose("points2d", ["sampler=ddim", "+sampler.eta=0.5", "sampler.clip_x0=3"])
    cb = next(c for c in build_callbacks(cfg, Path("unused"))
              if isinstance(c, SampleCallback))
    assert (cb.sampler, cb.options) == ("ddim", {"eta": 0.5, "clip_x0": 3})
    with warnings.catch_warnings():  # training without a recipe uses defaults it recommends
        warnings.simplefilter("error")
        validate(compose(overrides=[]))
