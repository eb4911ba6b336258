"""Writing checkpoints during training (Lightning's side; the formats are in
:mod:`omnidiff.model_file`): ``model.pt`` when fitting ends, atomic ``.ckpt`` files, and
``last.ckpt`` every N steps or M minutes, at the end and on SIGTERM / Ctrl-C."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO

from omnidiff.io import atomic_path
from omnidiff.model_file import write_inference

__all__ = ["InferenceExport", "AtomicCheckpointIO", "model_checkpoint"]


class InferenceExport(Callback):
    """Write ``model.pt`` when fitting ends (after EMA weights were copied into the module):
    the training module's ``export_payload(ema=, global_step=)``."""

    def __init__(self, dest: str | os.PathLike):
        self.dest = Path(dest)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        if not trainer.is_global_zero:
            return
        from lightning.pytorch.callbacks import WeightAveraging

        ema = any(isinstance(c, WeightAveraging) for c in trainer.callbacks)
        # each training module knows its own model.pt (a diffusion model's, an autoencoder's)
        write_inference(pl_module.export_payload(ema=ema, global_step=trainer.global_step),
                        self.dest)


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoints written to a temporary file and renamed into place."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any,
                        storage_options: Any = None) -> None:
        if storage_options is not None:
            return super().save_checkpoint(checkpoint, path, storage_options)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)


def _between_epochs(trainer: Any) -> None:
    """When SIGTERM arrives after an epoch has ended (Lightning raises it at the end of the fit
    loop's epoch, with that epoch counted complete), mark the batch counters as those of the
    next epoch, not yet started. Otherwise the resumed run sees a complete epoch *and* a last
    batch, runs an empty epoch and trains on the order of the epoch after the right one."""
    fit = trainer.fit_loop
    cur = fit.epoch_progress.current
    if cur.ready == cur.started == cur.processed == cur.completed > 0:
        fit.epoch_loop.batch_progress.reset_on_run()


class _Checkpoint(ModelCheckpoint):
    """``ModelCheckpoint`` with a periodic ``last.ckpt`` every ``every_n_steps`` optimizer steps
    *or* every ``every_seconds`` of training, whichever comes first (Lightning takes one or the
    other), keeping the newest ``keep`` of those as ``step=N.ckpt`` besides it; and whose
    ``last.ckpt`` is always the final state of a finished fit, or of the step that was running
    when SIGTERM (or Ctrl-C, see :class:`~omnidiff.training.callbacks.GracefulInterrupt`) arrived.

    (Lightning's own ``on_train_end`` writes ``last.ckpt`` only when nothing was saved yet,
    so with a periodic checkpoint it would lag behind. On SIGTERM Lightning finishes the step
    in flight and raises ``SIGTERMException``: a consistent point to save.)
    """

    preempted: str | None = None  # last.ckpt written on SIGTERM

    def __init__(self, dirpath: str, *, every_n_steps: int = 0, every_seconds: float = 0.0,
                 keep: int = 0):
        keep = int(keep)
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=keep,
                         monitor="step" if keep > 0 else None, mode="max",
                         every_n_epochs=0, filename="step={step}",
                         auto_insert_metric_name=False, enable_version_counter=False)
        self.every_n_steps, self.every_seconds = int(every_n_steps), float(every_seconds)
        self._last_save_time = time.monotonic()

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        super().on_train_start(trainer, pl_module)
        self._last_save_time = time.monotonic()

    def _due(self, trainer: Any) -> bool:
        step = trainer.global_step
        # the last step is saved here too, not at on_train_end: by then Lightning counts a
        # cut-short epoch as complete (a resume would skip the rest of its batches) and EMA
        # has copied the average into the module
        last = 0 < (trainer.max_steps or 0) <= step
        by_steps = last or (self.every_n_steps > 0 and step % self.every_n_steps == 0)
        by_time = False
        if self.every_seconds > 0:  # rank 0 decides, so every rank saves together
            elapsed = time.monotonic() - self._last_save_time
            by_time = bool(trainer.strategy.broadcast(elapsed >= self.every_seconds))
        return by_steps or by_time

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        if self._should_skip_saving_checkpoint(trainer) or not self._due(trainer):
            return
        candidates = self._monitor_candidates(trainer)
        if self.save_top_k:
            self._save_topk_checkpoint(trainer, candidates)
        self._save_last_checkpoint(trainer, candidates)
        self._last_save_time = time.monotonic()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        from lightning.pytorch.utilities.exceptions import SIGTERMException

        if isinstance(exception, SIGTERMException):
            _between_epochs(trainer)
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
            self.preempted = self.last_model_path
        else:
            super().on_exception(trainer, pl_module, exception)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if getattr(self, "_last_global_step_saved", -1) != trainer.global_step:
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))


def model_checkpoint(dirpath: str | os.PathLike, every_n_train_steps: int | None = None,
                     every_n_minutes: float | None = None, keep: int = 0) -> ModelCheckpoint:
    """``last.ckpt`` every N steps or M minutes (whichever first; null or 0: never) and at the
    end, plus the newest ``keep`` periodic ones as ``step=N.ckpt`` (-1: all of them)."""
    return _Checkpoint(str(dirpath), every_n_steps=int(every_n_train_steps or 0),
                       every_seconds=60.0 * float(every_n_minutes or 0), keep=int(keep))
