"""diffusers architectures inside omnidiff's training, exported back to diffusers, and
omnidiff's tools (sample, calibrate, likelihood, distill) on the exported folder.

One tiny UNet2DModel trained for a few steps on unconditional digits (seconds); nothing is
downloaded."""

import hashlib
import json

import pytest
import torch

import omnidiff
from omnidiff.cli.commands import main
from omnidiff.errors import OmnidiffError
from omnidiff.inference.export import export_diffusers
from omnidiff.inference.pipeline import Pipeline
from omnidiff.methods.diffusers.network import DiffusersNet, training_block
from omnidiff.model_spec import ModelSpec

diffusers = pytest.importorskip("diffusers")

TINY = ["trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1", "threads=1",
        "eval.n_samples=16", "eval.n_ref=64", "eval.every_n_steps=0",
        "checkpoint.every_n_train_steps=0", "data.train_size=256",
        "model.config.block_out_channels=[16,32]", "model.config.layers_per_block=1",
        "model.config.attention_head_dim=16"]


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _digests(folder):
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(run folder, exported diffusers folder) of an unconditional digits UNet2DModel."""
    root = tmp_path_factory.mktemp("diffusers_run")
    run, folder = root / "run", root / "exported"
    code = main(["train", "recipe=image_digits_diffusers", f"out={run}", "trainer.max_steps=20",
                 "data.conditional=false", *TINY])
    assert code == 0
    assert main(["export", f"checkpoint={run / 'model.pt'}", f"out={folder}"]) == 0
    return run, folder


def test_training_a_diffusers_class_keeps_it_in_model_pt(exported):
    run, _ = exported
    payload = torch.load(run / "model.pt", weights_only=True)
    block = payload["model"]
    assert block["name"] == "diffusers" and block["class"] == "UNet2DModel"
    assert set(block) == {"name", "class", "config", "num_train_timesteps", "null_class"}
    assert block["config"]["sample_size"] == 8 and block["config"]["in_channels"] == 1
    assert "num_class_embeds" not in block["config"]  # unconditional data
    pipe = omnidiff.load(run / "model.pt", device="cpu")
    assert isinstance(pipe.model.net, DiffusersNet)
    assert isinstance(pipe.model.net.model, diffusers.UNet2DModel)


def test_diffusers_ddim_pipeline_reproduces_omnidiff(exported):
    """diffusers' own DDIMPipeline on the exported folder = omnidiff's DDIM on the same
    noise and timesteps (both mapped to [0, 1] pixels as DDIMPipeline returns them)."""
    run, folder = exported
    pipe = diffusers.DDIMPipeline.from_pretrained(folder)
    gen = torch.Generator().manual_seed(0)
    ref = pipe(batch_size=3, generator=gen, num_inference_steps=10, output_type="np").images
    noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    ours_folder = omnidiff.load(folder, device="cpu")
    x = ours_folder.generate(noise=noise, sampler="ddim", steps=10, grid="diffusers",
                             clip_x0=None)
    pixels = (x / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    assert abs(pixels - ref).max() <= 1e-5
    # the run's own model.pt on the same times gives the same samples
    own = omnidiff.load(run / "model.pt", device="cpu")
    y = own.generate(noise=noise, sampler="ddim", grid=ours_folder._diffusers_grid("ddim", 10),
                     clip_x0=None)
    assert torch.allclose(x, y, atol=1e-6)
    meta = json.loads((folder / "unet" / "omnidiff.json").read_text())
    assert meta["domain"] == "image" and meta["data"]["name"] == "digits"


def test_cli_tools_on_the_exported_folder(exported, tmp_path, capsys):
    _, folder = exported
    before = _digests(folder)
    code, out, err = _cli(["sample", f"checkpoint={folder}", "n=4", "steps=3", "grid=diffusers",
                           f"out={tmp_path / 'gen'}"], capsys)
    assert code == 0, err
    assert list((tmp_path / "gen").glob("*.png"))
    import numpy as np
    x_T = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    np.save(tmp_path / "noise.npy", x_T.numpy())
    code, out, err = _cli(["sample", f"checkpoint={folder}", f"noise={tmp_path / 'noise.npy'}",
                           "sampler=ddim", "steps=3", "grid=diffusers",
                           f"out={tmp_path / 'gen_noise'}"], capsys)
    assert code == 0, err
    want = omnidiff.load(folder, device="cpu").generate(noise=x_T, sampler="ddim", steps=3,
                                                        grid="diffusers")
    got = torch.as_tensor(np.load(tmp_path / "gen_noise" / "samples.npy"))
    assert got.shape == (3, 1, 8, 8) and torch.allclose(got, want, atol=1e-6)
    code, out, err = _cli(["calibrate", f"checkpoint={folder}", "steps=3", "n=16",
                           "sampler=ddim"], capsys)
    assert code == 0, err
    sidecar = folder.with_name(folder.name + ".omnidiff.json")
    assert sidecar.is_file() and "ddim" in next(iter(json.loads(sidecar.read_text())["grids"]))
    assert f"checkpoint={folder}" in out
    pipe = omnidiff.load(folder, device="cpu")
    pipe.generate(2, sampler="ddim", steps=3, seed=0)
    assert pipe.last_grid == "calibrated"
    code, out, err = _cli(["likelihood", f"checkpoint={folder}", "data=reference", "n=4",
                           "solver=heun", "steps=4"], capsys)
    assert code == 0 and "bits/dim" in out, err
    student = tmp_path / "student"
    code, out, err = _cli(["distill", f"teacher={folder}", f"out={student}",
                           "trainer.max_steps=4", *TINY[:8]], capsys)
    assert code == 0, err
    payload = torch.load(student / "model.pt", weights_only=True)
    assert payload["model"]["name"] == "diffusers" and payload["consistency"]
    assert payload["distilled"]["teacher"] == str(folder.resolve())
    x = omnidiff.load(student / "model.pt", device="cpu").generate(4, seed=0)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
    assert _digests(folder) == before  # the folder is never written to


def _pipeline(schedule, prediction="v", cond=None):
    from omnidiff.core.conditions import NoCond
    cond = cond or NoCond()
    block = training_block({"name": "diffusers", "config": {
        "block_out_channels": [8, 16], "layers_per_block": 1, "norm_num_groups": 4,
        "down_block_types": ["DownBlock2D", "DownBlock2D"],
        "up_block_types": ["UpBlock2D", "UpBlock2D"]}}, (1, 8, 8), cond, schedule)
    spec = ModelSpec("image", block, schedule, (1, 8, 8), cond, prediction=prediction)
    return Pipeline(spec.build(spec.build_domain()), spec)


def test_export_mistakes_are_one_line(exported, tmp_path, capsys):
    run, folder = exported
    for pipe, words in [
            (_pipeline({"name": "cosine"}), "schedule=discrete"),
            (_pipeline({"name": "discrete"}, prediction="flow"), "prediction_type"),
            (Pipeline(*_own_image_model()), "model.name=diffusers")]:
        with pytest.raises(OmnidiffError) as info:
            export_diffusers(pipe, tmp_path / "never")
        assert words in str(info.value) and "\n" not in str(info.value)
        assert not (tmp_path / "never").exists()
    code, _, err = _cli(["export", f"checkpoint={run / 'model.pt'}", f"out={folder}"], capsys)
    assert code == 2 and "overwrite=true" in err and len(err.strip().splitlines()) == 1
    # a linear-schedule model exports too, and overwrite=true replaces a folder
    path = export_diffusers(_pipeline({"name": "linear", "beta_start": 1e-4, "beta_end": 0.02,
                                       "num_steps": 1000}), tmp_path / "lin")
    scaled = {"name": "discrete", "beta_schedule": "scaled_linear", "beta_start": 0.00085,
              "beta_end": 0.012}
    assert export_diffusers(_pipeline(scaled), path, overwrite=True) == path
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o777 & ~umask  # as a plain mkdir leaves it
    config = diffusers.DDIMScheduler.from_pretrained(path, subfolder="scheduler").config
    assert config["beta_schedule"] == "scaled_linear" and config["beta_end"] == 0.012


def _own_image_model():
    spec = ModelSpec("image", {"base_channels": 8, "channel_mult": [1], "num_res_blocks": 1,
                               "attn_resolutions": [], "norm_groups": 4,
                               "num_head_channels": 8},
                     {"name": "discrete"}, (1, 8, 8))
    return spec.build(spec.build_domain()), spec


def test_model_name_diffusers_mistakes(tmp_path, capsys):
    code, _, err = _cli(["train", "recipe=image_digits_diffusers", "model.class=VQModel",
                         f"out={tmp_path / 'no'}", *TINY], capsys)
    assert code == 2 and "VQModel" in err and "UNet2DModel" in err, err
    assert len(err.strip().splitlines()) == 1
    code, _, err = _cli(["train", "recipe=image_digits_diffusers", "model.config.sample_size=16",
                         f"out={tmp_path / 'no2'}", *TINY], capsys)
    assert code == 2 and "sample_size" in err, err


def test_a_diffusers_run_resumes(exported, tmp_path, capsys):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(exported[0], run)
    code, _, err = _cli(["train", "recipe=image_digits_diffusers", f"out={run}", "resume=auto",
                         "trainer.max_steps=24", "data.conditional=false", *TINY], capsys)
    assert code == 0, err
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 24
