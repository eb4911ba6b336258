"""Few-step students against their teacher and the sampling floor, side by side in one run.

For a problem the benchmark trains (or takes) a teacher, then distils it with each student
method asked for (``omnidiff distill``; ``--students``, default: every method the problem
runs), samples every model from the same noise seed and prints one table:

* the **floor**: the same metrics for samples of the true law (fresh draws of an exact law,
  else the problem's training data; independent of the held-out reference), what a perfect
  model would score with this many samples;
* the teacher at 20 NFE (dpmpp_2m, its reference quality; on the mixtures on the karras grid,
  which sharpens narrow modes: 2D 0.063 against 0.067 on the default logsnr grid, 8D and two
  moons the same either way) and at 1, 2 and 4 steps of DDIM
  on ``logsnr_trailing`` (what the teacher alone does with a student's budget);
* each student at 1, 2 and 4 steps of its own sampler;
* the ratio of each row's main metric to the teacher's at 20 NFE.

Problems:

* ``mixture2d`` / ``mixture8d``: the points domain's ``mixture`` density (eight narrow,
  anisotropic Gaussian modes, its law known exactly) in 2 and 8 dimensions, 65 536 samples a
  row, each row the mean over 3 noise seeds (the floor: over 3 draws of the law), against a
  stratified reference (each mode exactly its share): sliced W2, ``mode_weight_err``
  (largest error of a mode's share) and ``mode_width`` (RMS of samples whitened by their
  mode's covariance: 1 for exact samples). With narrow modes, sliced W2 is mostly a
  measure of mode weights: the 0.1 % weight noise of 65 536 exact samples alone scores 0.04;
* ``points2d``: two moons, 4096 samples, the mean of 5 noise seeds (sliced W2 sits near its
  floor here, and one seed's varies from 0.03 to 0.07);
* ``digits``: image_digits with guidance 2 (distilled into the students), 500 samples, the mean
  of 4 noise seeds (one seed's FD varies by about 0.1): Fréchet distance,
  class accuracy, precision, recall;
* ``tones``: audio_tones with guidance 1.5: pitch accuracy and the mel profile gap.

Student methods (``--students``, comma-separated): ``cd`` (the default ``omnidiff distill``),
``cd_ema`` (CD as it was before: an EMA target of 0.95 and 18 fixed levels), ``cd_ict`` (CD
with iCT's log-normal levels as set for images, where a recipe chooses others), ``ect`` (easy
consistency tuning: consistency training started from the teacher's weights), ``cd_2seg``
(a multistep student trained for its 2-step grid, sampled by DDIM), ``ct``
(consistency training from data alone), ``reflow`` (a flow-schedule teacher, reflowed).

Usage::

    python benchmarks/few_step.py mixture8d [--teacher PATH] [--students cd,ect] [--out DIR]
                                            [--student NAME=PATH ...] [--set KEY=V ...]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from omnidiff.core.conditions import cat_conds, index_cond

MIXTURE = ["recipe=points2d", "data.name=mixture"]
SHARP = ["data.batch_size=1024", "trainer.max_steps=5000", "optim.decay_steps=5000",
         "optim.final_lr=0.05"]
# problem -> teacher arguments, the grid of its 20-NFE reference (default: the model's),
# metrics shown (the first, lower is better, is the ratio's), the teacher's guidance, samples
# per row, noise seeds each row averages over (the floor: as many draws of the law), the
# student methods run by default
PROBLEMS = {
    # a larger batch and a decaying rate bring the teacher's mode weights to within 0.01 (8D)
    # and its modes to 1.2x their width (2D; 1.6x with points2d's own settings)
    "mixture2d": dict(teacher=[*MIXTURE, "data.dim=2", *SHARP], grid="karras",
                      metrics=("sliced_w2", "mode_weight_err", "mode_width"), guidance=None,
                      n=65536, seeds=3,
                      students=("cd", "cd_ict", "cd_ema", "ect", "cd_2seg", "ct")),
    "mixture8d": dict(teacher=[*MIXTURE, "data.dim=8", *SHARP], grid="karras",
                      metrics=("sliced_w2", "mode_weight_err", "mode_width"), guidance=None,
                      n=65536, seeds=3,
                      students=("cd", "cd_ict", "cd_ema", "ect", "cd_2seg", "ct")),
    "points2d": dict(teacher=["recipe=points2d"], metrics=("sliced_w2", "mmd_rbf"),
                     guidance=None, n=4096, seeds=5,
                     students=("cd", "cd_ema", "ect", "ct", "reflow")),
    "digits": dict(teacher=["recipe=image_digits"],
                   metrics=("fd", "class_acc", "precision", "recall"), guidance=2.0, n=500,
                   seeds=4, students=("cd",)),
    "tones": dict(teacher=["recipe=audio_tones", "trainer.max_steps=600",
                           "eval.n_samples=96"],
                  metrics=("mel_profile_db", "pitch_acc", "in_tune"), guidance=1.5, n=120,
                  students=("cd",)),
}
# student method -> the arguments of its `omnidiff distill` run ({teacher}: the teacher's
# model.pt; {data}: the teacher's data arguments, for a student that needs no teacher)
STUDENTS = {
    "cd": ["teacher={teacher}"],
    "cd_ema": ["teacher={teacher}", "distill.target_ema=0.95", "distill.levels=18"],
    "cd_ict": ["teacher={teacher}", "distill.p_mean=-1.1", "distill.p_std=2.0"],
    "ect": ["method=ct", "teacher={teacher}"],
    "cd_2seg": ["teacher={teacher}", "distill.segments=2"],
    "ct": ["method=ct", "recipe=distill_points2d", "{data}"],
    "reflow": ["method=reflow", "teacher={flow}"],
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


def _row(label: str, sampler: str, grid, nfe, ms: float, m: dict, metrics) -> dict:
    return {"model": label, "sampler": sampler, "grid": grid, "nfe": nfe, "ms": ms,
            **{k: m.get(k, float("nan")) for k in metrics}}


def _mean(rows: list[dict]) -> dict:
    return {k: sum(r.get(k, float("nan")) for r in rows) / len(rows) for k in rows[0]}


def _evaluate(pipe, label: str, sampler: str, steps: int, guidance, n: int,
              metrics: tuple[str, ...], grid: str | None = None, seeds: int = 1) -> dict:
    """One row: the metrics of ``n`` samples, averaged over noise seeds 0 .. seeds - 1."""
    t0, runs = time.perf_counter(), []
    for seed in range(seeds):
        x = pipe.generate(n, sampler=sampler, steps=steps, guidance=guidance, seed=seed,
                          progress=False, **({"grid": grid} if grid else {}))
        runs.append(pipe.metrics(x, n_ref=n))
    ms = 1000 * (time.perf_counter() - t0) / (n * seeds)
    return _row(label, sampler, pipe.last_grid, steps, ms, _mean(runs), metrics)


def _true_samples(pipe, n: int, draws: int) -> list[tuple[torch.Tensor, object]]:
    """``draws`` independent sets of ``n`` samples of the true law with their conditions:
    fresh draws of an exact law where the data has one (``data.law``), else the first ``n``
    training samples (one set)."""
    data = pipe.data(setup=True)
    law = getattr(data, "law", None)
    if law is not None:
        return [(law.sample(n, torch.Generator().manual_seed(1000 + k))[0].float(), None)
                for k in range(draws)]
    xs, conds = [], []
    for batch in data.train_dataloader():
        xs.append(batch["x"])
        conds.append(batch.get("cond"))
        if sum(len(x) for x in xs) >= n:
            break
    x = torch.cat(xs)[:n]
    return [(x, None if conds[0] is None else index_cond(cat_conds(conds), slice(0, len(x))))]


def _floor(pipe, n: int, metrics: tuple[str, ...], draws: int = 1) -> dict:
    """The metrics of samples of the true law, independent of the held-out reference (mean
    over ``draws`` sets where the law is exact): a perfect model's score."""
    runs = [pipe.metrics(x, n_ref=n, cond=c) for x, c in _true_samples(pipe, n, draws)]
    return _row("floor (the true law)", "-", "-", "-", float("nan"), _mean(runs), metrics)


def _students(args, p: dict, out: Path, teacher: Path, times: dict) -> dict[str, Path]:
    """Each student method's model.pt: given (``--student NAME=PATH``) or distilled."""
    given = dict(s.split("=", 1) for s in args.student)
    names = args.students.split(",") if args.students else list(p["students"])
    unknown = [s for s in [*names, *given] if s not in STUDENTS]
    if unknown:
        raise SystemExit(f"unknown student {unknown[0]!r}; choose from: {', '.join(STUDENTS)}")
    paths, flow = {}, None
    for name in names:
        if name in given:
            paths[name] = Path(given[name])
            continue
        if name == "reflow" and flow is None:
            flow, times["flow teacher"] = _run("train", [*p["teacher"], *FLOW],
                                               out / "flow_teacher")
        data = [d for d in p["teacher"] if d.startswith("data.")]
        argv = [x for a in STUDENTS[name] for x in (
            data if a == "{data}" else [a.format(teacher=teacher, flow=flow)])]
        paths[name], times[name] = _run("distill", [*argv, *args.set], out / name)
    if flow is not None:  # reflow's teacher, for its own rows
        paths["flow teacher"] = flow
    return paths


def _print(problem: str, p: dict, rows: list[dict], times: dict) -> None:
    key = p["metrics"][0]
    ref = next(r for r in rows if r["model"] == "teacher")[key]
    seeds = p.get("seeds", 1)
    print(f"\n{problem}: {p['n']} samples per row, "
          + (f"mean over seeds 0-{seeds - 1}" if seeds > 1 else "seed 0")
          + f"; ratio = {key} / the teacher's at 20 NFE")
    print("| model | sampler | grid | NFE | " + " | ".join(p["metrics"])
          + " | ratio | ms / sample |")
    print("|---|---|---|---|" + "---|" * len(p["metrics"]) + "---|---|")
    for r in rows:
        vals = " | ".join(f"{r[k]:.4g}" for k in p["metrics"])
        print(f"| {r['model']} | {r['sampler']} | {r['grid']} | {r['nfe']} | {vals} | "
              f"{r[key] / ref:.2f} | {r['ms']:.3f} |")
    if times:
        print("training seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in times.items()))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("problem", choices=sorted(PROBLEMS))
    ap.add_argument("--teacher", help="the teacher's model.pt (default: train it)")
    ap.add_argument("--students", help=f"comma-separated, from: {', '.join(STUDENTS)} "
                    "(default: the problem's)")
    ap.add_argument("--student", action="append", default=[], metavar="NAME=PATH",
                    help="a student already distilled (repeatable)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=V",
                    help="an override for every distillation (repeatable)")
    ap.add_argument("--out", default="runs/bench_few_step")
    args = ap.parse_args()
    p = PROBLEMS[args.problem]
    out = Path(args.out) / args.problem
    import omnidiff

    times: dict[str, float] = {}
    teacher = Path(args.teacher) if args.teacher else None
    if teacher is None:
        teacher, times["teacher"] = _run("train", p["teacher"], out / "teacher")
    students = _students(args, p, out, teacher, times)
    n, metrics, guidance, seeds = p["n"], p["metrics"], p["guidance"], p.get("seeds", 1)
    tp = omnidiff.load(teacher, device="cpu")
    rows = [_floor(tp, n, metrics, draws=seeds),
            _evaluate(tp, "teacher", "dpmpp_2m", 20, guidance, n, metrics,
                      grid=p.get("grid"), seeds=seeds)]
    rows += [_evaluate(tp, "teacher", "ddim", k, guidance, n, metrics, grid="logsnr_trailing",
                       seeds=seeds)
             for k in (1, 2, 4)]
    if "flow teacher" in students:
        fp = omnidiff.load(students.pop("flow teacher"), device="cpu")
        rows.append(_evaluate(fp, "flow teacher", "dpmpp_2m", 20, None, n, metrics,
                              seeds=seeds))
    for name, path in students.items():
        sp = omnidiff.load(path, device="cpu")
        default = sp.default_sampler
        rows += [_evaluate(sp, f"{name} student", default["name"], k, None, n, metrics,
                           grid=default.get("grid"), seeds=seeds) for k in (1, 2, 4)]
    _print(args.problem, p, rows, times)


if __name__ == "__main__":
    main()
