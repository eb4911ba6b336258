"""Few-step students against their teacher, side by side in one run.

For a problem the benchmark trains (or takes) a teacher, distils it by consistency
distillation (``omnidiff distill``, CD), and, for points2d, trains a consistency model from
data alone (CT, no teacher) and reflows a flow-schedule teacher (its Euler steps against the
student's); then it samples every model with the same noise seed and
reports quality and sampling time per sample:

* the teacher at 20 NFE (dpmpp_2m, its reference quality) and at 1, 2 and 4 steps of DDIM
  (what the teacher alone does with a student's budget), on its default grid and on
  ``logsnr_trailing`` (whose last time is not t_min, fairer at 2-4 steps);
* the students with the consistency sampler at 1, 2 and 4 steps;
* the ratio of each one's main metric to the teacher's at 20 NFE.

points2d's metric is the sliced 2-Wasserstein distance to held-out points (lower is better);
digits' are the class accuracy of the project's digits classifier (with the teacher's
guidance; the student has it distilled in) and the Fréchet distance of its features.

Usage::

    python benchmarks/few_step.py points2d [--teacher PATH] [--cd PATH] [--ct PATH]
                                           [--flow-teacher PATH] [--reflow PATH] [--out DIR]
    python benchmarks/few_step.py digits   [--teacher PATH] [--cd PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

# problem -> teacher recipe, distillation recipe, metrics shown (the first, lower is better, is
# the ratio's),
# the teacher's guidance, samples, and whether CT runs beside CD
PROBLEMS = {
    "points2d": dict(teacher="points2d", distill="distill_points2d",
                     metrics=("sliced_w2", "mmd_rbf"), guidance=None, n=4096, ct=True,
                     reflow=True),
    "digits": dict(teacher="image_digits", distill="distill_image_digits",
                   metrics=("fd", "class_acc", "precision", "recall"), guidance=2.0, n=500,
                   ct=False, reflow=False),
}
FLOW = ["schedule=flow", "loss=flow"]  # a flow-schedule teacher for reflow


def _run(command: str, args: list[str], out: Path) -> tuple[Path, float]:
    """``omnidiff <command> args`` into ``out`` (replacing an earlier benchmark run)."""
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.distill import distill_config
    from omnidiff.tasks.train import train

    args = [f"out={out}", "overwrite=true", "trainer.enable_progress_bar=false", *args]
    cfg = compose(overrides=args) if command == "train" else distill_config(args)
    t0 = time.perf_counter()
    run = train(cfg)
    return run / "model.pt", time.perf_counter() - t0


def _evaluate(pipe, label: str, sampler: str, steps: int, guidance, n: int,
              metrics: tuple[str, ...], grid: str | None = None) -> dict:
    t0 = time.perf_counter()
    x = pipe.generate(n, sampler=sampler, steps=steps, guidance=guidance, seed=0,
                      progress=False, **({"grid": grid} if grid else {}))
    ms = 1000 * (time.perf_counter() - t0) / n
    m = pipe.metrics(x, n_ref=n)
    return {"model": label, "sampler": sampler, "grid": pipe.last_grid, "nfe": steps, "ms": ms,
            **{k: m.get(k, float("nan")) for k in metrics}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("problem", choices=sorted(PROBLEMS))
    ap.add_argument("--teacher", help="the teacher's model.pt (default: train it)")
    ap.add_argument("--cd", help="a CD student's model.pt (default: distil the teacher)")
    ap.add_argument("--ct", help="a CT student's model.pt (points2d; default: train it)")
    ap.add_argument("--flow-teacher", help="a flow-schedule teacher (points2d; default: train)")
    ap.add_argument("--reflow", help="its reflowed student's model.pt (default: reflow it)")
    ap.add_argument("--out", default="runs/bench_few_step")
    args = ap.parse_args()
    p = PROBLEMS[args.problem]
    out = Path(args.out) / args.problem
    import omnidiff

    times = {}
    teacher = Path(args.teacher) if args.teacher else None
    if teacher is None:
        teacher, times["teacher"] = _run("train", [f"recipe={p['teacher']}"], out / "teacher")
    cd = Path(args.cd) if args.cd else None
    if cd is None:
        cd, times["cd"] = _run("distill", [f"teacher={teacher}"], out / "cd")
    ct = Path(args.ct) if args.ct else None
    if p["ct"] and ct is None:
        ct, times["ct"] = _run("distill", ["method=ct", f"recipe={p['distill']}"], out / "ct")
    flow = Path(args.flow_teacher) if args.flow_teacher else None
    reflow = Path(args.reflow) if args.reflow else None
    if p["reflow"] and flow is None:
        flow, times["flow teacher"] = _run("train", [f"recipe={p['teacher']}", *FLOW],
                                           out / "flow_teacher")
    if p["reflow"] and reflow is None:
        reflow, times["reflow"] = _run("distill", ["method=reflow", f"teacher={flow}"],
                                       out / "reflow")
    rows = []
    tp = omnidiff.load(teacher, device="cpu")
    rows.append(_evaluate(tp, "teacher", "dpmpp_2m", 20, p["guidance"], p["n"], p["metrics"]))
    for grid in (None, "logsnr_trailing"):  # its default grid, and one that keeps off t_min
        for k in (1, 2, 4) if grid is None else (2, 4):
            rows.append(_evaluate(tp, "teacher", "ddim", k, p["guidance"], p["n"], p["metrics"],
                                  grid=grid))
    for label, path in (("CD student", cd), ("CT student", ct)):
        if path is None:
            continue
        sp = omnidiff.load(path, device="cpu")
        for k in (1, 2, 4):
            rows.append(_evaluate(sp, label, "consistency", k, None, p["n"], p["metrics"]))
    key, ref = p["metrics"][0], rows[0][p["metrics"][0]]
    if flow is not None:  # reflow: the flow teacher and its straightened student, by Euler
        fp = omnidiff.load(flow, device="cpu")
        rows.append(_evaluate(fp, "flow teacher", "dpmpp_2m", 20, None, p["n"], p["metrics"]))
        for k in (1, 2, 4):  # Euler on the trailing grid: steps spaced evenly from t_max
            rows.append(_evaluate(fp, "flow teacher", "euler", k, None, p["n"], p["metrics"],
                                  grid="trailing"))
        rp = omnidiff.load(reflow, device="cpu")
        for k in (1, 2, 4):
            rows.append(_evaluate(rp, "reflow student", "euler", k, None, p["n"],
                                  p["metrics"]))
    print(f"\n{args.problem}: {p['n']} samples per row, seed 0; ratio = {key} / the teacher's "
          "at 20 NFE")
    print("| model | sampler | grid | NFE | " + " | ".join(p["metrics"])
          + " | ratio | ms / sample |")
    print("|---|---|---|---|" + "---|" * len(p["metrics"]) + "---|---|")
    for r in rows:
        vals = " | ".join(f"{r[k]:.4g}" for k in p["metrics"])
        print(f"| {r['model']} | {r['sampler']} | {r['grid']} | {r['nfe']} | {vals} | "
              f"{r[key] / ref:.2f} | {r['ms']:.3f} |")
    if times:
        print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


if __name__ == "__main__":
    main()
