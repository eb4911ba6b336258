"""Sampler benchmark: omnidiff against diffusers and k-diffusion. Not a test; prints tables.

    python benchmarks/samplers.py [--quick] [--mixtures 0,3] [--csv FILE]
                                  [--skip-accuracy] [--skip-overhead] [--skip-quality]
                                  [--points PATH] [--digits PATH] [--seeds N]

(1) Accuracy on exact Gaussian mixtures: the eight-Gaussian circle (2D) and random mixtures
    (``omnidiff.core.gaussian_mixture.random_mixture``, seed 0) in 2, 16 and 64 dimensions with narrow and wide
    modes; DDPM's linear schedule (our ``linear`` = DDPM's discrete alpha-bar interpolated in
    log alpha; diffusers' timestep k is our t = (k + 1) / 1000); the same starting noise for
    everyone. Rivals: every diffusers scheduler with each timestep spacing and sigma variant,
    every k-diffusion sampler with each sigma schedule (``benchmarks/_rivals.py``). Ours: the
    samplers below on each named grid, and calibrated grids (``calibrate_grid``) fitted on
    *other* noise (calibration is not counted in the NFE). Every method ends with an
    x0-prediction, so all converge to D(x(t_min), t_min) with x(t) the exact probability-flow
    ODE solution; the reference is that, by adaptive RK45 (rtol = atol = 1e-10, in log-SNR).
    Error per sample ``||x - x_ref||``; median and RMS over samples; each library's best
    configuration per NFE budget (a method gets the most steps whose model calls fit).
(2) Overhead. Time per step outside the model (the model returns zeros), ours (``sample``,
    including grid construction and the final step) vs diffusers (``set_timesteps`` + the
    ``scale_model_input`` / ``step`` loop); medians of repeats; ratio printed.
(3) Quality of trained models at 5 / 10 / 20 NFE, calibrated grid against every named grid
    (dpmpp_2m) and against the ODE solution itself (a tight solver): points2d's sliced
    Wasserstein-2, image_digits' class accuracy and Fréchet distance at guidance 2
    (``--points`` / ``--digits`` checkpoints, or trained now; ``--seeds`` to average).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _rivals import (budgeted, counted, diffusers_methods, kdiffusion_denoiser,  # noqa: E402
                     kdiffusion_methods, run_diffusers)

from omnidiff.samplers import sample
from omnidiff.samplers.calibrate import calibrate_grid
from omnidiff.core.schedules import get_schedule
from omnidiff.core.gaussian_mixture import eight_gaussians, random_mixture

NFES = (5, 10, 20, 50)
NAMED = ("logsnr", "karras", "uniform", "trailing")
TWO_EVAL = {"heun", "dpmpp_2s_ancestral"}

# (label, sampler, options) run on every named grid
OURS = [
    ("ddim", "ddim", {}),
    ("dpmpp_2m", "dpmpp_2m", {}),
    ("dpmpp_3m", "dpmpp_3m", {}),
    ("unipc bh2 p2", "unipc", {"order": 2, "variant": "bh2"}),
    ("unipc bh1 p3", "unipc", {"order": 3, "variant": "bh1"}),
    ("deis p3", "deis", {"order": 3}),
    ("euler (sigma)", "euler", {"time": "sigma"}),
    ("heun (sigma)", "heun", {"time": "sigma"}),
    ("lms p4 (sigma)", "lms", {}),
]
# (label, sampler, options) calibrated at every NFE
CALIBRATED = [
    ("dpmpp_2m", "dpmpp_2m", {}),
    ("unipc bh2 p2", "unipc", {"order": 2, "variant": "bh2"}),
    ("unipc bh1 p3", "unipc", {"order": 3, "variant": "bh1"}),
]


def mixtures():
    """(label, GaussianMixture): fixed by rule (seed 0 for every dimension and width)."""
    out = [("8 gaussians 2D", eight_gaussians())]
    for dim in (2, 16, 64):
        for width in ("narrow", "wide"):
            out.append((f"{width} {dim}D", random_mixture(dim, width=width, seed=0)))
    return out


def _steps(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler in TWO_EVAL else nfe


def _errors(x, ref) -> tuple[float, float]:
    """(median, RMS) of the per-sample errors ||x - ref||."""
    e = (x.double() - ref).flatten(1).norm(dim=1)
    return float(e.median()), float(e.pow(2).mean().sqrt())


class Board:
    """Each library's best (median, RMS, label, calls) per NFE, and every row for the CSV."""

    def __init__(self, mixture: str, rows: list):
        self.mixture, self.rows, self.best = mixture, rows, {}

    def add(self, who: str, label: str, nfe: int, calls: int, med: float, rms: float):
        self.rows.append([self.mixture, who, label, nfe, calls, f"{med:.4e}", f"{rms:.4e}"])
        b = self.best.setdefault(who, {})
        if nfe not in b or med < b[nfe][0]:
            b[nfe] = (med, rms, label, calls)


def _ours(board, model, noise, ref, sched, nfes):
    for label, name, opts in OURS:
        for k in nfes:
            for grid in NAMED:
                st: dict = {}
                x = sample(model, noise, schedule=sched, prediction="eps", sampler=name,
                           steps=_steps(name, k), grid=grid, stats=st, **opts)
                board.add("omnidiff named", f"{label} {grid}", k, st["nfe"], *_errors(x, ref))


def _calibrated(board, model, noise, cal_noise, ref, sched, nfes, seconds):
    for label, name, opts in CALIBRATED:
        for k in nfes:
            t0 = time.perf_counter()
            grid = calibrate_grid(model, cal_noise, schedule=sched, prediction="eps",
                                  sampler=name, steps=k, rtol=1e-8, tol=2e-3,
                                  max_evals=80 * k if k <= 20 else 300, **opts)
            seconds[(label, k)] = time.perf_counter() - t0
            x = sample(model, noise, schedule=sched, prediction="eps", sampler=name,
                       grid=grid, **opts)
            board.add("omnidiff calibrated", label, k, k, *_errors(x, ref))


def _diffusers(board, model, noise, ref, nfes):
    try:
        methods = diffusers_methods()
    except ImportError as exc:
        print(f"    (diffusers not importable: {exc}; no diffusers rows)")
        return
    for label, make in methods:
        for k in nfes:
            try:
                r = budgeted(lambda s: run_diffusers(make, model, noise.clone(), s), k)
            except Exception:  # a configuration diffusers rejects (e.g. order vs steps)
                continue
            if r is not None:
                board.add("diffusers", label, k, r[1], *_errors(r[0], ref))


def _kdiffusion(board, model, noise, ref, sched, nfes):
    try:
        methods = kdiffusion_methods(sched)
    except ImportError as exc:
        print(f"    (k-diffusion not importable: {exc}; no k-diffusion rows)")
        return
    den = kdiffusion_denoiser(model, sched)
    for label, fn in methods:
        def run(steps, fn=fn):
            d, box = counted(den)
            return fn(d, noise.clone(), steps).double(), box[0]
        for k in nfes:
            try:
                r = budgeted(run, k)
            except Exception:
                continue
            if r is not None:
                board.add("k-diffusion", label, k, r[1], *_errors(r[0], ref))


WHO = ("omnidiff named", "omnidiff calibrated", "diffusers", "k-diffusion")


def accuracy(n: int, which: list[int] | None, nfes: tuple, csv_path: str | None) -> None:
    sched = get_schedule("linear")
    rows: list = []
    summary = []
    print(f"\n(1) ACCURACY  exact Gaussian mixtures, DDPM linear schedule, {n} evaluation "
          f"samples (noise seed 0), calibration on {n} others (seed 1); error per sample "
          "||x - x_ref||, each library's best per NFE: median / RMS  [method, model calls]")
    for i, (name, gm) in enumerate(mixtures()):
        if which is not None and i not in which:
            continue
        model = gm.model(sched, "eps")
        noise = torch.randn(n, gm.dim, generator=torch.Generator().manual_seed(0),
                            dtype=torch.float64)
        cal_noise = torch.randn(n, gm.dim, generator=torch.Generator().manual_seed(1),
                                dtype=torch.float64)
        t0 = time.perf_counter()
        ref = sample(model, noise, schedule=sched, prediction="eps", sampler="rk45",
                     rtol=1e-10, atol=1e-10)
        board, seconds = Board(name, rows), {}
        _ours(board, model, noise, ref, sched, nfes)
        _calibrated(board, model, noise, cal_noise, ref, sched, nfes, seconds)
        _diffusers(board, model, noise, ref, nfes)
        _kdiffusion(board, model, noise, ref, sched, nfes)
        print(f"\n  [{i}] {name} ({time.perf_counter() - t0:.0f} s; calibration "
              + ", ".join(f"{k} NFE {max(v for (lab, kk), v in seconds.items() if kk == k):.0f} s"
                          for k in nfes) + " at most per sampler)")
        for who in WHO:
            for k in nfes:
                b = board.best.get(who, {}).get(k)
                if b:
                    print(f"    {who:<20} NFE {k:>2}: {b[0]:.3e} / {b[1]:.3e}  [{b[2]}, {b[3]}]")
        for k in nfes:
            ours = min(board.best[w][k][0] for w in WHO[:2] if k in board.best.get(w, {}))
            rd, rk = (ours / board.best[who][k][0] if who in board.best else float("nan")
                      for who in ("diffusers", "k-diffusion"))
            summary.append((name, k, ours, rd, rk))
        sys.stdout.flush()
    print("\n  SUMMARY  omnidiff's best median error / each rival's best (at most 0.5 is the "
          "target at 5, 10, 20 NFE)")
    print(f"    {'mixture':<16}{'NFE':>5}{'ours':>11}{'/ diffusers':>13}{'/ k-diffusion':>15}")
    for name, k, ours, rd, rk in summary:
        flag = "" if k > 20 or max(rd, rk) <= 0.5 else "   above 0.5"
        print(f"    {name:<16}{k:>5}{ours:>11.3e}{rd:>13.3f}{rk:>15.3f}{flag}")
    hit = [max(rd, rk) <= 0.5 for name, k, ours, rd, rk in summary if k <= 20]
    print(f"    {sum(hit)} of {len(hit)} (mixture, NFE <= 20) cells at most 0.5 against both")
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["mixture", "library", "method", "nfe", "model_calls", "median", "rms"])
            w.writerows(rows)
        print(f"    every configuration's errors: {csv_path}")


def _ours_per_step(model, noise, sched, name, steps, repeats, state_dtype) -> float:
    """Median microseconds per model call of ``sample`` (grid, loop and final step)."""
    tt = []
    for _ in range(repeats):
        st = {}
        t0 = time.perf_counter()
        sample(model, noise, schedule=sched, prediction="eps", sampler=name,
               steps=steps if name != "heun" else (steps + 1) // 2, stats=st,
               state_dtype=state_dtype)
        tt.append((time.perf_counter() - t0) / st["nfe"])
    return statistics.median(tt) * 1e6


def overhead(repeats: int) -> None:
    print("\n(2) OVERHEAD per step outside the model (model returns zeros), median of "
          f"{repeats} repeats, microseconds")
    sched = get_schedule("linear")

    def zeros(x, t):
        return torch.zeros_like(x)

    try:
        makers = dict(diffusers_methods())
    except ImportError:
        makers = {}
    pairs = [("ddim", "DDIM trailing"), ("dpmpp_2m", "DPM++ 2M trailing"),
             ("dpmpp_3m", "DPM++ 3M trailing"), ("unipc", "UniPC bh2 p2 trailing"),
             ("deis", "DEIS p3 trailing"), ("euler", "Euler trailing"),
             ("heun", "Heun trailing"), ("lms", "LMS trailing")]
    steps = 50
    for shape in [(64, 2), (8, 3, 64, 64)]:
        noise = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        print(f"  x: {shape} float32, {steps} steps")
        print(f"  {'sampler':<12}{'ours':>10}{'diffusers':>12}{'ratio':>8}"
              f"{'ours, f64 state':>18}")
        for ours, theirs in pairs:
            o, o64 = (_ours_per_step(zeros, noise, sched, ours, steps, repeats, dt)
                      for dt in (None, torch.float64))
            d = float("nan")
            if theirs in makers:
                tt = []
                for _ in range(repeats):
                    sch = makers[theirs]()
                    t0 = time.perf_counter()
                    sch.set_timesteps(steps if ours != "heun" else (steps + 1) // 2)
                    x = noise * sch.init_noise_sigma
                    for k in sch.timesteps:
                        eps = zeros(sch.scale_model_input(x, k), k)
                        x = sch.step(eps, k, x).prev_sample
                    tt.append((time.perf_counter() - t0) / len(sch.timesteps))
                d = statistics.median(tt) * 1e6
            print(f"  {ours:<12}{o:>10.0f}{d:>12.0f}{o / d:>8.2f}{o64:>18.0f}")


def _train(recipe: str, tmp: str) -> str:
    print(f"\n(training {recipe} into {tmp} ...)", flush=True)
    subprocess.run([sys.executable, "-m", "omnidiff.cli", "train", f"recipe={recipe}",
                    f"out={tmp}/{recipe}", "logger=none"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return f"{tmp}/{recipe}/model.pt"


def _metric_cells(pipe, m, seeds, keys, **kw) -> str:
    """The metrics averaged over ``seeds`` (each ``m`` samples), as 'v1 / v2'."""
    vals = {key: [] for key in keys}
    for seed in seeds:
        x = pipe.generate(m, seed=seed, progress=False, **kw)
        res = pipe.metrics(x, n_ref=m)
        for key in keys:
            vals[key].append(res[key])
    return " / ".join(f"{statistics.mean(v):.4f}" for v in vals.values())


def quality(points: str | None, digits: str | None, n: int, seeds: int, nfes=(5, 10, 20)
            ) -> None:
    """Trained models: the calibrated dpmpp_2m grid against every named grid, and the ODE
    solution itself (unipc bh1 p3 at 25 NFE on the logsnr grid, a tight solver)."""
    import omnidiff
    tmp = tempfile.mkdtemp(prefix="omnidiff_bench_")
    for recipe, ckpt, guidance, keys, cal_nfes in (
            ("points2d", points, None, ("sliced_w2",), nfes),
            ("image_digits", digits, 2.0, ("class_acc", "fd"), nfes[:2])):
        ckpt = ckpt or _train(recipe, tmp)
        pipe = omnidiff.load(ckpt, device="cpu")
        m = min(n, 1024) if recipe == "image_digits" else n
        seed_list = list(range(seeds))
        print(f"\n(3) QUALITY  {recipe} ({ckpt}), {m} samples, mean over seeds {seed_list}, "
              f"dpmpp_2m{f', guidance {guidance}' if guidance else ''}; {', '.join(keys)}")
        print(f"  {'grid':<12}" + "".join(f"{f'NFE {k}':>24}" for k in nfes))
        cal_s = {}
        for k in cal_nfes:  # the U-Net's 20-NFE calibration takes too long for a CPU run
            t0 = time.perf_counter()
            pipe.calibrate("dpmpp_2m", k, guidance=guidance)
            cal_s[k] = time.perf_counter() - t0
        for grid in (*NAMED, "calibrated"):
            cells = [_metric_cells(pipe, m, seed_list, keys, steps=k, guidance=guidance,
                                   grid=grid) if grid != "calibrated" or k in cal_nfes else "-"
                     for k in nfes]
            print(f"  {grid:<12}" + "".join(f"{c:>24}" for c in cells))
        ode = _metric_cells(pipe, m, seed_list, keys, sampler="unipc", order=3, variant="bh1",
                            steps=25, guidance=guidance, grid="logsnr")
        print(f"  the ODE solution (unipc bh1 p3, 25 NFE): {ode}")
        print("  calibration (CPU): " + ", ".join(f"{k} NFE {v:.0f} s" for k, v in cal_s.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples, mixtures and NFE")
    ap.add_argument("--mixtures", default=None, help="comma-separated mixture indices")
    ap.add_argument("--csv", default=None, help="write every configuration's errors here")
    ap.add_argument("--points", default=None, help="a points2d model.pt for (3)")
    ap.add_argument("--digits", default=None, help="an image_digits model.pt for (3)")
    ap.add_argument("--seeds", type=int, default=1, help="seeds averaged in (3)")
    ap.add_argument("--skip-accuracy", action="store_true")
    ap.add_argument("--skip-overhead", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    which = [int(v) for v in args.mixtures.split(",")] if args.mixtures else None
    if not args.skip_accuracy:
        accuracy(128 if args.quick else 256, [0, 3] if args.quick and which is None else which,
                 (5, 10) if args.quick else NFES, args.csv)
    if not args.skip_overhead:
        overhead(3 if args.quick else 7)
    if not args.skip_quality:
        quality(args.points, args.digits, 1024 if args.quick else 4096, args.seeds)


if __name__ == "__main__":
    main()
