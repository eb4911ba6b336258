"""Beyond one machine: streaming shards (``omnidiff prepare`` / ``data.stream``), two nodes under
torchrun, and sweeps on local processes or SLURM (submitit, with a stand-in ``sbatch``)."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from test_fault_tolerance import TINY, _step, kill_after_checkpoint

from omnidiff.cli.commands import main
from omnidiff.plugins.data import TensorDictDataset
from omnidiff.plugins.shards import ShardBatches, Shards, stream_loader, write_shards


def _env() -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    for key in ("OMNIDIFF_RUN_DIR", "RANK", "LOCAL_RANK", "NODE_RANK", "WORLD_SIZE"):
        env.pop(key, None)
    return env


def _ids_shards(tmp_path: Path, n: int = 1000, width: int = 8) -> Shards:
    """Shards whose sample i is the row [i, i, ...] with label i % 7 (63 blocks of 16)."""
    x = torch.arange(n, dtype=torch.float32)[:, None].repeat(1, width)
    write_shards(TensorDictDataset(x, torch.arange(n) % 7), tmp_path / "ids",
                 {"domain": "ids", "event_shape": [width]})
    return Shards(tmp_path / "ids")


# ---- streaming ----------------------------------------------------------------------------


def test_shards_deal_every_sample_once_and_ranks_are_disjoint(tmp_path):
    shards = _ids_shards(tmp_path)
    assert shards.meta["blocks"] == 63 and shards.meta["block"] == 16  # the last holds 8
    one = ShardBatches(shards, 50, seed=3)
    ids = torch.cat([one[(0, b)]["x"][:, 0] for b in range(len(one))]).long()
    assert len(one) == 20 and sorted(ids.tolist()) == list(range(1000))  # all, once each
    batch = one[(0, 4)]
    assert torch.equal(batch["cond"], batch["x"][:, 0].long() % 7)  # conditions follow samples
    later = torch.cat([one[(1, b)]["x"][:, 0] for b in range(len(one))]).long()
    assert not torch.equal(ids, later)  # another epoch, another order
    # a batch depends only on (seed, epoch, rank, index): a fresh reader gives the same one
    assert torch.equal(ShardBatches(shards, 50, seed=3)[(1, 7)]["x"], one[(1, 7)]["x"])
    for epoch in (0, 1, 2):
        ranks = [ShardBatches(shards, 32, seed=3, rank=r, world=3) for r in range(3)]
        assert len({len(r) for r in ranks}) == 1  # the same number of steps on every rank
        seen = [torch.cat([r[(epoch, b)]["x"][:, 0] for b in range(len(r))]).long()
                for r in ranks]
        assert all(len(s) == len(set(s.tolist())) == len(ranks[0]) * 32 for s in seen)
        assert not (set(seen[0].tolist()) & set(seen[1].tolist()) or
                    set(seen[1].tolist()) & set(seen[2].tolist()) or
                    set(seen[0].tolist()) & set(seen[2].tolist()))


def test_stream_loader_resumes_at_the_exact_batch(tmp_path):
    shards = _ids_shards(tmp_path)
    straight = stream_loader(shards, 64, seed=1)
    order = []
    for epoch in (0, 1):
        straight.sampler.set_epoch(epoch)
        order += [b["x"][:, 0] for b in straight]
    loader = stream_loader(shards, 64, seed=1)
    loader.sampler.set_epoch(0)
    it = iter(loader)
    first = [next(it)["x"][:, 0] for _ in range(9)]
    state = loader.state_dict()
    assert state == {"epoch": 0, "batches": 9}
    again = stream_loader(shards, 64, seed=1)  # a new process after the kill
    again.load_state_dict(state)
    rest = [b["x"][:, 0] for b in again]
    again.sampler.set_epoch(1)
    rest += [b["x"][:, 0] for b in again]
    assert len(first + rest) == len(order)
    assert all(torch.equal(a, b) for a, b in zip(first + rest, order))
    # a dataloader worker (its own reader and cache) streams the same batches
    worker = stream_loader(shards, 64, seed=1, num_workers=1)
    worker.sampler.set_epoch(1)
    got = [b["x"][:, 0] for b in worker]
    assert len(got) == len(order) // 2
    assert all(torch.equal(b, a) for b, a in zip(got, order[len(order) // 2:]))


def test_a_streamed_run_resumes_bit_for_bit_after_sigkill(tmp_path, capsys, monkeypatch):
    shards = tmp_path / "shards"
    assert main(["prepare"] + TINY + [f"out={shards}"]) == 0
    assert f"data.stream={shards}" in capsys.readouterr().out
    run = tmp_path / "run"
    args = TINY + [f"data.stream={shards}", "data.stream_window=256",
                   "checkpoint.every_n_train_steps=10"]
    k = kill_after_checkpoint(args + [f"out={run}"], run / "checkpoints" / "last.ckpt", 20,
                              tmp_path)
    target = k + 40  # 32 batches an epoch: the resumed stretch crosses an epoch boundary
    monkeypatch.chdir(tmp_path)
    assert main(["train"] + args + [f"out={run}", f"trainer.max_steps={target}",
                                    "resume=auto"]) == 0
    assert f"(step {k})" in capsys.readouterr().out
    assert main(["train"] + args + [f"out={tmp_path / 'straight'}",
                                    f"trainer.max_steps={target}"]) == 0
    ck, ref = (torch.load(p / "checkpoints" / "last.ckpt", map_location="cpu",
                          weights_only=True) for p in (run, tmp_path / "straight"))
    loader = ck["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader == ref["loops"]["fit_loop"]["state_dict"]["combined_loader"]
    assert loader[0] == {"epoch": target // 32, "batches": target % 32}
    for part in ("state_dict", "current_model_state"):
        for key, value in ref[part].items():
            assert torch.equal(value, ck[part][key]), (part, key)


def test_stream_and_prepare_mistakes_are_one_line(tmp_path, capsys, monkeypatch):
    def error(args):
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("omnidiff: error:"), err
        return err[0]

    shards = tmp_path / "points"
    assert main(["prepare"] + TINY + [f"out={shards}"]) == 0
    capsys.readouterr()
    assert "exists" in error(["prepare"] + TINY + [f"out={shards}"])
    assert "needs out=" in error(["prepare"] + TINY)
    assert "omnidiff prepare" in error(["train"] + TINY + [f"data.stream={tmp_path / 'none'}"])
    line = error(["train", "recipe=image_digits", "trainer.max_steps=2",
                  f"data.stream={shards}", f"out={tmp_path / 'img'}"])
    assert "holds points data" in line and "image domain" in line
    assert not (tmp_path / "img").exists()  # refused before a run folder exists
    assert "condition" in error(["train"] + TINY + [f"data.stream={shards}",
                                                    "data.affine=true", f"out={tmp_path / 'r'}"])
    images = tmp_path / "images"
    assert main(["prepare", "recipe=image_digits", f"out={images}"]) == 0
    capsys.readouterr()
    assert "shape (1, 8, 8)" in error(["train", "recipe=image_digits", "data.image_size=16",
                                       f"data.stream={images}", f"out={tmp_path / 'r'}"])
    monkeypatch.setitem(sys.modules, "litdata", None)  # as if it were not installed
    assert "pip install 'omnidiff[scale]'" in error(["train"] + TINY
                                                    + [f"data.stream={shards}"])
    monkeypatch.setitem(sys.modules, "submitit", None)
    assert "submitit" in error(["train", "-m"] + TINY + ["seed=0,1", "launcher=slurm",
                                                         f"out={tmp_path / 'sw'}"])
    assert "unknown launcher" in error(["train", "-m"] + TINY + ["seed=0,1", "launcher=pbs"])
    assert "give one value" in error(["train", "-m"] + TINY + ["launcher=sequential,local"])
    assert "jobs=0" in error(["train", "-m"] + TINY + ["seed=0,1", "launcher=local", "jobs=0"])
    assert "add launcher=local" in error(["train", "-m"] + TINY + ["seed=0,1", "jobs=2"])
    assert "add -m" in error(["train"] + TINY + ["launcher=slurm"])


# ---- two nodes ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _nodes(args: list[str], cwd: Path) -> list[subprocess.Popen]:
    """Two torchrun "nodes" of one CPU process each on localhost (gloo)."""
    port = _free_port()
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                "--nproc_per_node=1", "--master_addr=127.0.0.1", f"--master_port={port}"]
    return [subprocess.Popen(torchrun + [f"--node_rank={k}", "-m", "omnidiff.cli", "train"]
                             + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True, env=_env(), cwd=cwd, start_new_session=True)
            for k in (0, 1)]


def _kill_every_process_of(marker: str) -> None:
    """SIGKILL every process whose command line holds ``marker`` (torchrun's agents and the
    workers they started, which run in sessions of their own)."""
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and marker in (proc / "cmdline").read_bytes().decode(
                    errors="replace"):
                os.kill(int(proc.name), signal.SIGKILL)
        except (OSError, ProcessLookupError):
            continue


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="finds the processes to kill in /proc")
def test_two_nodes_share_one_run_folder_and_resume_after_a_kill(tmp_path):
    shards = tmp_path / "shards"
    assert main(["prepare"] + TINY + [f"out={shards}"]) == 0
    run = tmp_path / "run"
    args = TINY + [f"data.stream={shards}", "trainer.num_nodes=2", "trainer.devices=1",
                   "trainer.strategy=ddp", f"out={run}", "checkpoint.every_n_train_steps=5"]
    nodes = _nodes(args + ["trainer.max_steps=100000"], tmp_path)
    last = run / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 200
    try:
        while time.monotonic() < deadline and all(p.poll() is None for p in nodes):
            if last.is_file() and _step(last) >= 10:
                break
            time.sleep(0.2)
        assert last.is_file() and _step(last) >= 10, nodes[0].stdout.read()[-3000:]
    finally:  # both nodes die at once: torchrun's agents and their workers
        _kill_every_process_of(f"out={run}")
        for p in nodes:
            p.communicate(timeout=60)
    k = _step(last)
    nodes = _nodes(args + [f"trainer.max_steps={k + 12}", "resume=auto"], tmp_path)
    logs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], logs[0][-3000:] + logs[1][-3000:]
    assert f"resuming {run}" in logs[0] and f"(step {k})" in logs[0]
    ranks = [json.loads((run / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [d["world_size"] for d in ranks] == [2, 2]
    assert ranks[0]["global_step"] == ranks[1]["global_step"] == k + 12
    assert ranks[0]["weights_sha256"] == ranks[1]["weights_sha256"]  # the same weights
    assert ranks[0]["first_batch_sha256"] != ranks[1]["first_batch_sha256"]  # own shards
    # exactly one set of files: one writer, no second run folder, no temporaries
    files = sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file())
    assert [f for f in files if not f.startswith(("logs/", "checkpoints/", "ranks/",
                                                  "samples/"))] == [
        "config.yaml", "loss.png", "metrics.json", "model.pt"]
    assert not any(Path(f).name.startswith(".") for f in files)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "lightning_logs").exists()
    assert json.loads((run / "metrics.json").read_text())["global_step"] == k + 12


# ---- sweeps on several processes or a cluster ---------------------------------------------


def test_local_launcher_runs_jobs_at_once_with_the_sequential_results(tmp_path, capsys):
    sweep = TINY + ["trainer.max_steps=30", "seed=0,1"]
    assert main(["train", "-m"] + sweep + [f"out={tmp_path / 'seq'}"]) == 0
    assert main(["train", "-m"] + sweep + ["launcher=local", "jobs=2",
                                           f"out={tmp_path / 'par'}"]) == 0
    out = capsys.readouterr().out
    assert "2 at a time (local)" in out and out.count("(process ") == 2
    manifest = json.loads((tmp_path / "par" / "sweep.json").read_text())
    assert [j["status"] for j in manifest["jobs"]] == ["done", "done"]
    for job in ("seed=0", "seed=1"):
        a, b = (json.loads((tmp_path / s / job / "metrics.json").read_text())["final"]
                for s in ("seq", "par"))
        assert {k: v for k, v in a.items() if "seconds" not in k} == {
            k: v for k, v in b.items() if "seconds" not in k}
        assert (tmp_path / "par" / ".logs" / f"{job}.log").is_file()
    assert (tmp_path / "par" / "summary.md").is_file()


def test_a_stopped_local_sweep_records_its_jobs_and_resumes_them(tmp_path, capsys):
    folder = tmp_path / "sweep"
    sweep = TINY + ["seed=0,1", "launcher=local", "jobs=2", "checkpoint.every_n_train_steps=5",
                    f"out={folder}"]
    proc = subprocess.Popen([sys.executable, "-m", "omnidiff.cli", "train", "-m"] + sweep
                            + ["trainer.max_steps=100000"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, env=_env(), cwd=tmp_path)
    lasts = [folder / f"seed={s}" / "checkpoints" / "last.ckpt" for s in (0, 1)]
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not all(p.is_file() and _step(p) >= 5 for p in lasts):
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)  # a scheduler stopping the sweep
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == 130 and "saved and stopped" in out, out[-3000:]
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["stopped", "stopped"]
    steps = [_step(p) for p in lasts]
    target = max(steps) + 10
    assert main(["train", "-m"] + sweep + [f"trainer.max_steps={target}", "resume=auto"]) == 0
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["done", "done"]
    for s, k in zip((0, 1), steps):
        log = (folder / ".logs" / f"seed={s}.log").read_text()
        assert f"(step {k})" in log  # continued from its checkpoint
        assert json.loads((folder / f"seed={s}" / "metrics.json").read_text())[
            "global_step"] == target


def _stand_in_slurm(tmp_path: Path) -> dict[str, str]:
    """``sbatch`` that keeps each script it is given and answers like SLURM; ``srun`` only
    present (submitit looks for it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(
        '#!/usr/bin/env bash\ndir="$SBATCH_RECORD"; mkdir -p "$dir"\n'
        'id=$((1000 + $(ls "$dir" | wc -l)))\ncp "${@: -1}" "$dir/$id.sh"\n'
        'echo "Submitted batch job $id"\n')
    (bin_dir / "srun").write_text("#!/usr/bin/env bash\nexit 1\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}",
            "SBATCH_RECORD": str(tmp_path / "sbatch")}


def _submitted(folder: Path, job_id: str) -> list[str]:
    """The arguments submitit pickled for SLURM job ``job_id`` (what its task runs)."""
    with open(folder / ".submitit" / f"{job_id}_submitted.pkl", "rb") as fh:
        return list(pickle.load(fh).args[0])


def test_slurm_launcher_submits_batch_scripts_and_resubmits_preempted_jobs(tmp_path, capsys,
                                                                          monkeypatch):
    from omnidiff.tasks.launchers import TrainCommand

    for key, value in _stand_in_slurm(tmp_path).items():
        monkeypatch.setenv(key, value)
    sweep, folder = tmp_path / "sweep", tmp_path / "sweep"
    args = TINY + ["trainer.max_steps=40", "checkpoint.every_n_train_steps=5", "seed=0,1",
                   "launcher=slurm", "launcher.partition=gpu", "launcher.gpus_per_node=2",
                   "launcher.timeout_min=90", "launcher.mem_gb=24", "launcher.wait=false",
                   "jobs=2", f"out={sweep}"]
    assert main(["train", "-m"] + args) == 0
    assert "submitted as SLURM job 1000_0" in capsys.readouterr().out
    script = (tmp_path / "sbatch" / "1000.sh").read_text()
    for line in ("--array=0-1%2", "--partition=gpu", "--gpus-per-node=2", "--time=90",
                 "--mem=24GB", "--signal=USR2@120"):
        assert f"#SBATCH {line}" in script, line
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [(j["status"], j["slurm_id"]) for j in jobs] == [("submitted", "1000_0"),
                                                            ("submitted", "1000_1")]
    # what SLURM would do: task 0 runs to the end; task 1 is preempted (submitit calls
    # checkpoint(), which stops the run, saving last.ckpt, and requeues it with resume=auto)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert TrainCommand()(_submitted(folder, "1000_0")) == 0
    argv = _submitted(folder, "1000_1") + ["trainer.max_steps=100000"]
    task, errors = TrainCommand(), []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(RuntimeError, task,
                                                                         argv)))
    thread.start()
    last = folder / "seed=1" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 150
    while time.monotonic() < deadline and not (last.is_file() and _step(last) >= 5):
        time.sleep(0.2)
    requeued = task.checkpoint(argv)
    thread.join(timeout=120)
    assert errors and "resume=auto" in requeued.args[0] and last.is_file()
    assert not (folder / "seed=1" / "metrics.json").exists()
    # the sweep again: the finished job is skipped, the preempted one submitted to continue
    assert main(["train", "-m"] + args + ["resume=auto"]) == 0
    out = capsys.readouterr().out
    assert "job 1/2 [seed=0] finished earlier" in out and "SLURM job 1001 " in out
    assert "--partition=gpu" in (tmp_path / "sbatch" / "1001.sh").read_text()  # one job
    again = _submitted(folder, "1001")
    assert "seed=1" in again and "resume=auto" in again
    jobs = json.loads((folder / "sweep.json").read_text())["jobs"]
    assert [j["status"] for j in jobs] == ["finished earlier", "submitted"]
