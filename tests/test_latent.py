"""Latent diffusion: the autoencoder (shapes over 1D / 2D / 3D grids, its latent normalisation,
its training through `omnidiff train stage=autoencoder`), the latent domain (the contract,
generation returning data, artifacts, latent-space likelihoods) and one-line errors for a bad
autoencoder file."""

from __future__ import annotations

import json
import math

import pytest
import torch

from omnidiff.errors import CheckpointError, ConfigError
from omnidiff.methods.latent.autoencoder import Autoencoder, load_autoencoder
from omnidiff.methods.latent.losses import reconstruction_loss, stft_distance

AE_TINY = ["ae.channels=[8,16]", "ae.latent_channels=2", "ae.blocks=1"]
UNET_TINY = ["model.base_channels=16", "model.channel_mult=[1]", "model.num_res_blocks=1",
             "model.attn_resolutions=[]", "model.norm_groups=8", "model.num_head_channels=8"]
RUN = ["trainer.enable_progress_bar=false", "threads=1", "eval.n_samples=40", "eval.n_ref=80",
       "data.batch_size=32", "checkpoint.every_n_minutes=null"]


@pytest.mark.parametrize("shape,axis,channels,latent", [
    ((1, 64), 0, [4, 8, 8], (3, 16)),              # a signal
    ((1, 8, 8), 0, [4, 8], (3, 4, 4)),             # an image
    ((3, 4, 8, 8), 0, [4, 8], (3, 2, 4, 4)),       # a volume
    ((4, 2, 8, 8), 1, [4, 8], (2, 3, 4, 4)),       # a clip (T, C, H, W): channels second
])
def test_autoencoder_shapes_over_ranks(shape, axis, channels, latent):
    ae = Autoencoder(shape, channels=channels, latent_channels=3, kind="vae", channel_axis=axis)
    x = torch.randn(2, *shape)
    z = ae.encode(x)
    assert ae.latent_shape == latent and tuple(z.shape) == (2, *latent)
    assert tuple(ae.decode(z).shape) == (2, *shape)
    mean, logvar = ae.moments(x)
    assert mean.shape == logvar.shape == z.shape
    assert Autoencoder(shape, channels=channels, kind="ae", channel_axis=axis
                       ).moments(x)[1] is None


def test_clip_autoencoder_convolves_over_time_and_space_not_channels():
    """A (T, C, H, W) clip is C channels over a 3-D (T, H, W) grid, not T channels."""
    ae = Autoencoder((8, 3, 8, 8), channels=[4, 4], latent_channels=2, channel_axis=1)
    first, last = ae.encoder.net[0], ae.decoder.net[-1]
    assert isinstance(first, torch.nn.Conv3d) and first.in_channels == 3
    assert isinstance(last, torch.nn.Conv3d) and last.out_channels == 3
    x = torch.zeros(1, 8, 3, 8, 8)
    x[:, :, 1] = 1.0  # the green channel on, in every frame
    with torch.no_grad():
        assert ae.decode_raw(ae.moments(x)[0]).shape == x.shape


def test_autoencoder_refuses_sizes_that_do_not_divide():
    with pytest.raises(ConfigError, match="do not divide by the autoencoder's factor 4"):
        Autoencoder((1, 10, 10), channels=[4, 8, 8])


def test_latent_stats_make_unit_variance_latents():
    torch.manual_seed(0)
    ae = Autoencoder((1, 16), channels=[4, 4], kind="ae")
    data = 3.0 * torch.randn(256, 1, 16) + 2.0
    stats = ae.fit_latent_stats(data.split(64))
    with torch.no_grad():
        z = ae.encode(data)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1) < 1e-2
    assert stats["latent_scale"] == pytest.approx(float(ae.scale))
    # decode inverts the normalisation: decode(encode(x)) == decode_raw(mean(x))
    with torch.no_grad():
        torch.testing.assert_close(ae.decode(z), ae.decode_raw(ae.moments(data)[0]),
                                   atol=1e-4, rtol=1e-4)


def test_stft_distance_and_reconstruction_losses():
    t = torch.arange(512) / 8000
    a = torch.sin(2 * math.pi * 440 * t).view(1, 1, -1).repeat(2, 1, 1)
    b = torch.sin(2 * math.pi * 660 * t).view(1, 1, -1).repeat(2, 1, 1)
    assert stft_distance(a, a, [64, 128]).abs().max() < 1e-5
    far = stft_distance(b, a, [64, 128])
    assert far.shape == (2,) and bool((far > 1).all())
    x = b.clone().requires_grad_(True)
    reconstruction_loss("stft")(x, a).sum().backward()
    assert x.grad is not None and bool(torch.isfinite(x.grad).all())
    assert reconstruction_loss("l1")(a, a + 0.5).tolist() == pytest.approx([0.5, 0.5])
    with pytest.raises(ValueError, match="unknown ae.recon"):
        reconstruction_loss("ssim")


def test_diffwave_takes_multichannel_signals():
    from omnidiff.core.conditions import LabelCond
    from omnidiff_domains.audio.diffwave import build_diffwave

    net = build_diffwave((4, 40), LabelCond(3), layers=2, channels=8, cycle=2)
    out = net(torch.randn(2, 4, 40), torch.rand(2), torch.tensor([0, 2]))
    assert out.shape == (2, 4, 40)


# ---- through omnidiff train -----------------------------------------------------------------


def _train(overrides, recipe=None):
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.train import train

    return train(compose(recipe, overrides))


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    """A tiny digits autoencoder (8x8 -> 4x4x2), trained for 120 steps."""
    out = tmp_path_factory.mktemp("ae") / "run"
    run = _train(["domain=image", "stage=autoencoder", "data.name=digits", f"out={out}",
                  "trainer.max_steps=120", "optim.lr=3e-3", "optim.warmup=10", *AE_TINY, *RUN])
    return run


def test_autoencoder_run_lowers_the_loss_and_keeps_the_class(ae_run):
    summary = json.loads((ae_run / "metrics.json").read_text())
    assert summary["stage"] == "autoencoder"
    assert summary["loss_last"] < 0.5 * summary["loss_first"]
    final = summary["final"]
    # held-out reconstructions, scored by the digits classifier against their true labels
    assert final["class_acc"] >= 0.8 and final["psnr"] > 15
    assert (ae_run / "samples" / "reconstructions.png").is_file()
    assert (ae_run / "samples" / "originals.png").is_file()
    ae, payload = load_autoencoder(ae_run / "model.pt", domain="image")
    assert ae.data_shape == (1, 8, 8) and payload["latent_shape"] == [2, 4, 4]
    assert float(ae.scale) == pytest.approx(final["latent_scale"])


@pytest.fixture(scope="module")
def latent_run(ae_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("latent") / "run"
    return _train([f"autoencoder={ae_run / 'model.pt'}", f"out={out}", "trainer.max_steps=60",
                   "sampler.steps=4", *UNET_TINY, *RUN], recipe="image_digits")


def test_latent_model_generates_data_and_writes_the_base_artifacts(latent_run, tmp_path):
    import omnidiff

    summary = json.loads((latent_run / "metrics.json").read_text())
    assert {"class_acc", "fd"} <= set(summary["final"])  # the image domain's, on decoded samples
    pipe = omnidiff.load(latent_run / "model.pt", device="cpu")
    assert pipe.event_shape == (2, 4, 4) and pipe.sample_shape == (1, 8, 8)
    x = pipe.generate(6, steps=3, guidance=2.0, cond=[0, 1, 2, 3, 4, 5], seed=0)
    assert x.shape == (6, 1, 8, 8) and bool(torch.isfinite(x).all())
    files = pipe.save(x, tmp_path / "out")
    assert any(f.suffix == ".png" for f in files)
    assert set(pipe.metrics(x, n_ref=40)) >= {"class_acc", "fd"}
    # the same noise gives the same decoded samples; decoding is the autoencoder's
    z = omnidiff.samplers.generate_samples(pipe.model, 6, event_shape=pipe.event_shape,
                                           cond_spec=pipe.cond_spec, cond=[0, 1, 2, 3, 4, 5],
                                           steps=3, guidance=2.0, seed=0)[0]
    torch.testing.assert_close(pipe.domain.decode(z), x)
    ll = pipe.log_likelihood(pipe.reference(3)[0], solver="heun", steps=4)
    assert ll.space == "latent" and ll.bits_per_dim.shape == (3,)


def test_latent_model_resumes_and_loads_from_its_lightning_checkpoint(latent_run, ae_run,
                                                                       tmp_path):
    import shutil

    import omnidiff
    from omnidiff.model_file import read_checkpoint

    payload = read_checkpoint(latent_run / "checkpoints" / "last.ckpt")
    assert payload["autoencoder"]["data_shape"] == [1, 8, 8]
    pipe = omnidiff.load(latent_run / "checkpoints" / "last.ckpt", device="cpu")
    assert pipe.generate(2, steps=2, seed=0).shape == (2, 1, 8, 8)
    # a copy of the run continues from its last.ckpt to a later step
    run = tmp_path / "run"
    shutil.copytree(latent_run, run)
    _train([f"autoencoder={ae_run / 'model.pt'}", f"out={run}", "resume=auto",
            "trainer.max_steps=70", "sampler.steps=4", *UNET_TINY, *RUN], recipe="image_digits")
    assert json.loads((run / "metrics.json").read_text())["global_step"] == 70


def test_a_latent_teacher_distils_into_a_latent_student(latent_run, tmp_path):
    """CD of a guided latent digits model: the student runs on the same (embedded)
    autoencoder, samples data in two steps, and serves from its model.pt alone."""
    import omnidiff
    from omnidiff.tasks.distill import distill_config
    from omnidiff.tasks.train import train

    out = tmp_path / "student"
    cfg = distill_config([f"teacher={latent_run / 'model.pt'}", f"out={out}",
                          "trainer.max_steps=4", "distill.guidance=2.0", "distill.levels=6",
                          "distill.level_groups=2", "eval.n_samples=16", "eval.n_ref=16",
                          "trainer.enable_progress_bar=false", "threads=1"])
    train(cfg)
    payload = torch.load(out / "model.pt", weights_only=True)
    assert payload["autoencoder"]["data_shape"] == [1, 8, 8]
    assert payload["distilled"]["guidance"] == 2.0
    pipe = omnidiff.load(out / "model.pt", device="cpu")
    x = pipe.generate(4, cond=[1, 2, 3, 4], seed=0)
    assert pipe.last_sampler == "consistency" and x.shape == (4, 1, 8, 8)
    assert {"class_acc", "fd"} <= set(json.loads((out / "metrics.json").read_text())["final"])


def test_contract_on_the_latent_domain(ae_run, tmp_path):
    from omnidiff.methods.latent.domain import LatentDomain
    from omnidiff.plugins.check import check_domain
    from omnidiff.plugins.registry import get_domain

    ae, _ = load_autoencoder(ae_run / "model.pt")
    report = check_domain(LatentDomain(get_domain("image"), ae),
                          data={"batch_size": 8, "train_size": 64},
                          model={"base_channels": 16, "channel_mult": [1], "num_res_blocks": 1,
                                 "attn_resolutions": [], "norm_groups": 8,
                                 "num_head_channels": 8}, out_dir=tmp_path)
    assert report["event_shape"] == (2, 4, 4) and "class_acc" in report["metrics"]


def _fitted(ae, dm):
    """Fit the latent statistics of an untrained autoencoder on a few training batches."""
    ae.fit_latent_stats(b["x"] for _, b in zip(range(2), dm.train_dataloader()))
    return ae.eval().requires_grad_(False)


def test_streamed_latents_match_the_cached_ones(ae_run, monkeypatch):
    """Data too large to cache is encoded batch by batch: the same batches, the same order,
    resumable like the base loader."""
    import omnidiff.methods.latent.data as ld
    from omnidiff.methods.latent.domain import LatentDomain
    from omnidiff.plugins.data import prepare_data_module
    from omnidiff.plugins.registry import get_domain

    ae, _ = load_autoencoder(ae_run / "model.pt")
    domain = LatentDomain(get_domain("image"), ae)
    cached = prepare_data_module(domain.build_data(name="digits", batch_size=16))
    monkeypatch.setattr(ld, "CACHE_BYTES", 0)
    streamed = prepare_data_module(domain.build_data(name="digits", batch_size=16))
    a, b = cached.train_dataloader(), streamed.train_dataloader()
    assert isinstance(b, ld._EncodedLoader) and len(a) == len(b)
    for (ba, bb) in zip(a, b):
        assert ba["x"].shape == (16, 2, 4, 4)
        torch.testing.assert_close(ba["x"], bb["x"], atol=1e-5, rtol=1e-5)
        assert torch.equal(ba["cond"], bb["cond"])
        break
    assert b.state_dict() == b.loader.state_dict()


@pytest.mark.parametrize("name,data,model,channels", [
    ("audio", {"train_size": 24, "val_size": 12, "batch_size": 4, "clip_seconds": 0.05},
     {"layers": 3, "channels": 8, "cycle": 2}, [4, 8]),
    ("audio", {"name": "text_tones", "cond": "text", "train_size": 24, "batch_size": 4,
               "clip_seconds": 0.05},  # prompts on the latent path
     {"layers": 3, "channels": 8, "cycle": 2, "text_width": 16, "text_layers": 1,
      "text_heads": 2, "text_cross": 3, "text_rate": 5}, [4, 8]),
    ("video", {"train_size": 16, "val_size": 8, "batch_size": 4, "frames": 4, "size": 16,
               "digit_size": 8}, {"depth": 2, "width": 24, "heads": 2, "patch": [1, 4, 4]},
     [4, 8]),
])
def test_contract_on_latent_audio_and_video(name, data, model, channels, tmp_path):
    """Any registered domain runs on latents: 1D signals and (T, C, H, W) clips."""
    from omnidiff.methods.latent.domain import LatentDomain
    from omnidiff.plugins.check import check_domain, domain_defaults
    from omnidiff.plugins.data import prepare_data_module
    from omnidiff.plugins.registry import get_domain

    base = get_domain(name)
    dm = prepare_data_module(base.build_data(**{**domain_defaults(base)[0], **data}))
    ae = Autoencoder(dm.event_shape, channels=channels, latent_channels=2,
                     channel_axis=getattr(dm, "channel_axis", 0))
    report = check_domain(LatentDomain(base, _fitted(ae, dm)), data=data, model=model,
                          out_dir=tmp_path)
    assert report["event_shape"] == ae.latent_shape and report["files"]


# ---- a bad autoencoder file is one line ------------------------------------------------------


def _one_line(capsys, args):
    from omnidiff.cli.commands import main

    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("omnidiff: error:"), err
    return err[0]


def test_bad_autoencoder_files_fail_with_one_line(ae_run, latent_run, tmp_path, capsys):
    good = ae_run / "model.pt"
    payload = torch.load(good, weights_only=True)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    altered = tmp_path / "altered.pt"
    state = dict(payload["state_dict"])
    first = next(k for k, v in state.items() if v.is_floating_point() and v.dim() > 1)
    state[first] = state[first] + 1.0
    torch.save({**payload, "state_dict": state}, altered)
    audio = tmp_path / "audio_ae.pt"
    torch.save({**payload, "domain": "audio"}, audio)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:2000])
    base = ["train", "recipe=image_digits", f"out={tmp_path / 'never'}"]
    cases = {junk: "not a PyTorch file", truncated: "not an omnidiff checkpoint",
             altered: "do not match the checksum", audio: "of the 'audio' domain",
             latent_run / "model.pt": "a diffusion model's checkpoint",
             tmp_path / "missing.pt": "not found"}
    for path, words in cases.items():
        assert words in _one_line(capsys, [*base, f"autoencoder={path}"])
    # the right domain, the wrong data shape (this autoencoder encodes 8x8 digits)
    line = _one_line(capsys, [*base, f"autoencoder={good}", "data.image_size=16"])
    assert "(1, 8, 8)" in line and "(1, 16, 16)" in line
    # an autoencoder is not a diffusion model
    assert "is an autoencoder" in _one_line(capsys, ["sample", f"checkpoint={good}", "n=2"])
    # a latent model whose embedded autoencoder was edited
    latent = torch.load(latent_run / "model.pt", weights_only=True)
    emb = dict(latent["autoencoder"])
    emb["state_dict"] = {k: v + 1 if v.is_floating_point() else v
                         for k, v in emb["state_dict"].items()}
    edited = tmp_path / "edited_latent.pt"
    torch.save({**latent, "autoencoder": emb}, edited)
    line = _one_line(capsys, ["sample", f"checkpoint={edited}", "n=2", f"out={tmp_path / 'o'}"])
    assert "the checkpoint's autoencoder" in line and "checksum" in line
    assert not (tmp_path / "never").exists()


def test_stage_and_autoencoder_options_are_checked(capsys, tmp_path):
    from omnidiff.tasks.config import compose, validate

    with pytest.raises(ConfigError, match="trains a diffusion model on an autoencoder"):
        validate(compose("image_digits32_latent"))
    with pytest.raises(ConfigError, match="stage="):
        validate(compose("image_digits", ["stage=vae"]))
    with pytest.raises(ConfigError, match="pass one of them"):
        validate(compose("image_digits32_ae", ["autoencoder=x.pt"]))
    with pytest.raises(ConfigError, match="ae.kind"):
        validate(compose("image_digits32_ae", ["ae.kind=gan"]))
    line = _one_line(capsys, ["train", "recipe=image_digits32_ae", "ae.latent_channel=3"])
    assert "did you mean ae.latent_channels" in line
    with pytest.raises(CheckpointError):
        load_autoencoder(tmp_path / "none.pt")
