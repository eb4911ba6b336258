"""Lightning callbacks for omnidiff runs: EMA, periodic sampling + metrics, a progress bar."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch import Callback
from lightning.pytorch.callbacks import EMAWeightAveraging, TQDMProgressBar

__all__ = ["EMA", "SampleCallback", "progress_bar", "averaged_module"]


class EMA(EMAWeightAveraging):
    """Lightning's :class:`EMAWeightAveraging`, exposing the averaged module for sampling.

    Lightning swaps the averaged weights in for validation, stores them as ``state_dict`` in
    checkpoints (raw weights beside them) and copies them into the module when training ends.
    """

    @property
    def average_module(self) -> Any | None:
        """The averaged copy of the LightningModule (None before fitting starts)."""
        avg = self._average_model
        return avg.module if avg is not None else None


def averaged_module(trainer: Any, pl_module: Any) -> Any:
    """The module holding the EMA weights during training (``pl_module`` without EMA)."""
    for cb in trainer.callbacks:
        if isinstance(cb, EMA) and cb.average_module is not None:
            return cb.average_module
    return pl_module


class SampleCallback(Callback):
    """Every ``every_n_steps`` optimizer steps (0: never) and when fitting ends, draw ``n``
    samples from the EMA model, write the domain's artifacts under ``<run>/samples`` and its
    metrics (against ``n_ref`` reference samples of the data module) to the logger.

    The final metrics are kept in :attr:`final_metrics`, the periodic ones in :attr:`history`.
    """

    def __init__(self, run_dir: str | Path, *, every_n_steps: int = 0, n: int = 512,
                 n_ref: int = 2048, sampler: str = "dpmpp_2m", steps: int = 20,
                 guidance: float | None = None, seed: int = 0, batch_size: int | None = None):
        self.run_dir = Path(run_dir)
        self.every_n_steps = int(every_n_steps)
        self.n, self.n_ref = int(n), int(n_ref)
        self.sampler, self.steps, self.guidance = sampler, int(steps), guidance
        self.seed, self.batch_size = int(seed), batch_size
        self.history: list[dict[str, Any]] = []
        self.final_metrics: dict[str, Any] = {}
        self._reference: tuple[torch.Tensor, torch.Tensor | None] | None = None
        self._last_step = -1

    def _ref(self, trainer: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self._reference is None:
            dm = trainer.datamodule
            self._reference = dm.reference(self.n_ref, torch.Generator().manual_seed(self.seed))
        return self._reference

    @torch.no_grad()
    def _run(self, trainer: Any, module: Any, prefix: str) -> dict[str, Any]:
        from .pipeline import generate_samples

        hp = module.hparams
        t0 = time.perf_counter()
        x, labels = generate_samples(module.model, self.n, event_shape=hp.event_shape,
                                     num_classes=hp.num_classes, sampler=self.sampler,
                                     steps=self.steps, guidance=self.guidance, seed=self.seed,
                                     batch_size=self.batch_size, progress=False)
        seconds = time.perf_counter() - t0
        module.domain.save_artifacts(x, self.run_dir / "samples", cond=labels, prefix=prefix)
        ref, ref_cond = self._ref(trainer)
        metrics = {k: float(v) for k, v in
                   module.domain.metrics(x, ref, cond=labels, ref_cond=ref_cond).items()}
        metrics["sample_seconds"] = round(seconds, 3)
        return metrics

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        step = trainer.global_step
        if (self.every_n_steps <= 0 or step == 0 or step % self.every_n_steps
                or step == self._last_step or not trainer.is_global_zero):
            return
        self._last_step = step
        metrics = self._run(trainer, averaged_module(trainer, pl_module), f"step{step:07d}")
        self.history.append({"step": step, **metrics})
        for logger in trainer.loggers:
            logger.log_metrics({f"sample/{k}": v for k, v in metrics.items()}, step=step)

    def on_fit_end(self, trainer: Any, pl_module: Any) -> None:
        # EMAWeightAveraging has copied the averaged weights into pl_module at on_train_end
        if not trainer.is_global_zero:
            return
        self.final_metrics = {"step": trainer.global_step,
                              **self._run(trainer, pl_module, "samples")}
        for logger in trainer.loggers:
            logger.log_metrics({f"final/{k}": v for k, v in self.final_metrics.items()
                                if k != "step"}, step=trainer.global_step)
            logger.save()


def progress_bar() -> Callback:
    """Rich when installed, else tqdm (Lightning's own fallback order)."""
    try:
        import rich  # noqa: F401
        from lightning.pytorch.callbacks import RichProgressBar
        return RichProgressBar()
    except Exception:
        return TQDMProgressBar(refresh_rate=20)
