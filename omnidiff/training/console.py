"""What a run prints: one progress bar for the whole run, and nothing of Lightning's chatter
unless asked (``verbose=true``).

Lightning alone prints, for every run, which accelerators exist (GPU / TPU lines), an
advertisement for its cloud logger, a deprecation warning from its own use of torch's pytree,
"fewer batches than the logging interval" for small data, "`Trainer.fit` stopped" and one
progress bar per epoch (hundreds for a dataset of one batch). A user needs the bar (steps, loss,
time left), the run folder and the summary; the rest stays behind ``verbose=true``. Warnings
that name a real problem of the run (and every error) are never silenced.
"""

from __future__ import annotations

import logging
import sys
import warnings
from typing import Any

from lightning.pytorch.callbacks.progress.progress_bar import ProgressBar
from tqdm.auto import tqdm

__all__ = ["quiet_lightning", "RunProgressBar"]

# warnings about Lightning's own code or about settings omnidiff chose, not the user's run
_NOISE = (r".*isinstance\(treespec, LeafSpec\)` is deprecated.*",
          r".*is smaller than the logging interval.*",
          r".*does not have many workers which may be a bottleneck.*",
          r".*GPU available but not used.*")


def quiet_lightning(verbose: bool = False) -> None:
    """Silence Lightning's informational lines and the warnings in ``_NOISE`` (``verbose``:
    leave everything as Lightning prints it)."""
    if verbose:
        return
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in _NOISE:
        warnings.filterwarnings("ignore", message=pattern)


class RunProgressBar(ProgressBar):
    """One bar over the run's optimizer steps (not one per epoch), with the training loss, the
    latest validation loss and the time left; none during validation. On a terminal it updates
    ten times a second; into a file or pipe every ``file_interval`` seconds."""

    def __init__(self, file_interval: float = 30.0):
        super().__init__()
        self._enabled = True
        self._bar: Any = None
        self.file_interval = float(file_interval)

    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    def _total(self, trainer: Any) -> int | None:
        if trainer.max_steps and trainer.max_steps > 0:
            return int(trainer.max_steps)
        if trainer.max_epochs and trainer.max_epochs > 0:
            per_epoch = trainer.num_training_batches
            accumulate = max(1, int(trainer.accumulate_grad_batches))
            if per_epoch != float("inf"):
                return int(trainer.max_epochs * per_epoch // accumulate)
        return None

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        if not (self._enabled and trainer.is_global_zero):
            return
        tty = sys.stdout.isatty()
        self._bar = tqdm(total=self._total(trainer), initial=trainer.global_step, desc="train",
                         unit="step", file=sys.stdout, dynamic_ncols=True,
                         mininterval=0.1 if tty else self.file_interval, leave=True)

    def on_train_batch_end(self, trainer: Any, pl_module: Any, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar = self._bar
        if bar is None or trainer.global_step <= bar.n:
            return
        bar.update(trainer.global_step - bar.n)
        shown = {}
        for key, value in trainer.progress_bar_metrics.items():
            short = {"train/loss": "loss", "val/loss": "val"}.get(key)
            if short is not None:
                shown[short] = f"{float(value):.4g}"
        if shown:
            bar.set_postfix(shown, refresh=False)

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.on_train_end(trainer, pl_module)
