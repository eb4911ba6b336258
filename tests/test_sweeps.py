"""Sweeps (``omnidiff train -m``, ``omnidiff sample -m``) and ``omnidiff compare`` on tiny
runs: two jobs, a few steps each."""

from __future__ import annotations

import csv
import json
import os
import signal
from pathlib import Path

import pytest
from PIL import Image

from omnidiff.cli.commands import main
from omnidiff.errors import UsageError
from omnidiff.tasks.sweeps import job_names, parse_sweep

TINY = ["recipe=points2d", "threads=1", "data.train_size=256", "data.val_size=32",
        "data.batch_size=64", "model.width=32", "model.depth=1", "eval.n_samples=64",
        "eval.n_ref=64", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
        "optim.warmup=2"]


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _final(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())["final"]


def _is_png(path: Path) -> bool:
    with Image.open(path) as im:
        return im.format == "PNG" and im.size[0] > 100


# ---- the sweep syntax ---------------------------------------------------------------------

def test_sweep_syntax_expands_like_hydras_basic_sweeper():
    groups = {"schedule": ["cosine", "edm", "flow", "linear"]}
    sweep = parse_sweep(["recipe=points2d", "optim.lr=1e-3,3e-3", "trainer.max_steps=range(100,"
                         "400,100)", "schedule=glob(*,exclude=edm)", "out=/a/b=c,d"],
                        lambda g: groups.get(g, []))
    assert sweep.fixed == ["recipe=points2d", "out=/a/b=c,d"]  # out is taken as it is
    assert sweep.keys == ["optim.lr", "trainer.max_steps", "schedule"]
    assert len(sweep.jobs) == 2 * 3 * 3
    assert sweep.jobs[0].overrides == ["optim.lr=0.001", "trainer.max_steps=100",
                                       "schedule=cosine"]
    assert sweep.jobs[-1].overrides == ["optim.lr=0.003", "trainer.max_steps=300",
                                        "schedule=linear"]
    assert sweep.jobs[0].name == "optim.lr=0.001,trainer.max_steps=100,schedule=cosine"
    assert len({j.name for j in sweep.jobs}) == len(sweep.jobs)
    assert sweep.fixed_value("out") == "/a/b=c,d"
    # folder names: path separators replaced, long names cut with a hash, no two alike
    names = job_names([["data.path=/x/y.npy"], ["data.path=/x_y.npy"], ["k=" + "v" * 200]])
    assert names[0] == "data.path=_x_y.npy" and names[1] == "data.path=_x_y.npy-" + names[1][-8:]
    assert len(names[2]) <= 96 and names[2] != names[0]
    for bad, needle in ((["x=interval(0,1)"], "interval"), (["a=1,2", "a=3,4"], "swept twice"),
                        (["schedule=glob(zz*)"], "chooses nothing"),
                        (["a=choice(1,"], "bad sweep override")):
        with pytest.raises(UsageError, match=needle):
            parse_sweep(bad, lambda g: groups.get(g, []))


# ---- omnidiff train -m --------------------------------------------------------------------

@pytest.fixture(scope="module")
def sweep2(tmp_path_factory):
    """A finished two-job sweep of points2d over the learning rate (8 steps each)."""
    folder = tmp_path_factory.mktemp("sweep") / "lr"
    code = main(["train", "-m", *TINY, "optim.lr=1e-3,1e-2", "trainer.max_steps=8",
                 f"out={folder}"])
    assert code == 0
    return folder


def test_train_sweep_writes_a_run_per_job_a_table_and_a_figure(sweep2):
    manifest = json.loads((sweep2 / "sweep.json").read_text())
    assert manifest["keys"] == ["optim.lr"]
    assert [j["status"] for j in manifest["jobs"]] == ["done", "done"]
    runs = [sweep2 / j["name"] for j in manifest["jobs"]]
    assert [r.name for r in runs] == ["optim.lr=0.001", "optim.lr=0.01"]
    for run, lr in zip(runs, (0.001, 0.01)):
        assert (run / "model.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()
        assert f"lr: {lr}" in (run / "config.yaml").read_text()
    rows = _rows(sweep2 / "summary.csv")
    assert [r["optim.lr"] for r in rows] == ["0.001", "0.01"]
    for row, run in zip(rows, runs):  # the table holds each run's own numbers
        assert float(row["sliced_w2"]) == pytest.approx(_final(run)["sliced_w2"])
        assert row["status"] == "done" and row["train_steps"] == "8"
        assert float(row["loss_first"]) > 0 and float(row["train_s"]) > 0
    best = min(rows, key=lambda r: float(r["sliced_w2"]))["sliced_w2"]
    assert f"**{float(best):.4g}**" in (sweep2 / "summary.md").read_text()
    assert _is_png(sweep2 / "summary.png")


def test_sweep_mistakes_fail_before_any_job_runs(tmp_path, capsys):
    folder = tmp_path / "s"
    assert main(["train", "-m", *TINY, "optim.lr=1e-3,-1", f"out={folder}"]) == 2
    err = capsys.readouterr().err
    assert "job 2 [optim.lr=-1]" in err and "optim.lr" in err and len(err.splitlines()) == 1
    assert not folder.exists()
    assert main(["train", "-m", *TINY, "sampler=ddim,nope", f"out={folder}"]) == 2
    assert "unknown sampler 'nope'" in capsys.readouterr().err
    assert main(["train", "-m", "--print-config", *TINY, "optim.lr=1,2"]) == 2
    assert "does not go with -m" in capsys.readouterr().err


def test_a_failed_job_is_reported_and_the_sweep_goes_on(tmp_path, capsys):
    import numpy as np

    good, bad = tmp_path / "good.npy", tmp_path / "bad.npy"
    np.save(good, np.random.default_rng(0).normal(size=(400, 2)).astype("float32"))
    np.save(bad, np.zeros(5, dtype="float32"))  # not (n, 2) points: fails when the data loads
    folder = tmp_path / "s"
    code = main(["train", "-m", *TINY, f"data.path={bad},{good}", "trainer.max_steps=4",
                 "eval.n_ref=32", f"out={folder}"])
    out = capsys.readouterr()
    assert code == 1
    assert "job 1/2 failed" in out.err and "going on" in out.err and "resume=auto" in out.err
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["failed", "done"]
    assert jobs[0]["error"] and (folder / jobs[0]["name"] / "error.log").is_file()
    assert (folder / jobs[1]["name"] / "model.pt").is_file()
    rows = _rows(folder / "summary.csv")
    assert rows[0]["status"].startswith("failed: ") and rows[0]["sliced_w2"] == ""
    assert float(rows[1]["sliced_w2"]) > 0


def test_an_interrupted_sweep_resumes_without_rerunning_finished_jobs(tmp_path, capsys,
                                                                       monkeypatch):
    """SIGTERM in job 2 of 3 stops the sweep (job 2's step saved); the same command with
    resume=auto skips job 1, resumes job 2 from its checkpoint and runs job 3."""
    import lightning.pytorch as pl

    from omnidiff.tasks import train as training

    class Kill(pl.Callback):
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step == 3:
                os.kill(os.getpid(), signal.SIGTERM)

    build = training.build_callbacks
    monkeypatch.setattr(training, "build_callbacks", lambda cfg, run_dir: build(cfg, run_dir) + (
        [Kill()] if run_dir.name == "seed=1" else []))
    folder = tmp_path / "s"
    args = ["train", "-m", *TINY, "seed=0,1,2", "trainer.max_steps=6", f"out={folder}"]
    assert main(args) == 143
    err = capsys.readouterr().err
    assert "sweep stopped in job 2/3" in err and "resume=auto" in err
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["done", "stopped", "pending"]
    first = folder / "seed=0" / "model.pt"
    stamp = first.stat().st_mtime_ns
    monkeypatch.setattr(training, "build_callbacks", build)
    assert main(args + ["resume=auto"]) == 0
    out = capsys.readouterr().out
    assert "job 1/3 [seed=0] finished earlier: skipped" in out
    assert "resuming" in out and "(step 3)" in out
    assert first.stat().st_mtime_ns == stamp  # job 1 was not run again
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["finished earlier", "done", "done"]
    assert [r["train_steps"] for r in _rows(folder / "summary.csv")] == ["6", "6", "6"]
    # without resume=auto the finished sweep is not touched
    assert main(args) == 2
    assert "holds a sweep; continue it with resume=auto" in capsys.readouterr().err


# ---- omnidiff sample -m and omnidiff compare ----------------------------------------------

def test_sampler_sweep_writes_each_combination_and_a_metric_vs_nfe_plot(sweep2, tmp_path,
                                                                        capsys):
    ckpt = sweep2 / "optim.lr=0.01" / "model.pt"  # a path holding '=' and ','-free
    folder = tmp_path / "samplers"
    code = main(["sample", f"checkpoint={ckpt}", "-m", "sampler=ddim,heun", "steps=2,4",
                 "n=32", "n_ref=64", f"out={folder}"])
    assert code == 0, capsys.readouterr().err
    rows = _rows(folder / "summary.csv")
    got = {(r["sampler"], r["steps"]): r for r in rows}
    assert set(got) == {("ddim", "2"), ("ddim", "4"), ("heun", "2"), ("heun", "4")}
    # NFE as each sampler spends it: DDIM one per step, Heun two per step but the last
    assert [got[k]["nfe"] for k in sorted(got)] == ["2", "4", "3", "7"]
    for r in rows:
        record = json.loads((folder / r["name"] / "metrics.json").read_text())
        assert float(r["sliced_w2"]) == pytest.approx(record["metrics"]["sliced_w2"])
        assert list((folder / r["name"]).glob("samples*.png"))
    assert _is_png(folder / "summary.png")
    # a bad value in one combination fails before any sampling
    code = main(["sample", f"checkpoint={ckpt}", "-m", "steps=2,0", f"out={tmp_path / 'bad'}"])
    assert code == 2 and "job 2 [steps=0]" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_compare_runs_outside_a_sweep_shows_the_settings_that_differ(sweep2, tmp_path, capsys):
    runs = [sweep2 / "optim.lr=0.001", sweep2 / "optim.lr=0.01"]
    out = tmp_path / "cmp"
    assert main(["compare", *map(str, runs), f"out={out}", "metric=mmd_rbf"]) == 0
    text = capsys.readouterr().out
    header = [c.strip() for c in text.splitlines()[0].strip("|").split("|")]
    assert header[:3] == ["name", "optim.lr", "status"]
    assert header.index("mmd_rbf") < header.index("sliced_w2")  # metric= comes first
    rows = _rows(out / "summary.csv")
    assert [r["optim.lr"] for r in rows] == ["0.001", "0.01"]
    assert all(set(r) >= {"loss_first", "loss_last", "train_s", "sliced_w2"} for r in rows)
    assert _is_png(out / "summary.png")
    # a folder of sweeps compares them all; bad input is one line
    assert main(["compare", str(sweep2.parent), f"out={tmp_path / 'all'}"]) == 0
    assert len(_rows(tmp_path / "all" / "summary.csv")) == 2
    capsys.readouterr()
    assert main(["compare", str(runs[0]), "metric=nope", f"out={out}"]) == 2
    assert "metric='nope' is not among" in capsys.readouterr().err
    assert main(["compare", str(tmp_path / "missing")]) == 2
    assert "is not a folder" in capsys.readouterr().err


def test_ddp_sweep_runs_every_job_on_two_processes(tmp_path):
    """Lightning's DDP launcher reruns the command for rank 1: that process trains only the
    job rank 0 is on, and each job gets fresh processes (no stale process group)."""
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("omnidiff")
    cli = [str(exe)] if exe.exists() else [sys.executable, "-m", "omnidiff.cli"]
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    for key in ("OMNIDIFF_RUN_DIR", "LOCAL_RANK", "MASTER_PORT", "WORLD_SIZE", "NODE_RANK"):
        env.pop(key, None)
    folder = tmp_path / "ddp"
    r = subprocess.run(cli + ["train", "-m", *TINY, "trainer.accelerator=cpu",
                              "trainer.devices=2", "trainer.strategy=ddp",
                              "trainer.max_steps=6", "eval.n_samples=16", "seed=0,1",
                              f"out={folder}"],
                       capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    for job in ("seed=0", "seed=1"):
        ranks = [json.loads((folder / job / "ranks" / f"rank{k}.json").read_text())
                 for k in (0, 1)]
        assert [d["world_size"] for d in ranks] == [2, 2]
        assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]
    assert [r["status"] for r in _rows(folder / "summary.csv")] == ["done", "done"]
    assert not (tmp_path / "runs").exists()  # rank 1 started no sweep of its own
