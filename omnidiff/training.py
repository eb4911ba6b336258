"""Training any registered domain with Lightning.

:class:`DiffusionModule` is built from plain typed arguments (``DictConfig`` stops at the CLI
edge) and stores them with ``save_hyperparameters`` as plain python, so a Lightning ``.ckpt``
loads with ``torch.load(weights_only=True)``. :func:`train` runs one experiment from a composed
config and writes a self-contained run directory::

    <run>/config.yaml          resolved config
    <run>/checkpoints/*.ckpt   Lightning checkpoints (last.ckpt always)
    <run>/logs/metrics.csv     CSV log (train/loss per step, val/loss, sample metrics)
    <run>/samples/             the domain's artifacts (during training and final)
    <run>/metrics.json         final metrics, loss summary, timings
    <run>/loss.png             the loss curve
    <run>/model.pt             the inference checkpoint for ``omnidiff.load``
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import LightningModule

from .losses import diffusion_loss
from .model import DiffusionModel
from .registry import get_domain
from .schedules import get_schedule

__all__ = ["DiffusionModule", "train", "run_dir_for"]


class DiffusionModule(LightningModule):
    """A domain's network + a schedule + a prediction type, trained with ``diffusion_loss``.

    Batches are dicts ``{"x": (B, *event), "cond": (B,) long}`` (``cond`` only for
    class-conditional data). Logs ``train/loss`` every step and ``val/loss`` per validation.
    """

    def __init__(self, domain: str, model_cfg: dict[str, Any], schedule_cfg: dict[str, Any], *,
                 event_shape: Sequence[int], num_classes: int = 0, prediction: str = "eps",
                 time_sampling: str = "uniform", weighting: str = "uniform",
                 p_uncond: float = 0.1, lr: float = 1e-3, weight_decay: float = 0.0,
                 warmup: int = 0, sigma_data: float = 1.0,
                 data_cfg: dict[str, Any] | None = None):
        super().__init__()
        event_shape = [int(s) for s in event_shape]
        self.save_hyperparameters({
            "domain": str(domain), "model_cfg": dict(model_cfg),
            "schedule_cfg": dict(schedule_cfg), "event_shape": event_shape,
            "num_classes": int(num_classes), "prediction": str(prediction),
            "time_sampling": str(time_sampling), "weighting": str(weighting),
            "p_uncond": float(p_uncond), "lr": float(lr), "weight_decay": float(weight_decay),
            "warmup": int(warmup), "sigma_data": float(sigma_data),
            "data_cfg": dict(data_cfg or {})})
        self.domain = get_domain(domain)
        self.schedule = get_schedule(**schedule_cfg)
        net = self.domain.build_network(tuple(event_shape), int(num_classes), **model_cfg)
        self.model = DiffusionModel(net, self.schedule, prediction, sigma_data=sigma_data)

    # ---- steps ---------------------------------------------------------------------------
    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
              ) -> torch.Tensor:
        hp = self.hparams
        x = batch["x"]  # (B, *event)
        cond = batch.get("cond") if hp.num_classes > 0 else None
        loss, _ = diffusion_loss(self.model, x, schedule=self.schedule,
                                 prediction=hp.prediction, time_sampling=hp.time_sampling,
                                 weighting=hp.weighting, cond=cond, p_uncond=hp.p_uncond,
                                 sigma_data=hp.sigma_data, generator=generator)
        return loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
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

    # ---- optimisation --------------------------------------------------------------------
    def configure_optimizers(self):
        hp = self.hparams
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)
        opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp.weight_decay},
                                 {"params": no_decay, "weight_decay": 0.0}], lr=hp.lr)
        warmup = max(0, int(hp.warmup))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    # ---- checkpoints stay loadable with weights_only=True -------------------------------
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = _plain(checkpoint[key])
        checkpoint.pop("hparams_type", None)
        checkpoint["omnidiff_version"] = _version()


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

_RUN_DIR_ENV = "OMNIDIFF_RUN_DIR"


def run_dir_for(cfg: Any) -> Path:
    """``cfg.out`` or ``runs/<recipe or domain>/<timestamp>``.

    Lightning's DDP launcher re-runs the command in one process per extra device (with
    ``LOCAL_RANK`` set); those processes take the run directory the first one chose.
    """
    if cfg.get("out"):
        return Path(str(cfg.out))
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(_RUN_DIR_ENV):
        return Path(os.environ[_RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / str(cfg.get("recipe") or cfg.get("domain") or "run") / stamp
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{stamp}-{i}"), i + 1
    return path


def _setup_data(dm: Any) -> None:
    """Let event_shape / num_classes be known before the Trainer runs (idempotent hooks)."""
    if hasattr(dm, "prepare_data"):
        dm.prepare_data()
    if hasattr(dm, "setup"):
        dm.setup("fit")


def train(cfg: Any) -> Path:
    """Train from a composed config (see :func:`omnidiff.config.compose`); returns the run dir."""
    import lightning.pytorch as pl
    from omegaconf import OmegaConf

    from .callbacks import EMA, SampleCallback, progress_bar
    from .checkpoint import AtomicCheckpointIO, InferenceExport, model_checkpoint
    from .config import to_plain, validate
    from .io import atomic_write_json, atomic_write_text
    from .plots import plot_loss_from_csv

    validate(cfg)
    run_dir = run_dir_for(cfg).absolute()
    run_dir.mkdir(parents=True, exist_ok=True)
    os.environ[_RUN_DIR_ENV] = str(run_dir)  # inherited by DDP's per-device processes
    atomic_write_text(OmegaConf.to_yaml(cfg, resolve=True), run_dir / "config.yaml")
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg.threads))
    pl.seed_everything(int(cfg.seed), workers=True, verbose=False)

    domain = get_domain(str(cfg.domain))
    data_cfg = to_plain(cfg.data)
    dm = domain.build_data(**data_cfg)
    _setup_data(dm)
    event_shape = tuple(int(s) for s in dm.event_shape)
    num_classes = int(dm.num_classes)

    module = DiffusionModule(
        str(cfg.domain), to_plain(cfg.model), to_plain(cfg.schedule),
        event_shape=event_shape, num_classes=num_classes,
        prediction=cfg.loss.prediction, time_sampling=cfg.loss.time_sampling,
        weighting=cfg.loss.weighting, p_uncond=float(cfg.loss.p_uncond),
        lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay),
        warmup=int(cfg.optim.warmup), sigma_data=float(cfg.loss.sigma_data), data_cfg=data_cfg)

    trainer_cfg = dict(to_plain(cfg.trainer))
    callbacks: list[Any] = []
    if cfg.optim.get("ema_decay") is not None:
        callbacks.append(EMA(decay=float(cfg.optim.ema_decay)))
    sampling = dict(sampler=str(cfg.sampler.name), steps=int(cfg.sampler.steps),
                    guidance=cfg.sampler.get("guidance"))
    callbacks.append(InferenceExport(run_dir / "model.pt"))
    callbacks.append(SampleCallback(
        run_dir, every_n_steps=int(cfg.eval.every_n_steps or 0), n=int(cfg.eval.n_samples),
        n_ref=int(cfg.eval.n_ref), batch_size=cfg.eval.get("batch_size"),
        seed=int(cfg.eval.seed), **sampling))
    callbacks.append(model_checkpoint(run_dir / "checkpoints",
                                      every_n_train_steps=cfg.checkpoint.get("every_n_train_steps")))
    if trainer_cfg.get("enable_progress_bar", True):
        callbacks.append(progress_bar())

    logger: Any = False
    if cfg.logger.name == "csv":
        from lightning.pytorch.loggers import CSVLogger
        logger = CSVLogger(save_dir=str(run_dir), name="logs", version="")
    plugins = []
    if str(trainer_cfg.get("strategy", "auto")) in ("auto", "ddp", "ddp_spawn", "ddp_fork",
                                                     "single_device"):
        plugins.append(AtomicCheckpointIO())
    trainer = pl.Trainer(**trainer_cfg, default_root_dir=str(run_dir), logger=logger,
                         callbacks=callbacks, plugins=plugins or None)

    t0 = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_seconds = time.perf_counter() - t0

    if trainer.is_global_zero:
        summary: dict[str, Any] = {"train_seconds": round(train_seconds, 2),
                                   "global_step": int(trainer.global_step)}
        csv = run_dir / "logs" / "metrics.csv"
        if csv.exists():
            summary.update(plot_loss_from_csv(csv, run_dir / "loss.png"))
        sample_cb = next(c for c in callbacks if isinstance(c, SampleCallback))
        summary["final"] = sample_cb.final_metrics
        summary["history"] = sample_cb.history
        summary["domain"], summary["recipe"] = str(cfg.domain), cfg.get("recipe")
        summary["sampler"] = sampling
        atomic_write_json(_plain(summary), run_dir / "metrics.json")
    return run_dir
