"""Training any registered domain with Lightning.

:class:`DiffusionModule` is built from plain typed arguments (``DictConfig`` stops at the CLI
edge) and stores them with ``save_hyperparameters`` as plain python, so a Lightning ``.ckpt``
loads with ``torch.load(weights_only=True)``. :func:`train` runs one experiment from a composed
config and writes a self-contained run directory::

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
``trainer.max_steps`` (or ``max_epochs``) resumes to nothing. Checkpoints, ``model.pt`` and artifacts are written
atomically; a NaN / inf loss stops training (:class:`~omnidiff.callbacks.FiniteLossGuard`).
The run folder rules (a lock, no silent reuse, compatibility on resume) are in
:mod:`omnidiff.runs`.
"""

from __future__ import annotations

import csv
import os
import time
import warnings
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import LightningModule
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

from .conditions import as_spec, spec_of
from .data import check_batch, prepare_data_module
from .errors import ConfigError, DataError, blamed_on
from .losses import check_loss_options, diffusion_loss
from .model import DiffusionModel
from .optim import adamw, optimizer_args
from .registry import get_domain
from .runs import resume_target, run_dir_for
from .schedules import get_schedule

__all__ = ["DiffusionModule", "PlainCheckpoints", "train", "run_dir_for", "resume_target",
           "build_callbacks"]


class PlainCheckpoints:
    """A LightningModule mix-in: checkpoints stay loadable with ``weights_only=True`` (hparams
    as plain python) and carry omnidiff's version and the global RNG, which drives noise and
    time sampling, so a resumed run continues it."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])
        checkpoint.pop("hparams_type", None)
        checkpoint["omnidiff_version"] = _version()
        checkpoint["omnidiff_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("omnidiff_rng") or {}
        if isinstance(rng.get("torch"), torch.Tensor):
            torch.set_rng_state(rng["torch"])


class DiffusionModule(PlainCheckpoints, LightningModule):
    """A domain's network + a schedule, trained with ``diffusion_loss``.

    The config's blocks come whole: ``loss`` holds :func:`~omnidiff.losses.diffusion_loss`'s
    keyword arguments (``prediction``, ``time_sampling``, ``weighting``, ``p_uncond``,
    ``sigma_data``, ``min_snr_gamma``, ...), ``optim`` :func:`~omnidiff.optim.adamw`'s (plus
    the EMA's keys, read by the callback). Batches are dicts ``{"x": (B, *event), "cond":
    ...}`` (``cond`` of the kind ``cond_spec`` declares: labels, a tensor, a dict; only for
    conditional data). ``cond_spec`` is a :class:`~omnidiff.conditions.CondSpec`, its
    ``to_dict()``, or a class count. Logs ``train/loss`` every step and ``val/loss`` per
    validation. With ``autoencoder`` (an :class:`~omnidiff.autoencoder.Autoencoder` or its
    ``config()``) it is a latent model: ``event_shape`` is the latents', batches hold latents,
    and the frozen autoencoder is a submodule (in every checkpoint) that decodes its samples.
    """

    _batch_checked = False  # the first training batch is checked (omnidiff.data.check_batch)

    def __init__(self, domain: str, model_cfg: dict[str, Any], schedule_cfg: dict[str, Any], *,
                 event_shape: Sequence[int], cond_spec: Any = None,
                 loss: dict[str, Any] | None = None, optim: dict[str, Any] | None = None,
                 data_cfg: dict[str, Any] | None = None, autoencoder: Any = None):
        super().__init__()
        event_shape = [int(s) for s in event_shape]
        spec = as_spec(cond_spec)
        ae = _autoencoder(autoencoder)
        loss = check_loss_options(dict(loss or {}))
        optim = dict(optim or {})
        optimizer_args(optim)  # unknown keys fail here, not at the first step
        self.save_hyperparameters({
            "domain": str(domain), "model_cfg": dict(model_cfg),
            "schedule_cfg": dict(schedule_cfg), "event_shape": event_shape,
            "cond_spec": spec.to_dict(), "loss": loss, "optim": optim,
            "data_cfg": dict(data_cfg or {}),
            "autoencoder": None if ae is None else ae.config()})
        self.cond_spec = spec
        self.domain = get_domain(domain)
        if ae is not None:  # latent diffusion: the frozen autoencoder rides along
            from .latent import LatentDomain

            # frozen; left in train mode with the module (it has no dropout or batch norm)
            self.autoencoder = ae.requires_grad_(False).train()
            self.domain = LatentDomain(self.domain, self.autoencoder)
        self.schedule = get_schedule(**schedule_cfg)
        with blamed_on(ConfigError, "model"):
            net = self.domain.build_network(tuple(event_shape), spec, **model_cfg)
        self.model = DiffusionModel(net, self.schedule, loss.get("prediction", "eps"),
                                    sigma_data=float(loss.get("sigma_data", 1.0)))

    # ---- steps ---------------------------------------------------------------------------
    def _batch_cond(self, batch: dict[str, Any]) -> Any:
        """The batch's condition (None for an unconditional model)."""
        if not self.cond_spec.conditional:
            return None
        cond = batch.get("cond")
        if cond is None:
            raise DataError(f"the model is conditioned on {self.cond_spec.describe()} but "
                            "a training batch has no 'cond'; the data module must yield "
                            "{'x': ..., 'cond': ...}")
        return cond

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
              ) -> torch.Tensor:
        loss, _ = diffusion_loss(self.model, batch["x"], schedule=self.schedule,
                                 cond=self._batch_cond(batch), generator=generator,
                                 **self.hparams.loss)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if not self._batch_checked:  # the first batch, with the domain contract's wording
            check_batch(batch, tuple(self.hparams.event_shape), self.cond_spec,
                        self.model.net_dtype or torch.float32)
            self._batch_checked = True
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch["x"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # fixed noise and times per batch, so successive validations are comparable
        g = torch.Generator(device=batch["x"].device).manual_seed(10_007 + batch_idx)
        loss = self._loss(batch, generator=g)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch["x"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self):
        return adamw(self.parameters(), **optimizer_args(dict(self.hparams.optim)))

    def export_payload(self, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
        """The inference dict (``model.pt``) of the current weights."""
        from .checkpoint import export_payload

        return export_payload(self, ema=ema, global_step=global_step)


def _autoencoder(autoencoder: Any) -> Any:
    """An Autoencoder, one rebuilt from its ``config()`` (a Lightning checkpoint's
    hyper-parameters; the weights come with the state dict), or None."""
    if autoencoder is None or isinstance(autoencoder, torch.nn.Module):
        return autoencoder
    from .autoencoder import Autoencoder

    return Autoencoder.from_config(autoencoder)


def _version() -> str:
    from . import __version__
    return __version__


def _plain(obj: Any) -> Any:
    """Recursively turn configs, paths and other objects into plain python for weights_only."""
    try:
        from omegaconf import OmegaConf
        if OmegaConf.is_config(obj):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return str(obj)


# ---- running an experiment ----------------------------------------------------------------


def _read_resumable(ckpt: Path, cfg: Any, module: DiffusionModule) -> dict[str, Any]:
    """The checkpoint to continue, after one clear line if it cannot continue this config (not
    a checkpoint of `omnidiff train`, another domain, another network or schedule)."""
    from .checkpoint import CheckpointError
    from .config import ConfigError
    from .runs import check_compatible

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
    from .checkpoint import read_checkpoint, write_inference

    print(f"omnidiff: {run_dir} is complete ({done}); raise trainer.max_steps (or "
          "trainer.max_epochs) to continue it", flush=True)
    if not (run_dir / "model.pt").exists():
        write_inference(read_checkpoint(ckpt), run_dir / "model.pt")
        print(f"omnidiff: rebuilt the missing {run_dir / 'model.pt'} from {ckpt}", flush=True)


class _ResumableCSVLogger(CSVLogger):
    """Lightning's CSVLogger, but a resumed run keeps the rows logged before its checkpoint.

    (Lightning's own deletes an existing ``metrics.csv``.) Rows after the checkpoint's step,
    which the resumed run logs again, are dropped; a line cut short by a kill is skipped.
    """

    def __init__(self, *args: Any, keep_before: int | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._carry: list[dict[str, Any]] = []
        path = Path(self.log_dir) / "metrics.csv"
        if keep_before is not None and path.is_file():
            with open(path, newline="") as fh:
                for row in csv.DictReader(fh):
                    try:
                        step = int(float(row.get("step") or ""))
                    except ValueError:
                        continue
                    if None in row or any(v is None for v in row.values()):
                        continue  # a truncated line
                    logged_after = step > keep_before or (step == keep_before
                                                          and row.get("train/loss"))
                    if not logged_after:
                        self._carry.append({k: v for k, v in row.items() if v != ""})

    @property
    @rank_zero_experiment
    def experiment(self) -> Any:
        first = self._experiment is None
        exp = CSVLogger.experiment.fget(self)
        if first and self._carry and hasattr(exp, "metrics_keys"):
            exp.metrics[:0] = self._carry
            self._carry = []
        return exp


def build_callbacks(cfg: Any, run_dir: Path) -> list[Any]:
    """The Lightning callbacks of a run (EMA unless disabled or under FSDP, model.pt export,
    sampling + metrics, periodic checkpoints, Ctrl-C as SIGTERM, the non-finite loss guard,
    rank digests, progress bar)."""
    from .callbacks import (EMA, FiniteLossGuard, GracefulInterrupt, RankDigest, SampleCallback,
                            progress_bar)
    from .checkpointing import InferenceExport, model_checkpoint
    from .config import to_plain

    strategy = str(cfg.trainer.get("strategy", "auto")).lower()
    callbacks: list[Any] = [FiniteLossGuard(), GracefulInterrupt()]
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
    if cfg.get("stage", "diffusion") == "autoencoder":
        from .autoencoder_training import ReconstructionCallback

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
        callbacks.append(progress_bar())
    return callbacks


def _build_module(cfg: Any) -> tuple[Any, Any]:
    """The data module (built and prepared) and the training module, from a validated config:
    a :class:`DiffusionModule` (on an autoencoder's latents when ``autoencoder=`` names one),
    an :class:`~omnidiff.autoencoder_training.AutoencoderModule` for ``stage=autoencoder``,
    or a :class:`~omnidiff.distillation.DistillModule` for ``stage=distill``. Bad data or
    model options fail here, before a run folder exists."""
    import lightning.pytorch as pl

    from .config import to_plain

    domain = get_domain(str(cfg.domain))
    stage = cfg.get("stage", "diffusion")
    ae, teacher = None, None
    if stage == "diffusion" and cfg.get("autoencoder"):
        from .autoencoder import load_autoencoder

        ae = load_autoencoder(str(cfg.autoencoder), domain=str(cfg.domain))[0]
    if stage == "distill":
        from .distillation import teacher_payload

        teacher = teacher_payload(cfg)
        if teacher is not None and teacher.get("autoencoder"):  # a latent teacher
            from .autoencoder import read_autoencoder

            ae = read_autoencoder(teacher["autoencoder"], "the teacher's autoencoder")
    if ae is not None:
        from .latent import LatentDomain

        domain = LatentDomain(domain, ae)
    data_cfg = to_plain(cfg.data)
    with blamed_on(ConfigError, "data"):
        dm = domain.build_data(**data_cfg)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)
    with blamed_on(DataError, "data"):
        prepare_data_module(dm)  # event_shape / cond_spec known before the Trainer runs
    event_shape = tuple(int(s) for s in dm.event_shape)
    if stage == "distill":
        from .distillation import build_distill

        return dm, build_distill(cfg, dm, str(cfg.domain), teacher, ae)
    if stage == "autoencoder":
        from .autoencoder_training import AutoencoderModule

        ae_cfg = {"channel_axis": int(getattr(dm, "channel_axis", 0)), **to_plain(cfg.ae)}
        return dm, AutoencoderModule(str(cfg.domain), ae_cfg, event_shape=event_shape,
                                     optim=to_plain(cfg.optim), data_cfg=data_cfg)
    module = DiffusionModule(
        str(cfg.domain), to_plain(cfg.model), to_plain(cfg.schedule),
        event_shape=event_shape, cond_spec=spec_of(dm), loss=to_plain(cfg.loss),
        optim=to_plain(cfg.optim), data_cfg=data_cfg, autoencoder=ae)
    return dm, module


def _build_trainer(cfg: Any, run_dir: Path, resume_step: int | None) -> Any:
    """The Lightning Trainer of a run (its callbacks, the CSV log, atomic checkpoints); writes
    no file yet."""
    import lightning.pytorch as pl
    from lightning.fabric.utilities.exceptions import MisconfigurationException

    from .checkpointing import AtomicCheckpointIO
    from .config import to_plain

    trainer_cfg = dict(to_plain(cfg.trainer))
    logger: Any = False
    if cfg.logger.name in ("csv", "tensorboard"):  # TensorBoard beside the CSV log
        # flush every logged step, so a killed run keeps its loss curve up to the kill
        logger = [_ResumableCSVLogger(save_dir=str(run_dir), name="logs", version="",
                                      flush_logs_every_n_steps=1, keep_before=resume_step)]
    if cfg.logger.name == "tensorboard":
        from .tensorboard import tensorboard_logger

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
    from .runs import check_reuse, clear_run, remove_stale_temporaries

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
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    from .callbacks import GracefulInterrupt, TrainingPreempted

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


def _write_summary(cfg: Any, trainer: Any, run_dir: Path, seconds: float) -> None:
    """``metrics.json`` (final and periodic metrics, loss summary, timings) and loss.png."""
    from .callbacks import Evaluation
    from .config import to_plain
    from .io import atomic_write_json
    from .plots import plot_loss_from_csv

    summary: dict[str, Any] = {"train_seconds": round(seconds, 2),
                               "global_step": int(trainer.global_step)}
    csv_log = run_dir / "logs" / "metrics.csv"
    if csv_log.exists():
        summary.update(plot_loss_from_csv(csv_log, run_dir / "loss.png"))
    evaluation = next(c for c in trainer.callbacks if isinstance(c, Evaluation))
    summary["final"] = evaluation.final_metrics
    summary["history"] = evaluation.history
    summary["domain"], summary["recipe"] = str(cfg.domain), cfg.get("recipe")
    if cfg.get("stage", "diffusion") == "autoencoder":
        summary["stage"] = "autoencoder"
    else:
        summary["sampler"] = dict(to_plain(cfg.sampler))
    atomic_write_json(_plain(summary), run_dir / "metrics.json")


def train(cfg: Any) -> Path:
    """Train from a composed config (see :func:`omnidiff.config.compose`); returns the run dir.

    Everything that can fail on the user's input (config, data, network, the checkpoint to
    resume and its compatibility, Lightning's options) is checked before the run folder is
    created or touched; the folder is then locked for the run (:class:`~omnidiff.runs.RunLock`).
    """
    from contextlib import nullcontext

    from omegaconf import OmegaConf

    from .config import check_machine, validate
    from .io import atomic_write_text
    from .runs import RUN_DIR_ENV, RunLock, check_reuse, finished_step, resume_target

    validate(cfg)
    check_machine(cfg)
    dm, module = _build_module(cfg)
    run_dir, ckpt = resume_target(cfg)
    run_dir = run_dir.absolute()
    rank0 = os.environ.get("LOCAL_RANK", "0") == "0" and os.environ.get("NODE_RANK", "0") == "0"
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
            _write_summary(cfg, trainer, run_dir, seconds)
    return run_dir
