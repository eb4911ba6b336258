"""``omnidiff train`` (one run, or a sweep with ``-m``) and ``omnidiff distill``."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from omnidiff.errors import UsageError
from omnidiff.tasks.config import compose, validate
from omnidiff.tasks.distill import distill_config
from omnidiff.tasks.launchers import check_single_run, launch_options, run_local, submit_slurm
from omnidiff.tasks.prepare import prepare
from omnidiff.tasks.sweeps import (
    DDP_ENV,
    MULTIRUN_FLAGS,
    SWEEPS_DIR,
    Job,
    SweepLog,
    config_choices,
    continuing,
    ddp_worker_job,
    each_job,
    job_overrides,
    leave_ddp,
    new_folder,
    parse_sweep,
    report,
    run_sweep,
    sweep_folder,
    train_finished,
)
from omnidiff.tasks.train import train

__all__ = ["cmd_train", "cmd_distill", "cmd_prepare", "train_sweep"]


def train_sweep(args: list[str]) -> int:
    """``omnidiff train -m ...``: compose and check every job, then run them with the sweep's
    launcher (:mod:`omnidiff.tasks.launchers`)."""
    sweep = parse_sweep(args, config_choices)
    worker = ddp_worker_job(sweep)
    if worker is not None:  # a process Lightning's DDP launcher started for one job
        job_dir, job = worker
        train(compose(overrides=job_overrides(sweep, job, job_dir,
                                               sweep.fixed_value("resume") == "auto")))
        return 0
    folder, resuming = sweep_folder(sweep, new_folder(SWEEPS_DIR), SWEEPS_DIR)
    folder = folder.absolute()

    def checked(job: Job) -> Any:
        cfg = compose(overrides=job_overrides(sweep, job, folder / job.name, resuming))
        validate(cfg)
        if cfg.get("stage") == "distill":
            raise UsageError("a stage=distill recipe is swept by `omnidiff distill`, which "
                             "does not sweep yet; run one student per command")
        return cfg

    configs = each_job(sweep, checked)
    opts = launch_options(configs[sweep.jobs[0].name], sweep.keys)
    at_once = f", {opts.jobs} at a time ({opts.name})" if opts.name != "sequential" else ""
    print(f"omnidiff sweep: {len(sweep.jobs)} job(s) over {', '.join(sweep.keys) or 'nothing'}"
          f" in {folder}{at_once}", flush=True)
    again = "omnidiff train -m " + shlex.join(continuing(args, folder))

    def finished(job: Job, job_dir: Path) -> bool:
        return resuming and not sweep.overwrite and train_finished(configs[job.name], job_dir)

    if opts.name == "sequential":
        def run(job: Job, job_dir: Path) -> None:
            env = {k: os.environ.get(k) for k in DDP_ENV}
            try:
                _report_run(train(configs[job.name]))
            finally:
                leave_ddp(env)

        jobs = run_sweep(folder, sweep, "train", run, finished, again)
        return report(folder, jobs, again)

    def argv_of(job: Job) -> list[str]:
        return ["train", *job_overrides(sweep, job, folder / job.name, resuming)]

    log = SweepLog(folder, sweep, "train")
    if opts.name == "local":
        jobs = run_local(folder, sweep, log, argv_of, finished, opts.jobs, again)
        return report(folder, jobs, again)
    jobs = submit_slurm(folder, sweep, log, argv_of, finished, opts, again)
    if any(j.status == "submitted" for j in jobs):
        print(f"omnidiff sweep: submitted; follow with squeue, then `omnidiff compare {folder}`"
              f" (`{again}` submits again what has not finished)")
        return 0
    return report(folder, jobs, again)


def _compose_run(args: list[str], compose: Any, example: str) -> Any:
    """The composed config of a training command, or None after ``--print-config`` printed
    it; a flag other than that is a one-line usage error."""
    from omegaconf import OmegaConf

    print_config = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    flags = [a for a in args if a.startswith("-")]
    if flags:
        raise UsageError(f"unknown flag {flags[0]!r}; overrides are key=value (e.g. {example})")
    cfg = compose(args)
    if print_config:
        print(OmegaConf.to_yaml(cfg), end="")
        return None
    return cfg


def _train_and_report(cfg: Any) -> int:
    _report_run(train(cfg))
    return 0


def cmd_train(args: list[str]) -> int:
    if any(a in MULTIRUN_FLAGS for a in args):
        rest = [a for a in args if a not in MULTIRUN_FLAGS]
        flags = [a for a in rest if a.startswith("-")]
        if flags:
            raise UsageError(f"{flags[0]!r} does not go with -m; a sweep takes key=value "
                             "overrides (e.g. optim.lr=1e-3,3e-3 loss=v,eps)")
        return train_sweep(rest)
    cfg = _compose_run(args, lambda a: compose(overrides=a), "trainer.max_steps=100")
    if cfg is None:
        return 0
    if cfg.get("stage") == "distill":  # the teacher's settings are applied by distill only
        what, recipe = ((f"recipe {cfg.recipe}", f" recipe={cfg.recipe}") if cfg.get("recipe")
                        else ("stage=distill", ""))
        raise UsageError(f"{what} trains a few-step student: run `omnidiff distill "
                         f"teacher=<model.pt>{recipe}` (method=ct needs no teacher)")
    check_single_run(cfg)
    if not cfg.get("recipe") and not any(a.startswith("domain=") for a in args):
        print("omnidiff: no recipe given; training the default domain "
              f"{cfg.domain!r} (see `omnidiff recipes`)", file=sys.stderr)
    return _train_and_report(cfg)


def cmd_distill(args: list[str]) -> int:
    """``omnidiff distill teacher=PATH [method=cd|ct|reflow] [recipe=NAME] [overrides]``: a
    few-step student (:mod:`omnidiff.training.distill_module`), trained like any run."""
    cfg = _compose_run(args, distill_config, "teacher=runs/points2d/RUN/model.pt method=cd")
    return 0 if cfg is None else _train_and_report(cfg)


def cmd_prepare(args: list[str]) -> int:
    """``omnidiff prepare recipe=NAME out=DIR [data.KEY=V ...]``: the recipe's training data
    as shards for ``data.stream=DIR`` (:mod:`omnidiff.tasks.prepare`)."""
    cfg = _compose_run(args, lambda a: compose(overrides=a), "recipe=image_digits out=shards")
    if cfg is None:
        return 0
    out, info = prepare(cfg)
    size = info["bytes"] / 2**20
    print(f"shards: {out}  ({info['samples']} samples of {cfg.domain} {info['event_shape']}, "
          f"{info['blocks']} blocks of {info['block']}, {size:.1f} MiB, {info['seconds']} s)")
    recipe = f"recipe={cfg.recipe} " if cfg.get("recipe") else f"domain={cfg.domain} "
    print(f"train from them: omnidiff train {recipe}data.stream={out}")
    return 0


def _report_run(run_dir: Path) -> None:
    if not run_dir.exists():  # a fast_dev_run's folder, removed
        return
    summary = {}
    if (run_dir / "metrics.json").exists():
        summary = json.loads((run_dir / "metrics.json").read_text())
    final = {k: v for k, v in (summary.get("final") or {}).items()
             if isinstance(v, (int, float))}
    print(f"run: {run_dir}")
    if "loss_first" in summary:
        print(f"loss: {summary['loss_first']:.4f} -> {summary['loss_last']:.4f} "
              f"in {summary.get('global_step')} steps")
    if "train_seconds" in summary:
        per_step = (f" ({summary['step_seconds']:.3g} s a step)"
                    if summary.get("step_seconds") else "")
        print(f"time: training {summary['train_seconds']:.1f} s{per_step}, evaluation "
              f"{summary.get('eval_seconds', 0.0):.1f} s (eval.n_samples sets its size)")
    if final:
        print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items() if k != "step"))
    model = run_dir / "model.pt"
    if model.exists() and summary.get("stage") == "autoencoder":
        print(f"autoencoder: {model}   (omnidiff train recipe=... autoencoder={model} trains a "
              "latent diffusion model on it)")
    elif model.exists() and summary.get("stage") == "classifier":
        print(f"classifier: {model}   (omnidiff sample checkpoint=<a diffusion model of this "
              f"recipe> classifier={model} label=K guides it towards class K)")
    elif model.exists():
        print(f"model: {model}   (omnidiff sample checkpoint={model})")
