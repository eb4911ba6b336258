"""How long each CPU recipe takes with its defaults on this machine: training and evaluation.

    python benchmarks/recipe_times.py                        # every CPU recipe
    python benchmarks/recipe_times.py image_digits points2d  # some of them
    python benchmarks/recipe_times.py --steps 40 --eval-fraction 0.5

Each recipe trains ``--steps`` optimizer steps with its own defaults (threads, batch size,
network), one run at a time, in its own process; the run's median step time
(``metrics.json`` ``step_seconds``) times the recipe's ``trainer.max_steps`` is its training
time. Its final evaluation runs on ``--eval-fraction`` of the recipe's ``eval.n_samples`` and
is scaled back up (sampling costs the same per batch whatever the weights), times the number of
evaluations the recipe makes (a periodic ``eval.every_n_steps`` adds some). Latent recipes get
the autoencoder of their stage-1 recipe from this run, distillation recipes a teacher from it,
so the list order matters. Run it on an idle machine: other work on the same cores slows
every number. It prints one row per recipe and writes ``recipe_times.json`` under ``--out``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CLI = [sys.executable, "-m", "omnidiff.cli"]
# CPU recipes in dependency order: an autoencoder before its latent model, a teacher before
# its student
RECIPES = ("points2d", "points_digits", "image_digits", "image_digits32_ae",
           "image_digits32_latent", "image_text_digits", "audio_tones", "audio_tones_ae",
           "audio_tones_latent", "audio_unconditional", "audio_vocoder", "audio_text_tones",
           "video_moving_digits", "video_text_digits", "distill_points2d",
           "distill_image_digits", "distill_audio_tones")
NEEDS = {"image_digits32_latent": ("autoencoder", "image_digits32_ae"),
         "audio_tones_latent": ("autoencoder", "audio_tones_ae"),
         "distill_points2d": ("teacher", "points2d"),
         "distill_image_digits": ("teacher", "image_digits"),
         "distill_audio_tones": ("teacher", "audio_tones")}


def recipe_settings(recipe: str) -> dict:
    """The recipe's steps and evaluation settings, from its composed config."""
    from omnidiff.tasks.config import compose

    cfg = compose(recipe, [])
    ev = cfg.eval
    return {"max_steps": int(cfg.trainer.max_steps), "n_samples": int(ev.n_samples),
            "every": int(ev.get("every_n_steps") or 0), "threads": cfg.get("threads")}


def measure(recipe: str, root: Path, steps: int, fraction: float, models: dict[str, Path]
            ) -> dict:
    """One short run of ``recipe``: its step time and its evaluation's seconds."""
    s = recipe_settings(recipe)
    n_eval = max(1, round(s["n_samples"] * fraction))
    out = root / recipe
    args = [f"out={out}", f"trainer.max_steps={steps}", "eval.every_n_steps=0",
            f"eval.n_samples={n_eval}", "trainer.enable_progress_bar=false"]
    if recipe in NEEDS:
        key, source = NEEDS[recipe]
        args.append(f"{key}={models[source]}")
    cmd = ([*CLI, "distill", f"recipe={recipe}", *args] if recipe.startswith("distill_")
           else [*CLI, "train", f"recipe={recipe}", *args])
    if recipe in ("distill_image_digits", "distill_points2d"):
        cmd.append("distill.grid_samples=0")  # the student's grid choice is not timed here
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"{recipe} failed:\n{done.stderr[-3000:]}")
    models[recipe] = out / "model.pt"
    summary = json.loads((out / "metrics.json").read_text())
    train_s = summary["step_seconds"] * s["max_steps"]
    evals = 1 + (s["max_steps"] // s["every"] if s["every"] else 0)
    eval_s = summary["eval_seconds"] * s["n_samples"] / n_eval * evals
    return {"recipe": recipe, **s, "threads": s["threads"], "step_seconds":
            summary["step_seconds"], "train_minutes": train_s / 60,
            "eval_minutes": eval_s / 60, "evaluations": evals,
            "eval_share": eval_s / train_s, "measured_n": n_eval, "run_seconds": wall}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("recipes", nargs="*", default=list(RECIPES))
    ap.add_argument("--steps", type=int, default=30, help="optimizer steps per recipe")
    ap.add_argument("--eval-fraction", type=float, default=0.25,
                    help="share of eval.n_samples drawn (scaled back up)")
    ap.add_argument("--out", type=Path, default=None, help="folder for the runs")
    args = ap.parse_args()
    root = args.out or Path(tempfile.mkdtemp(prefix="recipe_times_"))
    wanted = set(args.recipes)
    todo = [r for r in RECIPES if r in wanted or any(
        NEEDS.get(w, ("", ""))[1] == r for w in wanted)]
    print(f"{'recipe':24s} {'steps':>6s} {'thr':>4s} {'s/step':>7s} {'train':>8s} "
          f"{'n_eval':>6s} {'evals':>5s} {'eval':>8s} {'eval/train':>10s}", flush=True)
    rows, models = [], {}
    for recipe in todo:
        row = measure(recipe, root, args.steps, args.eval_fraction, models)
        rows.append(row)
        print(f"{recipe:24s} {row['max_steps']:6d} {str(row['threads'] or '-'):>4s} "
              f"{row['step_seconds']:7.3f} {row['train_minutes']:7.1f}m {row['n_samples']:6d} "
              f"{row['evaluations']:5d} {row['eval_minutes']:7.2f}m "
              f"{row['eval_share']:10.2f}", flush=True)
    (root / "recipe_times.json").write_text(json.dumps(rows, indent=2) + "\n")
    print("\n| recipe | steps | threads | s / step | training | evaluation | eval / train |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| `{r['recipe']}` | {r['max_steps']} | {r['threads'] or 'all'} | "
              f"{r['step_seconds']:.3f} | {r['train_minutes']:.1f} min | "
              f"{r['eval_minutes'] * 60:.0f} s | {r['eval_share']:.2f} |")
    over = [r["recipe"] for r in rows if r["eval_share"] > 0.2 + 1e-9]
    print(f"wrote {root / 'recipe_times.json'}; evaluation above a fifth of training: "
          f"{', '.join(over) or 'none'}")


if __name__ == "__main__":
    main()
