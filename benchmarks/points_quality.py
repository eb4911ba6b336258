"""Sample quality of trained points models: samplers, step counts, guidance (prints a table).

    python benchmarks/points_quality.py                         # trains points2d first (~2 min)
    python benchmarks/points_quality.py --checkpoint runs/p2d/model.pt
    python benchmarks/points_quality.py --checkpoint runs/digits/model.pt   # a cloud model

For a density model: sliced-Wasserstein distance (SW) to held-out data for 20-step dpmpp_2m,
1000-step ddpm, a few others, the untrained network (same architecture, fresh weights) and the
floor (two independent held-out sets of the same size). For a class-conditional cloud model:
class accuracy of generated clouds under the domain's k-NN Chamfer classifier, with and without
guidance, against real held-out clouds.
"""

from __future__ import annotations

import argparse
import copy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import omnidiff


def _train(recipe: str, out: Path, overrides: list[str]) -> Path:
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "omnidiff.cli", "train", f"recipe={recipe}",
                    f"out={out}", *overrides], check=True)
    print(f"trained {recipe} in {time.time() - t0:.0f} s -> {out}")
    return out / "model.pt"


def _untrained(pipe: omnidiff.Pipeline, seed: int = 0) -> omnidiff.Pipeline:
    fresh = copy.deepcopy(pipe)
    torch.manual_seed(seed)
    net = fresh.domain.build_network(fresh.event_shape, fresh.num_classes,
                                     **fresh.info["model"])
    fresh.model.net.load_state_dict(net.state_dict())
    return fresh


def _density_table(pipe: omnidiff.Pipeline, n: int, seeds: int) -> None:
    ref_a, _ = pipe.reference(2 * n, seed=123)
    floor = pipe.domain.metrics(ref_a[:n], ref_a[n:])["sliced_w2"]
    runs = [("dpmpp_2m", 20), ("ddpm", 1000), ("heun", 10), ("ddim", 20), ("dpmpp_2m", 10),
            ("euler", 20)]
    rows = []
    for sampler, steps in runs:
        sw, secs = [], 0.0
        for s in range(seeds):
            t0 = time.time()
            x = pipe.generate(n, sampler=sampler, steps=steps, seed=s)
            secs += time.time() - t0
            sw.append(pipe.metrics(x, n_ref=n)["sliced_w2"])
        rows.append((f"{sampler} {steps} steps", sum(sw) / len(sw), secs / seeds))
    untrained = _untrained(pipe)
    x = untrained.generate(n, sampler="dpmpp_2m", steps=20, seed=0)
    rows.append(("untrained, dpmpp_2m 20", untrained.metrics(x, n_ref=n)["sliced_w2"], 0.0))
    rows.append(("floor: held-out vs held-out", floor, 0.0))
    print(f"\nsliced-Wasserstein to {n} held-out points (mean over {seeds} seeds)")
    print(f"{'run':32s} {'SW':>8s} {'s/run':>7s}")
    for name, sw, secs in rows:
        print(f"{name:32s} {sw:8.4f} {secs:7.2f}")
    base = rows[1][1]
    print(f"dpmpp_2m@20 / ddpm@1000 = {rows[0][1] / base:.3f}  "
          f"(untrained / ddpm@1000 = {rows[-2][1] / base:.1f})")


def _class_table(pipe: omnidiff.Pipeline, n: int, guidances: list[float | None]) -> None:
    cond = torch.arange(n) % pipe.num_classes
    print(f"\nclass accuracy of {n} generated clouds (k-NN Chamfer classifier on held-out "
          f"clouds; chance = {1 / pipe.num_classes:.2f})")
    for g in guidances:
        x = pipe.generate(n, sampler="dpmpp_2m", steps=20, guidance=g, cond=cond, seed=0)
        m = pipe.metrics(x, n_ref=300, cond=cond)
        print(f"guidance={g!s:6s} " + "  ".join(f"{k}={v:.3f}" for k, v in sorted(m.items())))
    ref, ref_cond = pipe.reference(600, seed=7)
    m = pipe.domain.metrics(ref[300:], ref[:300], cond=ref_cond[300:], ref_cond=ref_cond[:300])
    print("real held-out clouds: " + "  ".join(f"{k}={v:.3f}" for k, v in sorted(m.items())))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--recipe", default="points2d")
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("overrides", nargs="*", help="training overrides when training here")
    args = ap.parse_args()
    torch.set_num_threads(1)
    ckpt = args.checkpoint or _train(args.recipe, Path(tempfile.mkdtemp()) / args.recipe,
                                     args.overrides)
    pipe = omnidiff.load(ckpt, device="cpu")
    print(pipe)
    if pipe.num_classes and len(pipe.event_shape) == 2:
        _class_table(pipe, min(args.n, 200), [None, 1.0, 2.0, 3.0])
    else:
        _density_table(pipe, args.n, args.seeds)


if __name__ == "__main__":
    main()
