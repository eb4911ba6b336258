"""What a new user meets in their first hour: files others can read, a quiet console, threads,
class names as conditions, a step callback, ``omnidiff info``."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from omnidiff.io import atomic_save_npy, atomic_torch_save, atomic_write_json, atomic_write_text


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_keep_the_permissions_a_plain_write_would_have(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        files = [atomic_write_text("x", tmp_path / "a.txt"),
                 atomic_write_json({"a": 1}, tmp_path / "b.json"),
                 atomic_torch_save({"w": torch.ones(2)}, tmp_path / "c.pt"),
                 atomic_save_npy(torch.ones(3), tmp_path / "d.npy")]
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f


def test_an_atomic_rewrite_keeps_the_files_own_mode(tmp_path):
    f = atomic_write_text("one", tmp_path / "a.txt")
    f.chmod(0o640)
    atomic_write_text("two", f)
    assert f.read_text() == "two" and stat.S_IMODE(f.stat().st_mode) == 0o640


# ---- the step callback ---------------------------------------------------------------------

from omnidiff.samplers import SAMPLERS, sample  # noqa: E402
from omnidiff.samplers.watch import SamplingStep  # noqa: E402

_POINT = torch.tensor([0.5, -1.0])  # data at one point: the exact x0 estimate is the point


def _point_eps(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    from omnidiff.core.schedules import get_schedule

    a, s = get_schedule("cosine").alpha_sigma(t.double())
    return ((x_t.double() - a[:, None] * _POINT.double()) / s[:, None]).to(x_t.dtype)


@pytest.mark.parametrize("sampler", sorted(SAMPLERS))
def test_the_step_callback_sees_every_step_of_a_10_step_sampler(sampler):
    seen: list[SamplingStep] = []
    x = sample(_point_eps, torch.randn(3, 2, generator=torch.Generator().manual_seed(0)),
               schedule="cosine", prediction="eps", sampler=sampler, steps=10,
               generator=torch.Generator().manual_seed(1), callback=seen.append)
    assert [s.step for s in seen] == list(range(1, 11))
    assert all(s.steps == 10 for s in seen)
    times = [s.t for s in seen]
    assert all(a > b for a, b in zip(times, times[1:])) and times[-1] == 0.0
    for s in seen:  # the exact denoiser's estimate is the data point at every step
        torch.testing.assert_close(s.x0.float(), _POINT.expand(3, 2), atol=1e-4, rtol=0)
    assert seen[-1].x0 is x or torch.equal(seen[-1].x0.to(x.dtype), x)


def test_a_callback_that_raises_stops_sampling():
    calls = []

    def stop_at_3(info):
        calls.append(info.step)
        if info.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sample(_point_eps, torch.randn(2, 2), schedule="cosine", prediction="eps",
               sampler="heun", steps=10, callback=stop_at_3)
    assert calls == [1, 2, 3]


# ---- a new user's first run, as a subprocess -----------------------------------------------

import json  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402


def _png_classes(root: Path, per_class: int = 24) -> None:
    """Two class folders of 8x8 PNGs (scikit-learn's zeros and ones), as a user's own data."""
    import numpy as np
    from PIL import Image
    from sklearn.datasets import load_digits

    d = load_digits()
    for label, name in ((0, "circle"), (1, "stroke")):
        folder = root / name
        folder.mkdir(parents=True)
        for i, im in enumerate(d.images[d.target == label][:per_class]):
            Image.fromarray((im / 16 * 255).astype(np.uint8)).save(folder / f"{i:03d}.png")


def _omnidiff(*args: str) -> subprocess.CompletedProcess:
    """The command as a user runs it (umask 022), its output as written (a progress bar's
    carriage returns kept: text mode would turn them into newlines)."""
    done = subprocess.run([sys.executable, "-m", "omnidiff.cli", *args], capture_output=True,
                          timeout=600, preexec_fn=lambda: os.umask(0o022),
                          env={**os.environ, "OMNIDIFF_DEBUG": ""})
    done.stdout, done.stderr = done.stdout.decode(), done.stderr.decode()
    return done


def test_a_new_user_trains_on_a_folder_of_pngs_and_samples_a_class_by_name(tmp_path):
    _png_classes(tmp_path / "pngs")
    run = tmp_path / "run"
    train = _omnidiff("train", "recipe=image_digits", "data.name=folder",
                      f"data.root={tmp_path / 'pngs'}", "trainer.max_steps=12",
                      "model.base_channels=16", "model.norm_groups=8", "model.num_res_blocks=1",
                      "eval.n_samples=8", "sampler.steps=4", f"out={run}", "threads=1")
    assert train.returncode == 0, train.stderr[-2000:]
    console = train.stdout + train.stderr
    for noise in ("litlogger", "TPU available", "GPU available", "deprecated", "Epoch ",
                  "logging interval", "Trainer.fit"):
        assert noise not in console, (noise, console[-3000:])
    bars = [line for line in train.stdout.split("\n") if "train:" in line]
    assert len(bars) == 1 and "12/12" in bars[0], train.stdout  # one bar for the whole run
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["train_seconds"] > 0 and summary["eval_seconds"] > 0
    assert f"time: training {summary['train_seconds']:.1f} s (" in train.stdout
    assert 0 < summary["step_seconds"] < summary["train_seconds"]

    out = tmp_path / "samples"
    made = _omnidiff("sample", f"checkpoint={run / 'model.pt'}", "cond=stroke", "n=4",
                     "steps=4", "threads=1", f"out={out}")
    assert made.returncode == 0, made.stderr[-2000:]
    labels = torch.load(out / "samples.pt", weights_only=True)["cond"]
    assert labels.tolist() == [1, 1, 1, 1]  # "stroke" is the second class folder
    wrong = _omnidiff("sample", f"checkpoint={run / 'model.pt'}", "cond=square", "n=2")
    assert wrong.returncode == 2 and "circle, stroke" in wrong.stderr

    files = [p for p in [*run.rglob("*"), *out.rglob("*")] if p.is_file()]
    assert {p.suffix for p in files} >= {".pt", ".json", ".png", ".yaml", ".ckpt", ".npy"}
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in files}
    assert set(modes.values()) == {"0o644"}, modes


# ---- omnidiff info on every domain, the schedule plot ----------------------------------------

from omnidiff.cli.commands import main  # noqa: E402

QUIET = ["trainer.max_steps=3", "trainer.enable_progress_bar=false", "threads=1",
         "eval.n_samples=4", "eval.n_ref=8", "sampler.steps=2"]
EVERY_DOMAIN = {
    "points": ["recipe=points2d", "data.train_size=256", "data.val_size=32", "model.width=32",
               "model.depth=1"],
    "image": ["recipe=image_digits", "model.base_channels=16", "model.channel_mult=[1]",
              "model.num_res_blocks=1", "model.norm_groups=8", "model.num_head_channels=8"],
    "audio": ["recipe=audio_tones", "data.train_size=32", "data.val_size=8",
              "data.batch_size=8", "model.layers=2", "model.channels=8", "model.cycle=2"],
    "video": ["recipe=video_moving_digits", "data.train_size=16", "data.val_size=8",
              "data.batch_size=4", "data.frames=4", "data.size=16", "data.digit_size=8",
              "model.depth=2", "model.width=24", "model.heads=2"],
}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("domains")
    for domain, args in EVERY_DOMAIN.items():
        assert main(["train", *args, *QUIET, f"out={root / domain}"]) == 0
    return root


@pytest.mark.parametrize("domain,shape,classes", [
    ("points", "2", None), ("image", "1 x 8 x 8", "0, 1, 2"),
    ("audio", "1 x 2000", "C4, C#4, D4"), ("video", "4 x 1 x 16 x 16", "0, 1, 2")])
def test_info_says_what_a_model_of_every_domain_is(models, capsys, domain, shape, classes):
    ckpt = models / domain / "model.pt"
    assert main(["info", f"checkpoint={ckpt}"]) == 0
    out = capsys.readouterr().out
    rows = dict(line.strip().split(None, 1) for line in out.splitlines()[1:])
    assert rows["domain"] == domain and rows["samples"] == shape
    assert rows["trained"].startswith("3 steps")
    assert rows["sampler"].startswith("dpmpp_2m, 20 steps on the ")
    assert "M parameters" in rows["network"] and "log-SNR" in rows["schedule"]
    assert rows["prediction"] in ("eps", "v", "x0", "flow")
    if classes is None:
        assert "classes" not in rows
    else:
        assert rows["classes"].startswith(classes)


def test_the_schedule_plot_marks_the_times_the_sampler_steps_through(models, tmp_path):
    from omnidiff.inference.describe import schedule_figure

    pipe = omnidiff.load(models / "image" / "model.pt", threads=1)
    fig = schedule_figure(pipe, "ddim", 7)
    alpha_sigma, lam = fig.axes
    curve, dots = lam.lines[:2]
    ts, label = pipe.sampling_times("ddim", 7)
    assert len(dots.get_xdata()) == 7 and label == "logsnr"
    torch.testing.assert_close(torch.as_tensor(dots.get_ydata()),
                               pipe.model.schedule.log_snr(ts[:-1]))
    lam_curve = torch.as_tensor(curve.get_ydata())
    assert (lam_curve[1:] < lam_curve[:-1]).all()  # log-SNR falls with t
    assert [ln.get_label() for ln in alpha_sigma.lines] == ["alpha(t)", "sigma(t)"]
    png = tmp_path / "schedule.png"
    assert main(["info", f"checkpoint={models / 'image' / 'model.pt'}", f"plot={png}",
                 "sampler=heun", "steps=5"]) == 0
    from PIL import Image
    with Image.open(png) as im:
        assert im.size[0] > 800 and im.size[1] > 300


import omnidiff  # noqa: E402


def test_generate_takes_a_callback_and_class_names(models):
    pipe = omnidiff.load(models / "audio" / "model.pt", threads=1)
    seen = []
    x = pipe.generate(3, cond="A4", steps=10, seed=0, callback=seen.append)
    assert [s.step for s in seen] == list(range(1, 11)) and x.shape == (3, 1, 2000)
    assert pipe.last_cond.tolist() == [9, 9, 9]  # A4 is the tenth semitone from C4
    torch.testing.assert_close(seen[-1].x0.float().cpu(), x)
    with pytest.raises(Exception, match="C4, C#4"):
        pipe.generate(2, cond="H4", steps=2)


def test_metrics_of_one_class_compare_with_that_class(models):
    pipe = omnidiff.load(models / "image" / "model.pt", threads=1)
    x = pipe.generate(6, cond=3, steps=2, seed=0)
    mixed, _ = pipe.reference(60)
    ref, ref_cond = pipe.reference(360)
    own = ref[ref_cond == 3]
    from omnidiff_domains.image.metrics import image_metrics

    got = pipe.metrics(x, n_ref=360)
    want = image_metrics(x, own, cond=torch.full((6,), 3), ref_cond=torch.full((len(own),), 3))
    assert got["fd"] == pytest.approx(float(want["fd"]))
    assert got["fd"] != pytest.approx(float(image_metrics(x, ref, cond=torch.full((6,), 3),
                                                          ref_cond=ref_cond)["fd"]))


# ---- fine-tuning from a model, fast_dev_run, recipes -----------------------------------------

def test_init_loads_what_fits_and_names_the_rest(models, tmp_path, capsys):
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.train import build_module

    _png_classes(tmp_path / "pngs")
    base = models / "image" / "model.pt"
    cfg = compose("image_digits", [*EVERY_DOMAIN["image"][1:], "data.name=folder",
                                   f"data.root={tmp_path / 'pngs'}", f"init={base}"])
    _, module = build_module(cfg)
    line = capsys.readouterr().out
    theirs = torch.load(base, weights_only=True)["state_dict"]
    ours = module.model.state_dict()
    differ = [k for k in ours if k in theirs and ours[k].shape != theirs[k].shape]
    assert differ and all("emb" in k for k in differ)  # 10 digit classes -> 2 folders
    same = [k for k in ours if k in theirs and ours[k].shape == theirs[k].shape]
    assert all(torch.equal(ours[k], theirs[k]) for k in same)
    assert f"loaded {len(same)} of the network's {len(ours)} tensors" in line
    assert "shape differs: " + differ[0] in line and line.count("\n") == 1
    from omnidiff.tasks.config import validate

    with pytest.raises(Exception, match="init=/nowhere/model.pt: no such file"):
        validate(compose("image_digits", ["init=/nowhere/model.pt"]))
    with pytest.raises(Exception, match="pass one of them"):
        validate(compose("image_digits", [f"init={base}", "resume=auto"]))


def test_fast_dev_run_leaves_no_run_behind(tmp_path, capsys):
    out = tmp_path / "dev"
    assert main(["train", *EVERY_DOMAIN["points"], *QUIET, f"out={out}",
                 "+trainer.fast_dev_run=true"]) == 0
    assert not out.exists() and "nothing was kept" in capsys.readouterr().out


def test_recipes_lists_whole_sentences_and_shows_one_recipe(capsys):
    from omnidiff.tasks.config import list_recipes

    assert main(["recipes"]) == 0
    listing = capsys.readouterr().out.split("\n\n")[0]
    entries: dict[str, str] = {}
    for line in listing.splitlines():  # a name, then its description over as many lines
        name, _, text = line.partition("  ")
        if name.strip():
            entries[name.strip()] = text.strip()
        else:
            entries[list(entries)[-1]] += " " + text.strip()
    assert set(entries) == set(list_recipes())
    for name, text in entries.items():  # whole sentences, not cut mid-phrase
        assert text.endswith((".", ".)")), (name, text)
    assert main(["recipes", "image_digits"]) == 0
    shown = capsys.readouterr().out
    assert "settings (change any with key=value" in shown
    assert "data:\n  name: digits" in shown and "max_steps: 1500" in shown
    assert main(["recipes", "nope"]) == 2


def test_quiet_lightning_silences_its_chatter_unless_verbose():
    import logging
    import warnings

    from omnidiff.training.console import quiet_lightning

    log = logging.getLogger("lightning.pytorch")
    level, filters = log.level, list(warnings.filters)
    try:
        log.setLevel(logging.INFO)
        quiet_lightning(verbose=True)
        assert log.getEffectiveLevel() == logging.INFO
        quiet_lightning()
        assert log.getEffectiveLevel() == logging.WARNING
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("default")
            quiet_lightning()
            warnings.warn("`isinstance(treespec, LeafSpec)` is deprecated, use ...")
            warnings.warn("a warning about the user's own run")
        assert [str(w.message) for w in caught] == ["a warning about the user's own run"]
    finally:
        log.setLevel(level)
        warnings.filters[:] = filters
