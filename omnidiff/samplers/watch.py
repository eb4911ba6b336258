"""Watching a sampler run: a callback after every step, and the progress bar built on it.

A sampler is a loop over a time grid ``t_0 > t_1 > ... > t_K = 0``; step ``k`` takes the state
from ``t_{k-1}`` to ``t_k``. The samplers do not report their steps themselves: every one of
them evaluates the denoiser at (or below) ``t_k`` once step ``k`` is done (the next step's
start, Heun's correction, or the final jump to clean data), so :class:`StepWatch` sees the
denoiser's evaluations and reports a step the first time the time reaches its end. That holds
for every sampler of the core (``rk45`` too: it integrates adaptively between the grid's
times) and for imputation, editing and RePaint around them (RePaint's jumps back up are not
reported again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from tqdm.auto import tqdm

__all__ = ["SamplingStep", "StepWatch", "ProgressSteps"]


@dataclass
class SamplingStep:
    """What a step callback receives: ``step`` of ``steps`` (1-based), the time ``t`` the
    state has reached, the current clean estimate ``x0`` ``(B, *event)`` (the network's, on the
    model's device; after the last step, the samples), and the ``batch`` index when samples
    are drawn in several batches."""

    step: int
    steps: int
    t: float
    x0: torch.Tensor
    batch: int = 0


class StepWatch:
    """Calls ``callback(SamplingStep)`` once per step of the grid ``ts`` (python floats,
    decreasing, ending in 0), from the denoiser's evaluations (:meth:`seen`) and the final
    samples (:meth:`finish`)."""

    def __init__(self, ts: list[float], callback: Callable[[SamplingStep], Any]):
        self.ts, self.callback = ts, callback
        self.steps = len(ts) - 1
        self.done = 0

    def _report(self, x0: torch.Tensor) -> None:
        self.done += 1
        self.callback(SamplingStep(self.done, self.steps, self.ts[self.done], x0))

    def seen(self, t: float, x0: torch.Tensor) -> None:
        """An evaluation at time ``t`` with clean estimate ``x0``: the steps it ends."""
        while self.done < self.steps - 1 and t <= self.ts[self.done + 1] + 1e-12:
            self._report(x0)

    def finish(self, x0: torch.Tensor) -> None:
        """The samples: the last step (and any a sampler passed over without evaluating)."""
        while self.done < self.steps:
            self._report(x0)


class ProgressSteps:
    """A progress bar over the steps of every batch (``batches x steps``), as a step
    callback; ``then`` is the caller's own callback, called first."""

    def __init__(self, batches: int, desc: str = "sampling",
                 then: Callable[[SamplingStep], Any] | None = None):
        self.batches, self.desc, self.then = batches, desc, then
        self.bar: Any = None  # opened at the first step, when the step count is known

    def __call__(self, info: SamplingStep) -> None:
        if self.then is not None:
            self.then(info)
        if self.bar is None:
            self.bar = tqdm(total=self.batches * info.steps, desc=self.desc, unit="step",
                            leave=False, dynamic_ncols=True)
        self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
