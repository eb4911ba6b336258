"""SIGKILL a training at random moments, resume it each time, and compare with an unbroken run.

    python benchmarks/kill_resume.py                                   # points2d, 6000 steps
    python benchmarks/kill_resume.py --recipe image_digits --kills 2 --overrides ""

Runs `omnidiff train` (the real CLI, default checkpoint settings unless overridden) in a
subprocess, kills it with SIGKILL at a moment drawn uniformly from the training time still
ahead, then continues it with `resume=auto`; after the last kill the run finishes. Prints, per
kill, the step it died at, the step its last.ckpt held (the work lost, in steps and seconds),
and at the end whether the resumed run's weights (raw, EMA and model.pt) equal, bit for bit,
those of an unbroken run with the same config.
"""

from __future__ import annotations

import argparse
import csv
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("omnidiff")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "omnidiff.cli"]


def _logged_step(run: Path) -> int:
    path = run / "logs" / "metrics.csv"
    if not path.is_file():
        return -1
    with open(path, newline="") as fh:
        return max((int(r["step"]) for r in csv.DictReader(fh) if r.get("train/loss")),
                   default=-1)


def _ckpt_step(run: Path) -> int:
    path = run / "checkpoints" / "last.ckpt"
    if not path.is_file():
        return 0
    return int(torch.load(path, map_location="cpu", weights_only=True)["global_step"])


def _train(args: list[str], kill_after: float | None, cwd: Path) -> int:
    """Run the CLI; SIGKILL it ``kill_after`` seconds after its first logged step. Returns the
    step logged last before the kill (-1 when it ran to the end)."""
    proc = subprocess.Popen(_cli() + ["train"] + args, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, cwd=cwd)
    run = Path(next(a.split("=", 1)[1] for a in args if a.startswith("out=")))
    if kill_after is None:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"training failed:\n{err[-3000:]}")
        return -1
    start = None
    while proc.poll() is None:
        if start is None and _logged_step(run) >= 0:
            start = time.monotonic()
        if start is not None and time.monotonic() - start >= kill_after:
            proc.send_signal(signal.SIGKILL)
            proc.communicate()
            return _logged_step(run)
        time.sleep(0.05)
    raise SystemExit("the run finished before the kill; pass fewer --kills or a longer run")


def _same(a: Path, b: Path) -> dict[str, bool]:
    out = {}
    ca, cb = (torch.load(p / "checkpoints" / "last.ckpt", weights_only=True) for p in (a, b))
    for part in ("state_dict", "current_model_state"):
        if part in cb:
            out[part] = all(torch.equal(v, ca[part][k]) for k, v in cb[part].items())
    ma, mb = (torch.load(p / "model.pt", weights_only=True)["state_dict"] for p in (a, b))
    out["model.pt"] = all(torch.equal(v, ma[k]) for k, v in mb.items())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="points2d")
    ap.add_argument("--overrides", default="trainer.max_steps=6000",
                    help="space-separated key=value overrides for both runs")
    ap.add_argument("--kills", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0, help="draws the kill moments")
    ap.add_argument("--keep", action="store_true", help="keep the run folders")
    opts = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="kill_resume_"))
    base = [f"recipe={opts.recipe}", "trainer.enable_progress_bar=false"] + opts.overrides.split()
    t0 = time.perf_counter()
    _train(base + [f"out={work / 'straight'}"], None, work)
    unbroken = time.perf_counter() - t0
    steps = _ckpt_step(work / "straight")
    per_step = unbroken / max(1, steps)  # start-up and evaluations included
    print(f"unbroken run: {steps} steps in {unbroken:.0f} s")

    rng = random.Random(opts.seed)
    killed = work / "killed"
    t0 = time.perf_counter()
    for k in range(opts.kills):
        resume = ["resume=auto"] if k else []
        # kill somewhere in the part of the run still ahead (as a share of the unbroken time)
        ahead = unbroken * (1 - _ckpt_step(killed) / max(1, steps))
        logged = _train(base + [f"out={killed}"] + resume, rng.uniform(0.1, 0.9) * ahead, work)
        saved = _ckpt_step(killed)
        print(f"kill {k + 1}: died at step ~{logged}, last.ckpt at step {saved}: lost "
              f"~{logged - saved} steps (~{(logged - saved) * per_step:.0f} s of the unbroken "
              "run's pace)", flush=True)
    _train(base + [f"out={killed}", "resume=auto"], None, work)
    total = time.perf_counter() - t0
    same = _same(killed, work / "straight")
    print(f"killed {opts.kills}x and resumed: {total:.0f} s in all (unbroken {unbroken:.0f} s; "
          "each restart pays start-up and the work since last.ckpt)")
    print("bit for bit equal to the unbroken run: "
          + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items()))
    if not opts.keep:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"runs kept in {work}")


if __name__ == "__main__":
    main()
