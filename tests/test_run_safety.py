"""Runs that never lose work: the default periodic checkpoint under SIGKILL, Ctrl-C and SIGTERM
with the default config (the real CLI in a subprocess), run-folder locks, finished runs that
stay finished, mismatched resumes, kept checkpoints and the weights checksum of model.pt."""

from __future__ import annotations

import csv
import hashlib
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from test_fault_tolerance import TINY, _cli, _env, _step

from omnidiff.cli.commands import main

DEFAULT = ["train", "recipe=points2d", "trainer.enable_progress_bar=false"]


def _logged_step(run: Path) -> int:
    """The newest training step in the run's CSV log (flushed at every logged step)."""
    path = run / "logs" / "metrics.csv"
    if not path.is_file():
        return -1
    with open(path, newline="") as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")]
    return max(steps, default=-1)


def _start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(_cli() + args, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=_env(), cwd=cwd)


def _wait_for_step(proc: subprocess.Popen, run: Path, step: int, timeout: float = 240) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        logged = _logged_step(run)
        if logged >= step:
            return logged
        time.sleep(0.02)
    out, err = proc.communicate(timeout=60) if proc.poll() is not None else ("", "")
    raise AssertionError(f"training never reached step {step}:\n{err[-3000:]}")


def _checksums(run: Path) -> dict[str, str]:
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file()}


def _weights(path: Path, part: str = "state_dict") -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)[part]


def _assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_sigkill_of_a_default_run_loses_at_most_the_interval_and_resumes_exactly(
        tmp_path, capsys, monkeypatch):
    """The default points2d run (2000 steps, last.ckpt every 1000), killed with SIGKILL at a
    step drawn at random past the first interval; meanwhile a second run into its folder is
    refused by the lock. resume=auto takes the dead run's lock over and ends bit for bit where
    an unbroken default run ends."""
    run = tmp_path / "run"
    kill_at = random.Random(14).randint(1005, 1900)
    proc = _start(DEFAULT + [f"out={run}"], tmp_path)
    try:
        _wait_for_step(proc, run, 50)
        monkeypatch.chdir(tmp_path)
        assert main(DEFAULT + [f"out={run}", "trainer.max_steps=5"]) == 2
        err = capsys.readouterr().err
        assert f"is in use by pid {proc.pid} on" in err and "wait for it" in err
        logged = _wait_for_step(proc, run, kill_at)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
    saved = _step(run / "checkpoints" / "last.ckpt")
    # the process died between logged and logged + log_every_n_steps (10): the periodic
    # checkpoint is the last multiple of the interval before that
    assert saved in {1000 * (logged // 1000), 1000 * ((logged + 10) // 1000)}
    assert logged - saved < 1000 + 10, (logged, saved)
    assert (run / ".omnidiff.lock").is_file()  # left by the killed process

    assert main(DEFAULT + [f"out={run}", "resume=auto"]) == 0
    out, err = capsys.readouterr()
    assert "no longer running; taking it over" in err and f"(step {saved})" in out
    assert not (run / ".omnidiff.lock").exists()
    assert main(DEFAULT + [f"out={tmp_path / 'straight'}"]) == 0
    a, b = (run / "checkpoints" / "last.ckpt", tmp_path / "straight" / "checkpoints" / "last.ckpt")
    assert _step(a) == _step(b) == 2000
    for part in ("state_dict", "current_model_state"):
        _assert_same(_weights(a, part), _weights(b, part))
    _assert_same(_weights(run / "model.pt"), _weights(tmp_path / "straight" / "model.pt"))


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_ctrl_c_and_sigterm_save_the_step_and_print_the_resume_command(sig, code, tmp_path):
    run = tmp_path / "run"
    proc = _start(DEFAULT + [f"out={run}"], tmp_path)
    try:
        _wait_for_step(proc, run, 30)
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-3000:]
    line = err.strip().splitlines()[-1]
    name = "SIGINT" if sig == signal.SIGINT else "SIGTERM"
    assert line.startswith(f"omnidiff: stopped by {name} after step "), line
    assert f"resume=auto out={run}" in line and "Traceback" not in err
    k = int(line.split("after step ")[1].split(";")[0])
    assert k >= 30 and _step(run / "checkpoints" / "last.ckpt") == k
    assert not (run / ".omnidiff.lock").exists()


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished TINY run with EMA."""
    run = tmp_path_factory.mktemp("finished") / "run"
    assert main(["train"] + TINY + [f"out={run}", "trainer.max_steps=12",
                                    "eval.n_samples=16"]) == 0
    return run


def test_a_finished_run_is_never_touched_by_rerun_resume_mismatch_or_a_locked_folder(
        finished, tmp_path, capsys):
    run = finished
    before = _checksums(run)
    args = ["train"] + TINY + [f"out={run}", "trainer.max_steps=12", "eval.n_samples=16"]

    assert main(args) == 2  # a new run into a finished run's folder
    assert "holds a finished run" in capsys.readouterr().err
    assert main(args + ["resume=auto"]) == 0  # resumes to nothing
    assert "is complete (step 12 of trainer.max_steps=12)" in capsys.readouterr().out
    assert main(args + ["resume=auto", "model.width=48"]) == 2  # another network
    err = capsys.readouterr().err
    assert "it was trained with model.width=32, this config has model.width=48" in err
    assert main(["train", "recipe=image_digits", f"resume={run}", f"out={run}"]) == 2
    assert "it trained domain 'points'" in capsys.readouterr().err
    assert main(args + ["resume=auto", "loss=eps"]) == 2  # another prediction target
    assert "loss.prediction='v'" in capsys.readouterr().err
    assert main(args + ["resume=auto", "trainer.max_steps=14", "model.depth=3"]) == 2
    assert "model.depth=2" in capsys.readouterr().err

    owner = subprocess.Popen(["sleep", "60"])  # a live process holding the folder's lock
    try:
        import json
        import socket
        (run / ".omnidiff.lock").write_text(json.dumps(
            {"pid": owner.pid, "host": socket.gethostname(), "started": "then"}))
        assert main(args + ["resume=auto", "trainer.max_steps=14"]) == 2
        assert f"in use by pid {owner.pid}" in capsys.readouterr().err
    finally:
        owner.kill()
        owner.wait()
        (run / ".omnidiff.lock").unlink()
    assert _checksums(run) == before


def test_a_finished_run_keeps_ema_weights_and_rebuilds_a_missing_model(finished, tmp_path,
                                                                         capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    ema = _weights(run / "model.pt")
    assert torch.load(run / "model.pt", weights_only=True)["ema"] is True
    last = run / "checkpoints" / "last.ckpt"
    _assert_same(ema, {k[len("model."):]: v for k, v in _weights(last).items()})
    raw = _weights(last, "current_model_state")
    assert any(not torch.equal(raw[f"model.{k}"], v) for k, v in ema.items())

    (run / "model.pt").unlink()
    args = ["train"] + TINY + [f"out={run}", "trainer.max_steps=12", "resume=auto"]
    assert main(args) == 0
    assert "rebuilt the missing" in capsys.readouterr().out
    rebuilt = torch.load(run / "model.pt", weights_only=True)
    assert rebuilt["ema"] is True
    _assert_same(rebuilt["state_dict"], ema)

    # continuing the finished run (a larger max_steps) trains on from the raw weights: it
    # ends bit for bit where a run of that length does
    more = ["train"] + TINY + ["trainer.max_steps=16", "eval.n_samples=16"]
    assert main(more + [f"out={run}", "resume=auto"]) == 0
    assert main(more + [f"out={tmp_path / 'straight'}"]) == 0
    for part in ("state_dict", "current_model_state"):
        _assert_same(_weights(last, part),
                     _weights(tmp_path / "straight" / "checkpoints" / "last.ckpt", part))


def test_overwrite_replaces_a_run_only_when_asked(finished, tmp_path, capsys):
    import shutil

    run = tmp_path / "copy"
    shutil.copytree(finished, run)
    (run / "notes.txt").write_text("mine")
    args = ["train"] + TINY + [f"out={run}", "trainer.max_steps=6", "eval.n_samples=16"]
    assert main(args + ["overwrite=true"]) == 0
    assert "removed the earlier run's" in capsys.readouterr().out
    assert _step(run / "checkpoints" / "last.ckpt") == 6
    assert (run / "notes.txt").read_text() == "mine"  # not ours: left alone
    assert main(args + ["overwrite=true", "resume=auto"]) == 2
    assert "pass one of them" in capsys.readouterr().err


def test_a_run_finished_by_max_epochs_is_complete_too(tmp_path, capsys):
    run = tmp_path / "epochs"
    args = ["train"] + TINY + [f"out={run}", "trainer.max_steps=-1", "trainer.max_epochs=1",
                               "eval.n_samples=16"]
    assert main(args) == 0
    before = _checksums(run)
    assert main(args + ["resume=auto"]) == 0
    assert "is complete (epoch 1 of trainer.max_epochs=1, step 32)" in capsys.readouterr().out
    assert _checksums(run) == before


def test_a_failure_before_training_leaves_no_run_folder(tmp_path, capsys):
    run = tmp_path / "run"
    for bad in ("data.name=nope", "model.name=nope", "checkpoint.keep=-5",
                "checkpoint.every_n_minutes=abc"):
        assert main(["train"] + TINY + [f"out={run}", bad]) == 2, bad
        err = capsys.readouterr().err
        assert err.startswith("omnidiff: error:") and "Traceback" not in err, err
        assert not run.exists(), bad


def test_periodic_checkpoints_by_steps_or_minutes_keep_the_newest(tmp_path, capsys):
    run = tmp_path / "steps"
    assert main(["train"] + TINY + [f"out={run}", "trainer.max_steps=30", "eval.n_samples=16",
                                    "checkpoint.every_n_train_steps=5", "checkpoint.keep=2",
                                    "checkpoint.every_n_minutes=null"]) == 0
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["last.ckpt", "step=25.ckpt", "step=30.ckpt"], names
    assert _step(run / "checkpoints" / "step=25.ckpt") == 25

    run = tmp_path / "minutes"  # by wall-clock only: a save every 50 ms of training
    assert main(["train"] + TINY + [f"out={run}", "trainer.max_steps=40", "eval.n_samples=16",
                                    "checkpoint.every_n_train_steps=null", "checkpoint.keep=-1",
                                    "checkpoint.every_n_minutes=0.0008"]) == 0
    steps = sorted(_step(p) for p in (run / "checkpoints").glob("step=*.ckpt"))
    assert len(steps) >= 3 and steps[-1] <= 40, steps


def _flip_one_bit_in_a_weight(path: Path) -> None:
    state = _weights(path)
    name, value = max(state.items(), key=lambda kv: kv[1].numel())
    raw = bytearray(path.read_bytes())
    at = bytes(raw).find(value.contiguous().numpy().tobytes())
    assert at >= 0, "the weight's bytes are stored as they are"
    raw[at + value.numel() * value.element_size() // 2] ^= 0x04
    path.write_bytes(bytes(raw))


def test_a_flipped_bit_in_model_pt_is_caught_on_load(finished, tmp_path, capsys):
    import shutil

    import omnidiff
    from omnidiff.errors import CheckpointError

    path = tmp_path / "model.pt"
    shutil.copy(finished / "model.pt", path)
    assert omnidiff.load(path).generate(2, steps=2, seed=0).shape == (2, 2)
    _flip_one_bit_in_a_weight(path)
    with pytest.raises(CheckpointError, match="do not match the checksum"):
        omnidiff.load(path)
    assert main(["sample", f"checkpoint={path}", "n=2", f"out={tmp_path / 's'}"]) == 2
    err = capsys.readouterr().err
    assert "do not match the checksum" in err and len(err.strip().splitlines()) == 1
