"""Beyond one machine, measured on this one: streaming shards against in-memory data, and a sweep
on local processes against the sequential runner.

    python benchmarks/scale.py throughput            # samples/s: shards vs the domains' loaders
    python benchmarks/scale.py quality               # image_digits and audio_tones, both ways
    python benchmarks/scale.py quality --steps 600 --set eval.n_samples=120   # shorter
    python benchmarks/scale.py sweep                 # 4 points2d jobs: sequential vs local x2

``throughput`` iterates each recipe's own training loader (in memory: digits, tones, two moons)
and the shard loader over the same data (``omnidiff prepare``) for the same number of epochs,
in this process, one thread; the ratio is shards / memory. ``quality`` trains each recipe from
memory and from its shards side by side (two processes of one thread each, so both share the
machine alike) and prints the recipe's own metrics. ``sweep`` runs ``omnidiff train -m`` over
four points2d jobs (two learning rates x two seeds, one thread each) with the default runner,
then with ``launcher=local jobs=2``, and prints both wall times, their ratio and whether every
job's final metrics agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from omnidiff.model_spec import build_domain
from omnidiff.plugins.data import prepare_data_module
from omnidiff.plugins.shards import Shards, stream_loader
from omnidiff.tasks.config import compose, domain_data
from omnidiff.tasks.prepare import prepare

CLI = [sys.executable, "-m", "omnidiff.cli"]
RECIPES = ("image_digits", "audio_tones", "points2d")


def _samples_per_second(loader, epochs: int) -> float:
    n, t0 = 0, time.perf_counter()
    for epoch in range(epochs):
        loader.sampler.set_epoch(epoch)
        for batch in loader:
            n += len(batch["x"])
    return n / (time.perf_counter() - t0)


def throughput(epochs: int, root: Path) -> None:
    torch.set_num_threads(1)
    print(f"{'recipe':14s} {'memory/s':>10s} {'shards/s':>10s} {'ratio':>6s}")
    for recipe in RECIPES:
        cfg = compose(recipe, [f"out={root / recipe}"])
        shards_dir, _ = prepare(cfg)
        dm = prepare_data_module(build_domain(str(cfg.domain)).build_data(**domain_data(cfg)))
        memory = _samples_per_second(dm.train_dataloader(), epochs)
        shards = _samples_per_second(stream_loader(Shards(shards_dir), dm.batch_size,
                                                   seed=dm.seed), epochs)
        print(f"{recipe:14s} {memory:10.0f} {shards:10.0f} {shards / memory:6.2f}", flush=True)


def quality(steps: int | None, root: Path, overrides: list[str],
            recipes: list[str]) -> None:
    for recipe in recipes:
        shards = root / f"{recipe}-shards"
        subprocess.run(CLI + ["prepare", f"recipe={recipe}", f"out={shards}"], check=True,
                       capture_output=True)
        extra = ["threads=1", "trainer.enable_progress_bar=false", "overwrite=true"]
        extra += ([f"trainer.max_steps={steps}"] if steps else []) + overrides
        procs = {how: subprocess.Popen(CLI + ["train", f"recipe={recipe}",
                                              f"out={root / recipe / how}", *extra, *more],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                       text=True)
                 for how, more in (("memory", []), ("shards", [f"data.stream={shards}"]))}
        for how, proc in procs.items():
            _, err = proc.communicate()
            if proc.returncode:
                raise SystemExit(f"{recipe} from {how} failed:\n{err[-2000:]}")
        rows = {how: json.loads((root / recipe / how / "metrics.json").read_text())
                for how in procs}
        keys = [k for k, v in rows["memory"]["final"].items()
                if isinstance(v, (int, float)) and "seconds" not in k and k != "step"]
        print(f"\n{recipe} ({rows['memory']['global_step']} steps)")
        print(f"{'':8s} " + " ".join(f"{k[:14]:>14s}" for k in keys + ["train_s"]))
        for how, row in rows.items():
            vals = [row["final"][k] for k in keys] + [row["train_seconds"]]
            print(f"{how:8s} " + " ".join(f"{v:14.4g}" for v in vals), flush=True)


def sweep(root: Path) -> None:
    args = ["train", "-m", "recipe=points2d", "threads=1", "trainer.enable_progress_bar=false",
            "optim.lr=1e-3,3e-3", "seed=0,1"]
    seconds = {}
    for how, more in (("sequential", []), ("local", ["launcher=local", "jobs=2"])):
        t0 = time.perf_counter()
        subprocess.run(CLI + args + more + [f"out={root / how}"], check=True,
                       capture_output=True)
        seconds[how] = time.perf_counter() - t0
    same = True
    for job in sorted(p.name for p in (root / "sequential").iterdir() if p.is_dir()):
        a, b = (json.loads((root / how / job / "metrics.json").read_text())["final"]
                for how in seconds)
        same &= all(a[k] == b[k] for k in a if "seconds" not in k)
    print(f"sequential {seconds['sequential']:.1f} s, local jobs=2 {seconds['local']:.1f} s, "
          f"ratio {seconds['local'] / seconds['sequential']:.2f}; "
          f"per-job metrics identical: {same}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("part", choices=("throughput", "quality", "sweep"))
    parser.add_argument("--epochs", type=int, default=3, help="throughput: epochs per loader")
    parser.add_argument("--steps", type=int, default=None, help="quality: training steps "
                        "(default: each recipe's own)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="quality: overrides for both runs (eval.n_samples=120)")
    parser.add_argument("--recipes", nargs="*", default=["image_digits", "audio_tones"],
                        help="quality: the recipes to train both ways")
    parser.add_argument("--out", type=Path, default=None, help="keep the runs here")
    a = parser.parse_args()
    root = a.out or Path(tempfile.mkdtemp(prefix="omnidiff-scale-"))
    root.mkdir(parents=True, exist_ok=True)
    if a.part == "throughput":
        throughput(a.epochs, root)
    elif a.part == "quality":
        quality(a.steps, root, a.set, a.recipes)
    else:
        sweep(root)


if __name__ == "__main__":
    main()
