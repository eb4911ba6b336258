"""Other people's models, measured: a diffusers UNet2DModel trained by omnidiff, exported to a
diffusers folder, and omnidiff's tools on that folder, side by side in one run.

1. Train ``recipe=image_digits_diffusers`` (class-conditional digits, diffusers' UNet2DModel,
   the discrete squaredcos_cap_v2 schedule, v-prediction) unless ``--teacher`` is given, and
   ``omnidiff export`` it to a diffusers folder.
2. Reproduction: diffusers' own DDIMScheduler loop on the exported folder (with
   ``class_labels``: its DDIMPipeline takes none) against omnidiff's DDIM on
   ``grid="diffusers"`` from the same noise; max |difference| over the samples.
3. Quality of the folder loaded back (dpmpp_2m, 20 NFE, guidance 2): the project's digits
   judge (class accuracy) and Fréchet distance, beside the run's own model.pt.
4. Calibration at 5 NFE (dpmpp_2m, guidance 2): the endpoint error on held-out noise (per
   sample, against an rk45 solution at rtol 1e-6), calibrated grid against every named grid
   and diffusers' own timesteps; the grid is fitted on other noise.
5. Likelihood of held-out digits (bits/dim, dequantised to the data's 17 levels).
6. ``omnidiff distill teacher=FOLDER recipe=distill_image_digits``: the 2-step student's
   Fréchet distance against the teacher's at 20 NFE (unless ``--student`` is given).

Usage::

    python benchmarks/diffusers_interop.py [--teacher RUN/model.pt] [--student model.pt]
                                           [--n 500] [--out runs/bench_diffusers]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import omnidiff
from omnidiff.cli.commands import main as cli

GUIDANCE = 2.0
GRIDS = ("uniform", "logsnr", "karras", "trailing", "diffusers", "calibrated")


def _train(args: list[str]) -> float:
    t0 = time.perf_counter()
    if cli(args) != 0:
        raise SystemExit(f"omnidiff {' '.join(args)} failed")
    return time.perf_counter() - t0


def _reproduction(folder: Path, n: int = 16, steps: int = 20) -> float:
    """max |omnidiff DDIM - diffusers' DDIMScheduler loop| from the same noise and labels."""
    import diffusers

    unet = diffusers.UNet2DModel.from_pretrained(folder, subfolder="unet",
                                                 low_cpu_mem_usage=False).eval()
    sched = diffusers.DDIMScheduler.from_pretrained(folder, subfolder="scheduler")
    noise = torch.randn(n, 1, 8, 8, generator=torch.Generator().manual_seed(5))
    labels = torch.arange(n) % 10
    sched.set_timesteps(steps)
    x = noise.clone()
    with torch.no_grad():
        for t in sched.timesteps:
            x = sched.step(unet(x, t, class_labels=labels).sample, t, x).prev_sample
    ours = omnidiff.load(folder, device="cpu").generate(
        noise=noise, cond=labels, sampler="ddim", steps=steps, grid="diffusers", clip_x0=None)
    return float((ours - x).abs().max())


def _quality(pipe, n: int) -> dict:
    x = pipe.generate(n, sampler="dpmpp_2m", steps=20, guidance=GUIDANCE, seed=0,
                      progress=False)
    return pipe.metrics(x, n_ref=min(n, 360))


def _calibration(folder: Path, n: int = 64, nfe: int = 5) -> dict:
    """Median per-sample endpoint error at ``nfe`` against rk45, for every grid."""
    pipe = omnidiff.load(folder, device="cpu")
    t0 = time.perf_counter()
    pipe.calibrate("dpmpp_2m", nfe, guidance=GUIDANCE)
    seconds = time.perf_counter() - t0
    gen = torch.Generator().manual_seed(12345)  # held out: not calibration's noise
    noise = torch.randn(n, 1, 8, 8, generator=gen)
    labels = torch.arange(n) % 10
    ref = pipe.generate(noise=noise, cond=labels, guidance=GUIDANCE, sampler="rk45",
                        rtol=1e-6, atol=1e-6, clip_x0=None)
    out = {"calibration_s": seconds}
    for grid in GRIDS:
        x = pipe.generate(noise=noise, cond=labels, guidance=GUIDANCE, sampler="dpmpp_2m",
                          steps=nfe, grid=grid, clip_x0=None)
        out[grid] = float((x - ref).flatten(1).norm(dim=1).median())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", help="an image_digits_diffusers model.pt (default: train)")
    ap.add_argument("--student", help="a CD student of the exported folder (default: distil)")
    ap.add_argument("--n", type=int, default=500, help="samples per quality row")
    ap.add_argument("--out", default="runs/bench_diffusers")
    args = ap.parse_args()
    out = Path(args.out).resolve()
    times = {}
    teacher = Path(args.teacher) if args.teacher else out / "teacher" / "model.pt"
    if not args.teacher:
        times["train"] = _train(["train", "recipe=image_digits_diffusers",
                                 f"out={teacher.parent}", "overwrite=true",
                                 "trainer.enable_progress_bar=false"])
    folder = out / "exported"
    _train(["export", f"checkpoint={teacher}", f"out={folder}", "overwrite=true"])
    diff = _reproduction(folder)
    print(f"\nreproduction: omnidiff DDIM (grid=diffusers) vs diffusers' DDIMScheduler loop, "
          f"20 steps, 16 samples: max |difference| {diff:.2e}")
    own, back = omnidiff.load(teacher, device="cpu"), omnidiff.load(folder, device="cpu")
    q_own, q_back = _quality(own, args.n), _quality(back, args.n)
    print(f"\nquality (dpmpp_2m, 20 NFE, guidance {GUIDANCE}, {args.n} samples):")
    print("| model | class_acc | fd | precision | recall |\n|---|---|---|---|---|")
    for label, q in (("run's model.pt", q_own), ("exported folder", q_back)):
        print(f"| {label} | {q['class_acc']:.3f} | {q['fd']:.4g} | {q['precision']:.3f} | "
              f"{q['recall']:.3f} |")
    cal = _calibration(folder)
    best = min((v, g) for g, v in cal.items() if g not in ("calibrated", "calibration_s"))
    print(f"\ncalibration of the folder at 5 NFE (dpmpp_2m, guidance {GUIDANCE}; "
          f"{cal['calibration_s']:.0f} s): median endpoint error vs rk45 on held-out noise")
    print("| grid | error |\n|---|---|")
    for g in GRIDS:
        print(f"| {g} | {cal[g]:.4g} |")
    print(f"calibrated / best named ({best[1]}): {cal['calibrated'] / best[0]:.3f}")
    x, labels = back.reference(256)
    for given, cond in (("their labels", labels), ("the null class", None)):
        ll = back.log_likelihood(x, cond=cond, dequantize=17)
        print(f"likelihood of 256 held-out digits given {given}: "
              f"{float(ll.bits_per_dim.mean()):.3f} bits/dim (nfe {ll.nfe})")
    student = Path(args.student) if args.student else out / "student" / "model.pt"
    if not args.student:
        times["distill"] = _train(["distill", f"teacher={folder}",
                                   "recipe=distill_image_digits", f"out={student.parent}",
                                   "overwrite=true", "trainer.enable_progress_bar=false"])
    sp = omnidiff.load(student, device="cpu")
    rows = [("teacher (folder)", "dpmpp_2m", 20, GUIDANCE, back)]
    rows += [("student", "consistency", k, None, sp) for k in (1, 2, 4)]
    print(f"\nstudent of the folder ({args.n} samples; ratio = fd / the teacher's at 20 NFE)")
    print("| model | sampler | NFE | fd | class_acc | ratio |\n|---|---|---|---|---|---|")
    ref = None
    for label, sampler, k, g, p in rows:
        m = p.metrics(p.generate(args.n, sampler=sampler, steps=k, guidance=g, seed=0,
                                 progress=False), n_ref=min(args.n, 360))
        ref = m["fd"] if ref is None else ref
        print(f"| {label} | {sampler} | {k} | {m['fd']:.4g} | {m['class_acc']:.3f} | "
              f"{m['fd'] / ref:.2f} |")
    if times:
        print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
