"""``omnidiff train``: one experiment from a composed config, in a self-contained run folder::

    <run>/config.yaml          resolved config
    <run>/checkpoints/*.ckpt   Lightning checkpoints (last.ckpt always)
    <run>/logs/metrics.csv     CSV log (train/loss per step, val/loss, sample metrics)
    <run>/logs/tensorboard/    with logger=tensorboard: the same scalars and the samples
    <run>/samples/             the domain's artifacts (during training and final)
    <run>/metrics.json         final metrics, loss summary, timings
    <run>/loss.png             the loss curve
    <run>/model.pt             the inference checkpoint for ``omnidiff.load``
    <run>/ranks/rank<k>.json   multi-process runs: each rank's final step and weights digest

Fault tolerance: ``last.ckpt`` is written every ``checkpoint.every_n_train_steps`` steps or
``checkpoint.every_n_minutes`` minutes (whichever comes first), and when SIGTERM or Ctrl-C
stops the run (after the step in flight). ``resume=auto`` (the run folder ``out=`` or the
newest run of the recipe) or ``resume=PATH`` (a ``.ckpt`` or a run folder) continues from it
with the same global step, optimizer, scheduler, EMA and loop state (Lightning restores them);
the CSV log keeps the rows up to the resumed step; a run that already reached
``trainer.max_steps`` (or ``max_epochs``) resumes to nothing. Checkpoints, ``model.pt`` and
artifacts are written atomically; a NaN / inf loss stops training
(:class:`~omnidiff.training.callbacks.FiniteLossGuard`). The run folder rules (a lock, no
silent reuse, compatibility on resume) are in :mod:`omnidiff.training.run_folder`.

This is the only training code that reads a ``DictConfig``: the modules and callbacks below
it take plain arguments.
"""

from __future__ import annotations

import os
import tempfile
import time
import warnings
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import OmegaConf

from omnidiff.core.conditions import cond_spec_of
from omnidiff.errors import CheckpointError, ConfigError, DataError, TrainingPreempted, blamed_on
from omnidiff.io import atomic_write_json, atomic_write_text
from omnidiff.methods.latent.autoencoder import load_autoencoder, read_autoencoder
from omnidiff.model_file import read_checkpoint, write_inference
from omnidiff.model_spec import build_domain
from omnidiff.plots import plot_loss_from_csv
from omnidiff.plugins.data import prepare_data_module
from omnidiff.plugins.shards import Shards, check_shards, stream_training_data
from omnidiff.tasks.config import check_machine, domain_data, model_spec, to_plain, validate
from omnidiff.tasks.distill import build_distill, teacher_payload
from omnidiff.tasks.student_grid import choose_student_grid
from omnidiff.threads import use_threads
from omnidiff.training.autoencoder_module import AutoencoderModule, ReconstructionCallback
from omnidiff.training.callbacks import (
    EMA,
    Evaluation,
    FiniteLossGuard,
    GracefulInterrupt,
    RankDigest,
    SampleCallback,
    StepTimer,
)
from omnidiff.training.checkpoints import AtomicCheckpointIO, InferenceExport, model_checkpoint
from omnidiff.training.classifier_module import (
    ClassifierEvaluation,
    ClassifierModule,
    class_count,
)
from omnidiff.training.console import RunProgressBar, quiet_lightning
from omnidiff.training.csv_log import ResumableCSVLogger
from omnidiff.training.diffusion_module import DiffusionModule, plain_python
from omnidiff.training.fine_tune import load_initial_weights
from omnidiff.training.run_folder import (
    RUN_DIR_ENV,
    RunLock,
    check_compatible,
    check_reuse,
    clear_run,
    finished_step,
    launched_rank,
    launched_world,
    remove_stale_temporaries,
    resume_target,
)
from omnidiff.training.tensorboard import tensorboard_logger

__all__ = ["train", "build_callbacks", "build_module"]


def _read_resumable(ckpt: Path, cfg: Any, module: DiffusionModule) -> dict[str, Any]:
    """The checkpoint to continue, after one clear line if it cannot continue this config (not
    a checkpoint of `omnidiff train`, another domain, another network or schedule)."""
    try:
        obj = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot resume from {ckpt}: torch.load failed "
                              f"({type(exc).__name__}); pass another .ckpt") from None
    hp = obj.get("hyper_parameters") or {} if isinstance(obj, dict) else {}
    if "loops" not in obj or "domain" not in hp:
        raise CheckpointError(f"cannot resume from {ckpt}: it is not a Lightning checkpoint of "
                              "`omnidiff train` (model.pt holds weights only; use a .ckpt)")
    if hp["domain"] != str(cfg.domain):
        raise ConfigError(f"cannot resume from {ckpt}: it trained domain {hp['domain']!r}, this "
                          f"config trains {str(cfg.domain)!r}; pass the same recipe")
    check_compatible(ckpt, hp, dict(module.hparams), obj.get("state_dict"),
                     module.state_dict())
    return obj


def _finish_complete_run(run_dir: Path, ckpt: Path, done: str) -> None:
    """A run that already reached ``trainer.max_steps`` (or ``max_epochs``) resumes to
    nothing; its model.pt is rebuilt from the checkpoint only when missing (a checkpoint's
    ``state_dict`` holds the EMA weights when EMA was on, as model.pt does)."""
    print(f"omnidiff: {run_dir} is complete ({done}); raise trainer.max_steps (or "
          "trainer.max_epochs) to continue it", flush=True)
    if not (run_dir / "model.pt").exists():
        write_inference(read_checkpoint(ckpt), run_dir / "model.pt")
        print(f"omnidiff: rebuilt the missing {run_dir / 'model.pt'} from {ckpt}", flush=True)


def build_callbacks(cfg: Any, run_dir: Path) -> list[Any]:
    """The Lightning callbacks of a run (EMA unless disabled or under FSDP, model.pt export,
    sampling + metrics, periodic checkpoints, Ctrl-C as SIGTERM, the non-finite loss guard,
    rank digests, progress bar)."""
    strategy = str(cfg.trainer.get("strategy", "auto")).lower()
    callbacks: list[Any] = [FiniteLossGuard(), GracefulInterrupt(), StepTimer()]
    ema_decay = cfg.optim.get("ema_decay")
    if ema_decay is not None and "fsdp" in strategy:
        warnings.warn("omnidiff: EMA is disabled for this run: Lightning's EMAWeightAveraging "
                      "does not support FSDP (trainer.strategy=fsdp). Use trainer.strategy=ddp "
                      "to keep EMA, or set optim.ema_decay=null to silence this warning",
                      UserWarning, stacklevel=2)
        ema_decay = None
    if ema_decay is not None:
        callbacks.append(EMA(decay=float(ema_decay),
                             warmup=bool(cfg.optim.get("ema_warmup", True))))
    callbacks.append(InferenceExport(run_dir / "model.pt"))
    if cfg.get("stage", "diffusion") == "classifier":
        callbacks.append(ClassifierEvaluation(every_n_steps=int(cfg.eval.every_n_steps or 0),
                                              n_ref=int(cfg.eval.n_ref),
                                              seed=int(cfg.eval.seed)))
    elif cfg.get("stage", "diffusion") == "autoencoder":
        callbacks.append(ReconstructionCallback(
            run_dir, every_n_steps=int(cfg.eval.every_n_steps or 0),
            n=min(int(cfg.eval.n_samples), 64), n_ref=int(cfg.eval.n_ref),
            seed=int(cfg.eval.seed)))
    else:
        callbacks.append(SampleCallback(
            run_dir, sampler=to_plain(cfg.sampler),
            every_n_steps=int(cfg.eval.every_n_steps or 0), n=int(cfg.eval.n_samples),
            n_ref=int(cfg.eval.n_ref), batch_size=cfg.eval.get("batch_size"),
            seed=int(cfg.eval.seed)))
    callbacks.append(RankDigest(run_dir / "ranks"))
    ck = cfg.checkpoint
    callbacks.append(model_checkpoint(run_dir / "checkpoints",
                                      every_n_train_steps=ck.get("every_n_train_steps"),
                                      every_n_minutes=ck.get("every_n_minutes"),
                                      keep=int(ck.get("keep", 0))))
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(RunProgressBar())
    return callbacks


def _autoencoder_of(cfg: Any, stage: str, teacher: dict[str, Any] | None) -> Any:
    """The frozen autoencoder a latent model runs on: ``autoencoder=``'s, or a latent
    teacher's (None for a model on data)."""
    if stage == "diffusion" and cfg.get("autoencoder"):
        return load_autoencoder(str(cfg.autoencoder), domain=str(cfg.domain))[0]
    if teacher is not None and teacher.get("autoencoder"):
        return read_autoencoder(teacher["autoencoder"], "the teacher's autoencoder")
    return None


def _prepared_data(cfg: Any, domain: Any) -> Any:
    """The domain's data module for ``cfg.data``, prepared (its event shape and condition
    known) after the run's threads and seed are set."""
    with blamed_on(ConfigError, "data"):
        dm = domain.build_data(**domain_data(cfg))
    use_threads(cfg.get("threads"))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with blamed_on(DataError, "data"):
        prepare_data_module(dm)
    if cfg.data.get("stream"):  # train from shards; held-out data and facts stay the module's
        shards = Shards(str(cfg.data.stream))
        check_shards(shards, str(cfg.domain), dm.event_shape, cond_spec_of(dm))
        stream_training_data(dm, shards, seed=int(getattr(dm, "seed", cfg.seed)),
                             window=cfg.data.get("stream_window"))
    return dm


def build_module(cfg: Any) -> tuple[Any, Any]:
    """The data module (built and prepared) and the training module, from a validated config:
    a :class:`DiffusionModule` (on an autoencoder's latents when ``autoencoder=`` names one),
    an :class:`~omnidiff.training.autoencoder_module.AutoencoderModule` for
    ``stage=autoencoder``, or a :class:`~omnidiff.training.distill_module.DistillModule` for
    ``stage=distill``. Bad data or model options fail here, before a run folder exists."""
    stage = cfg.get("stage", "diffusion")
    teacher = teacher_payload(cfg) if stage == "distill" else None
    ae = _autoencoder_of(cfg, stage, teacher)
    dm = _prepared_data(cfg, build_domain(str(cfg.domain), ae))
    if stage == "distill":
        return dm, build_distill(cfg, dm, teacher, ae)
    if stage == "classifier":
        return dm, ClassifierModule(str(cfg.domain), event_shape=dm.event_shape,
                                    num_classes=class_count(dm.cond_spec),
                                    schedule=to_plain(cfg.schedule),
                                    classifier=to_plain(cfg.get("classifier") or {}),
                                    optim=to_plain(cfg.optim), data_cfg=domain_data(cfg),
                                    classes=getattr(dm, "classes", None))
    if stage == "autoencoder":
        ae_cfg = {"channel_axis": int(getattr(dm, "channel_axis", 0)), **to_plain(cfg.ae)}
        return dm, AutoencoderModule(str(cfg.domain), ae_cfg, event_shape=dm.event_shape,
                                     optim=to_plain(cfg.optim), data_cfg=domain_data(cfg))
    spec = model_spec(cfg, dm)
    _no_guidance_without_condition(cfg, spec.cond)
    module = DiffusionModule(spec, loss=to_plain(cfg.loss), optim=to_plain(cfg.optim),
                             autoencoder=ae)
    if cfg.get("init"):
        print(load_initial_weights(module.model, str(cfg.init)), flush=True)
    return dm, module


def _no_guidance_without_condition(cfg: Any, cond_spec: Any) -> None:
    """A recipe's ``sampler.guidance`` is dropped, with one line, when its data trains an
    unconditional model (e.g. ``data.conditional=false``): the run's evaluation and model.pt then
    sample unguided instead of failing once training is done."""
    if cfg.sampler.get("guidance") is not None and not cond_spec.conditional:
        print(f"omnidiff: sampler.guidance={cfg.sampler.guidance} dropped: this data trains an "
              "unconditional model (autoguidance at sampling time: guide_model=)", flush=True)
        cfg.sampler.guidance = None


def _build_trainer(cfg: Any, run_dir: Path, resume_step: int | None) -> Any:
    """The Lightning Trainer of a run (its callbacks, the CSV log, atomic checkpoints); writes
    no file yet."""

    trainer_cfg = dict(to_plain(cfg.trainer))
    logger: Any = False
    if cfg.logger.name in ("csv", "tensorboard"):  # TensorBoard beside the CSV log
        # flush every logged step, so a killed run keeps its loss curve up to the kill
        logger = [ResumableCSVLogger(save_dir=str(run_dir), name="logs", version="",
                                      flush_logs_every_n_steps=1, keep_before=resume_step)]
    if cfg.logger.name == "tensorboard":
        logger.append(tensorboard_logger(run_dir))
    plugins = []
    if str(trainer_cfg.get("strategy", "auto")) in ("auto", "ddp", "ddp_spawn", "ddp_fork",
                                                     "single_device"):
        plugins.append(AtomicCheckpointIO())
    callbacks = build_callbacks(cfg, run_dir)
    with blamed_on(ConfigError, "trainer: Lightning rejects the options",
                   also=(MisconfigurationException,)):
        return pl.Trainer(**trainer_cfg, default_root_dir=str(run_dir), logger=logger,
                          callbacks=callbacks, plugins=plugins or None)


def _prepare_folder(run_dir: Path, ckpt: Path | None, resume_step: int | None,
                    cfg: Any) -> None:
    """Under the run's lock: refuse a folder that holds another run, clear it for
    ``overwrite=true``, drop a killed run's temporaries, and say what happens."""
    check_reuse(run_dir, ckpt, resume=cfg.get("resume"), overwrite=bool(cfg.get("overwrite")))
    if cfg.get("overwrite"):
        removed = clear_run(run_dir)
        if removed:
            print(f"omnidiff: overwrite=true: removed the earlier run's {', '.join(removed)} "
                  f"from {run_dir}", flush=True)
    if ckpt is not None:
        remove_stale_temporaries(run_dir)
        print(f"omnidiff: resuming {run_dir} from {ckpt} (step {resume_step})", flush=True)
    elif cfg.get("resume") == "auto":
        print(f"omnidiff: resume=auto found no checkpoint; starting {run_dir}", flush=True)


def _fit(trainer: Any, module: DiffusionModule, dm: Any, ckpt: Path | None,
         run_dir: Path) -> float:
    """``trainer.fit``; seconds it took. SIGTERM / Ctrl-C end in :class:`TrainingPreempted`
    naming the checkpoint written and the command that continues the run."""

    t0 = time.perf_counter()
    try:
        trainer.fit(module, datamodule=dm, ckpt_path=str(ckpt) if ckpt is not None else None)
    except SIGTERMException:
        saved = next((c.preempted for c in trainer.checkpoint_callbacks
                      if getattr(c, "preempted", None)), None)
        signal_name = next((c.signal_name for c in trainer.callbacks
                            if isinstance(c, GracefulInterrupt)), "SIGTERM")
        what = (f"stopped by {signal_name} after step {trainer.global_step}; "
                + (f"saved {saved}" if saved else "no checkpoint could be written"))
        again = f"; `omnidiff train ... resume=auto out={run_dir}` continues it" if saved else ""
        raise TrainingPreempted(what + again, 130 if signal_name == "SIGINT" else 143,
                                what=what) from None
    return time.perf_counter() - t0


def _write_summary(cfg: Any, trainer: Any, run_dir: Path, seconds: float,
                   grid: dict[str, Any] | None = None) -> None:
    """``metrics.json`` (final and periodic metrics, loss summary, a student's chosen
    ``grids``, and the seconds of training and of evaluation apart: ``seconds`` is the whole
    fit, evaluations included) and loss.png."""
    evaluation = next(c for c in trainer.callbacks if isinstance(c, Evaluation))
    summary: dict[str, Any] = {"train_seconds": round(seconds - evaluation.seconds, 2),
                               "eval_seconds": round(evaluation.seconds, 2),
                               "global_step": int(trainer.global_step)}
    timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))
    if timer.step_seconds is not None:
        summary["step_seconds"] = round(timer.step_seconds, 4)
    csv_log = run_dir / "logs" / "metrics.csv"
    if csv_log.exists():
        summary.update(plot_loss_from_csv(csv_log, run_dir / "loss.png"))
    summary["final"] = evaluation.final_metrics
    summary["history"] = evaluation.history
    summary["domain"], summary["recipe"] = str(cfg.domain), cfg.get("recipe")
    if cfg.get("stage", "diffusion") in ("autoencoder", "classifier"):
        summary["stage"] = cfg.stage
    else:
        summary["sampler"] = dict(to_plain(cfg.sampler))
    if grid is not None:
        summary["grids"] = grid
    atomic_write_json(plain_python(summary), run_dir / "metrics.json")


def train(cfg: Any) -> Path:
    """Train from a composed config (see :func:`omnidiff.tasks.config.compose`); returns the run
    dir. ``trainer.fast_dev_run`` (Lightning's check that every part of a run works, on a batch
    or a few) runs in a temporary folder that is removed afterwards: it leaves no run behind
    that would look finished."""
    if not cfg.trainer.get("fast_dev_run"):
        return _train(cfg)
    with tempfile.TemporaryDirectory(prefix="omnidiff-fast-dev-run-") as tmp:
        OmegaConf.update(cfg, "out", tmp, force_add=True)
        OmegaConf.update(cfg, "resume", None, force_add=True)
        run = _train(cfg)
    print(f"omnidiff: trainer.fast_dev_run={cfg.trainer.fast_dev_run}: every part of the run "
          "worked; nothing was kept (drop it to train)", flush=True)
    return run


def _train(cfg: Any) -> Path:
    """:func:`train` itself.

    Everything that can fail on the user's input (config, data, network, the checkpoint to
    resume and its compatibility, Lightning's options) is checked before the run folder is
    created or touched; the folder is then locked for the run
    (:class:`~omnidiff.training.run_folder.RunLock`).
    """

    validate(cfg)
    quiet_lightning(bool(cfg.get("verbose")))
    check_machine(cfg)
    several = launched_world() > 1 or int(cfg.trainer.get("num_nodes") or 1) > 1
    if several and not cfg.get("out") and not os.environ.get(RUN_DIR_ENV):
        raise ConfigError("a run on several nodes or launched by torchrun / srun needs out=DIR, "
                          "one folder that every node sees (a shared file system)")
    dm, module = build_module(cfg)
    run_dir, ckpt = resume_target(cfg)
    run_dir = run_dir.absolute()
    rank0 = launched_rank() == 0
    resume_step = None
    if ckpt is not None:
        obj = _read_resumable(ckpt, cfg, module)
        resume_step = int(obj.get("global_step", 0))
        done = finished_step(obj, cfg.trainer)
        del obj
        if done is not None:
            if rank0:
                _finish_complete_run(run_dir, ckpt, done)
            return run_dir
    if rank0:  # before Lightning starts up; again under the lock
        RunLock(run_dir).check_free()
        check_reuse(run_dir, ckpt, resume=cfg.get("resume"), overwrite=bool(cfg.get("overwrite")))
    trainer = _build_trainer(cfg, run_dir, resume_step)
    with RunLock(run_dir) if rank0 else nullcontext():
        if rank0:
            _prepare_folder(run_dir, ckpt, resume_step, cfg)
            atomic_write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")
        os.environ[RUN_DIR_ENV] = str(run_dir)  # inherited by DDP's per-device processes
        seconds = _fit(trainer, module, dm, ckpt, run_dir)
        if trainer.is_global_zero:
            grid = choose_student_grid(cfg, run_dir) if cfg.get("stage") == "distill" else None
            _write_summary(cfg, trainer, run_dir, seconds, grid)
    return run_dir
