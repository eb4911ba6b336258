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


@pytest.mark.parametrize("sampler", sorted(set(SAMPLERS) - {"rk45", "consistency"}))
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
