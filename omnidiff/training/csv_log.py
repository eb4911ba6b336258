"""The CSV log of a run, kept across resumes."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.logger import rank_zero_experiment

__all__ = ["ResumableCSVLogger"]


class ResumableCSVLogger(CSVLogger):
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
