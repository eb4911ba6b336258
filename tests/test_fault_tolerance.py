"""Training that survives faults: SIGKILL + resume, atomic files, weights_only checkpoints,
NaN losses, bit-for-bit reproducibility, and scale-out (DDP on CPU, FSDP without EMA)."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from omnidiff.cli.commands import main

# a small, fast points run (the CLI's overrides)
TINY = ["recipe=points2d", "threads=1", "data.train_size=2048", "data.batch_size=64",
        "model.width=32", "model.depth=2", "eval.n_samples=64", "eval.n_ref=64",
        "trainer.enable_progress_bar=false", "optim.warmup=10"]


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("omnidiff")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "omnidiff.cli"]


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env.pop("OMNIDIFF_RUN_DIR", None)
    return env


def _step(ckpt: Path) -> int:
    return int(torch.load(ckpt, map_location="cpu", weights_only=True)["global_step"])


def _check_files_parse(run: Path) -> int:
    """Every checkpoint, model, image, array and JSON in ``run`` loads (temporaries aside)."""
    import numpy as np
    from PIL import Image

    count = 0
    for p in sorted(run.rglob("*")):
        if not p.is_file() or p.name.startswith("."):  # ".name.XXXX.tmp": an unfinished write
            continue
        if p.suffix in (".ckpt", ".pt"):
            torch.load(p, map_location="cpu", weights_only=True)
        elif p.suffix == ".png":
            with Image.open(p) as im:
                im.verify()
        elif p.suffix == ".npy":
            np.load(p)
        elif p.suffix == ".json":
            json.loads(p.read_text())
        else:
            continue
        count += 1
    return count


def kill_after_checkpoint(args: list[str], last: Path, step: int, cwd: Path) -> int:
    """Run ``omnidiff train ARGS trainer.max_steps=100000`` in a subprocess and SIGKILL it once
    ``last`` (its last.ckpt) holds a step >= ``step``; returns that checkpoint's step."""
    proc = subprocess.Popen(_cli() + ["train"] + args + ["trainer.max_steps=100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), cwd=cwd)
    deadline = time.monotonic() + 150
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            if last.is_file() and _step(last) >= step:
                break
            time.sleep(0.2)
        assert proc.poll() is None, f"training ended early:\n{proc.stdout.read()[-3000:]}"
        assert last.is_file() and _step(last) >= step, f"no checkpoint at step >= {step} in time"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    return _step(last)


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "logs" / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def test_sigkill_then_resume_continues_step_optimizer_and_log(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    args = TINY + [f"out={run}", "checkpoint.every_n_train_steps=10", "eval.every_n_steps=10",
                   "trainer.log_every_n_steps=5"]
    last = run / "checkpoints" / "last.ckpt"
    kill_after_checkpoint(args, last, 30, tmp_path)

    # nothing half-written: every file of the killed run parses
    assert _check_files_parse(run) >= 3
    k = _step(last)
    before = _csv_rows(run)
    assert before and max(int(r["step"]) for r in before if r.get("train/loss")) >= k - 5

    target = k + 20
    monkeypatch.chdir(tmp_path)  # the resumed run: in this process (saves a second start-up)
    monkeypatch.delenv("OMNIDIFF_RUN_DIR", raising=False)
    code = main(["train"] + args + [f"trainer.max_steps={target}", "resume=auto"])
    out, err = capsys.readouterr()
    assert code == 0, err[-3000:]
    assert f"resuming {run}" in out and f"(step {k})" in out

    summary = json.loads((run / "metrics.json").read_text())
    assert summary["global_step"] == target
    ck = torch.load(last, map_location="cpu", weights_only=True)
    assert ck["global_step"] == target
    # the optimizer continued (Adam's step count), EMA state is there
    adam_steps = {float(s["step"]) for s in ck["optimizer_states"][0]["state"].values()}
    assert adam_steps == {float(target)}
    assert "current_model_state" in ck and "averaging_state" in ck
    assert ck["callbacks"]  # ModelCheckpoint / EMA states
    model = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
    assert model["global_step"] == target and model["ema"] is True

    # the loss curve continues: rows before the checkpoint kept, then the resumed run's rows,
    # each training step logged once, in order
    loss_steps = [int(r["step"]) for r in _csv_rows(run) if r.get("train/loss")]
    assert loss_steps == sorted(set(loss_steps)), loss_steps
    assert min(loss_steps) < k < max(loss_steps) and max(loss_steps) >= target - 5
    assert _check_files_parse(run) >= 5

    import omnidiff
    x = omnidiff.load(last).generate(8, steps=4, seed=0)
    assert x.shape == (8, 2) and torch.isfinite(x).all()

    # exact continuation: the same run without the kill ends bit for bit where the resumed one
    # does (same batches in the same order, optimizer moments, EMA, RNG; TINY's 32 batches per
    # epoch make the resumed stretch cross an epoch boundary)
    straight = tmp_path / "straight"
    same = [a for a in args if not a.startswith("out=")]
    assert main(["train"] + same + [f"out={straight}", f"trainer.max_steps={target}"]) == 0
    ref = torch.load(straight / "checkpoints" / "last.ckpt", map_location="cpu",
                     weights_only=True)
    assert ref["global_step"] == target
    loader = ck["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == ref["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader[0]["batches"] == target % 32 and loader[0]["epoch"] == target // 32
    for part in ("state_dict", "current_model_state"):
        for key, value in ref[part].items():
            assert torch.equal(value, ck[part][key]), (part, key)


def test_sigterm_saves_the_running_step_and_resume_is_exact(tmp_path, capsys, monkeypatch):
    """SIGTERM (preemption): the step in flight finishes, last.ckpt is written for exactly that
    step (no periodic checkpoint here), the exit code is 143 with a one-line message, and the
    resumed run ends bit for bit where an unbroken one does."""
    run = tmp_path / "run"
    args = TINY + ["checkpoint.every_n_train_steps=100000", "eval.every_n_steps=0"]
    proc = subprocess.Popen(_cli() + ["train"] + args + [f"out={run}", "trainer.max_steps=100000",
                                                         "trainer.log_every_n_steps=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(), cwd=tmp_path)
    log = run / "logs" / "metrics.csv"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and proc.poll() is None:
        if log.is_file() and len(log.read_text().splitlines()) > 20:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    line = err.strip().splitlines()[-1]
    assert line.startswith("omnidiff: stopped by SIGTERM after step ") and "resume=auto" in line
    k = int(line.split("after step ")[1].split(";")[0])
    assert k >= 20 and _step(run / "checkpoints" / "last.ckpt") == k, (k, err[-2000:])
    assert "Traceback" not in err

    target = k + 12
    monkeypatch.chdir(tmp_path)
    assert main(["train"] + args + [f"out={run}", f"trainer.max_steps={target}",
                                    "resume=auto"]) == 0
    assert main(["train"] + args + [f"out={tmp_path / 'straight'}",
                                    f"trainer.max_steps={target}"]) == 0
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)
            for r in (run, tmp_path / "straight"))
    assert a["global_step"] == b["global_step"] == target
    for part in ("state_dict", "current_model_state"):
        assert all(torch.equal(v, a[part][key]) for key, v in b[part].items()), part


@pytest.mark.parametrize("hook, step", [("on_train_batch_end", 20),
                                        ("on_validation_batch_start", 32),
                                        # after the epoch's end: Lightning raises SIGTERM
                                        # with that epoch counted complete
                                        ("on_validation_epoch_end", 32),
                                        ("on_validation_end", 32),
                                        ("on_train_epoch_end", 32)])
def test_sigterm_mid_step_or_mid_validation_resumes_exactly(hook, step, tmp_path, capsys,
                                                             monkeypatch):
    """A real SIGTERM delivered at a chosen point: after a training batch, while the
    epoch-end validation runs with the EMA weights swapped in, or after the epoch has ended.
    Every way the resumed run ends bit for bit where the unbroken one does."""
    import lightning.pytorch as pl

    from omnidiff.tasks import train as training

    class Kill(pl.Callback):
        def __init__(self):
            self.sent = False

        def fire(self, trainer, *args):
            if not self.sent and trainer.global_step == step:
                self.sent = True
                os.kill(os.getpid(), signal.SIGTERM)

    setattr(Kill, hook, Kill.fire)
    build = training.build_callbacks
    monkeypatch.setattr(training, "build_callbacks",
                        lambda cfg, run_dir: build(cfg, run_dir) + (
                            [Kill()] if run_dir.name == "killed" else []))
    args = TINY + ["checkpoint.every_n_train_steps=100000", "eval.every_n_steps=0"]
    run = tmp_path / "killed"
    assert main(["train"] + args + [f"out={run}", "trainer.max_steps=100"]) == 143
    assert f"stopped by SIGTERM after step {step};" in capsys.readouterr().err
    monkeypatch.setattr(training, "build_callbacks", build)
    assert main(["train"] + args + [f"out={run}", "trainer.max_steps=44", "resume=auto"]) == 0
    assert main(["train"] + args + [f"out={tmp_path / 'straight'}", "trainer.max_steps=44"]) == 0
    a, b = (torch.load(r / "checkpoints" / "last.ckpt", weights_only=True)
            for r in (run, tmp_path / "straight"))
    assert a["global_step"] == b["global_step"] == 44
    for part in ("state_dict", "current_model_state"):
        assert all(torch.equal(v, a[part][key]) for key, v in b[part].items()), part


def test_resume_after_an_epochs_last_batch_is_exact(tmp_path, capsys):
    """Stopped right after batch 32 of 32: the resumed run starts the next epoch's order, as
    the unbroken run does (Lightning moves the epoch on by itself in this case)."""
    args = TINY + ["checkpoint.every_n_train_steps=32", "eval.every_n_steps=100"]
    assert main(["train"] + args + [f"out={tmp_path / 'a'}", "trainer.max_steps=32"]) == 0
    assert main(["train"] + args + [f"out={tmp_path / 'a'}", "trainer.max_steps=40",
                                    "resume=auto"]) == 0
    assert main(["train"] + args + [f"out={tmp_path / 'b'}", "trainer.max_steps=40"]) == 0
    a, b = (torch.load(tmp_path / r / "model.pt", weights_only=True)["state_dict"] for r in "ab")
    assert all(torch.equal(a[k], b[k]) for k in b)


def test_nan_loss_stops_with_step_and_last_checkpoint(tmp_path, capsys):
    run = tmp_path / "nan"
    code = main(["train"] + TINY + [f"out={run}", "optim.lr=1e30", "optim.warmup=0",
                                    "checkpoint.every_n_train_steps=1", "trainer.max_steps=50"])
    err = capsys.readouterr().err
    assert code == 2
    line = [ln for ln in err.splitlines() if ln.startswith("omnidiff: error:")][0]
    assert "loss became" in line and "at step" in line and "last good checkpoint" in line
    assert "Traceback" not in err
    ckpt = Path(line.split("last good checkpoint: ")[1].split(" ")[0])
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert not (run / "model.pt").exists()  # no NaN weights exported


def test_seeded_cpu_run_is_bit_for_bit_reproducible(tmp_path, capsys):
    states = []
    for i in range(2):
        run = tmp_path / f"r{i}"
        assert main(["train"] + TINY + [f"out={run}", "seed=123", "trainer.max_steps=15",
                                        "eval.n_samples=16"]) == 0
        obj = torch.load(run / "model.pt", map_location="cpu", weights_only=True)
        states.append(obj["state_dict"])
    assert states[0].keys() == states[1].keys()
    for key in states[0]:
        assert torch.equal(states[0][key], states[1][key]), key
    # and a different seed trains different weights
    assert main(["train"] + TINY + [f"out={tmp_path / 'other'}", "seed=7", "trainer.max_steps=15",
                                    "eval.n_samples=16"]) == 0
    other = torch.load(tmp_path / "other" / "model.pt", weights_only=True)["state_dict"]
    assert any(not torch.equal(other[k], states[0][k]) for k in other)


def test_resume_errors_are_one_line(tmp_path, capsys):
    code = main(["train"] + TINY + [f"resume={tmp_path / 'nothing'}", "trainer.max_steps=2"])
    err = capsys.readouterr().err
    assert code == 2 and "no checkpoint found" in err and "resume=auto" in err


def test_fsdp_disables_ema_with_a_warning(tmp_path):
    from omnidiff.tasks.config import compose, validate
    from omnidiff.tasks.train import build_callbacks
    from omnidiff.training.callbacks import EMA, FiniteLossGuard

    cfg = compose("points2d", ["trainer.strategy=fsdp", "trainer.devices=2",
                               "trainer.num_nodes=2", "trainer.precision=bf16-mixed"])
    validate(cfg)
    assert (cfg.trainer.strategy, cfg.trainer.devices, cfg.trainer.num_nodes) == ("fsdp", 2, 2)
    with pytest.warns(UserWarning, match="EMA is disabled.*FSDP"):
        cbs = build_callbacks(cfg, tmp_path)
    assert not any(isinstance(c, EMA) for c in cbs)
    assert any(isinstance(c, FiniteLossGuard) for c in cbs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ddp = build_callbacks(compose("points2d", ["trainer.strategy=ddp"]), tmp_path)
    assert any(isinstance(c, EMA) for c in ddp)


def test_ddp_two_cpu_processes_agree(tmp_path):
    run = tmp_path / "ddp"
    r = subprocess.run(
        _cli() + ["train"] + TINY + [f"out={run}", "trainer.accelerator=cpu", "trainer.devices=2",
                                     "trainer.strategy=ddp", "trainer.max_steps=12",
                                     "eval.n_samples=16"],
        capture_output=True, text=True, env=_env(), cwd=tmp_path, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    ranks = [json.loads((run / "ranks" / f"rank{k}.json").read_text()) for k in (0, 1)]
    assert [d["world_size"] for d in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == 12
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    # ... from different data: each rank reads its own shard of the epoch
    assert ranks[0]["first_batch_sha256"] != ranks[1]["first_batch_sha256"]
    # the checkpoints load (weights_only) and generate
    import omnidiff
    for path in (run / "checkpoints" / "last.ckpt", run / "model.pt"):
        torch.load(path, map_location="cpu", weights_only=True)
        assert omnidiff.load(path).generate(4, steps=3, seed=0).shape == (4, 2)
    assert not list(tmp_path.glob("runs"))  # rank 1 did not start a run folder of its own
