"""Training a recipe from a benchmark: one call, in this process, timed."""

from __future__ import annotations

import time
from pathlib import Path

from omnidiff.tasks.config import compose
from omnidiff.tasks.train import train


def train_recipe(recipe: str, out: Path, overrides: tuple[str, ...] = ()) -> Path:
    """Train ``recipe`` with its defaults into ``out`` (overwritten) and return its model.pt."""
    t0 = time.perf_counter()
    run = train(compose(recipe, [f"out={out}", "overwrite=true",
                                 "trainer.enable_progress_bar=false", *overrides]))
    print(f"trained {recipe} in {time.perf_counter() - t0:.0f} s: {run}")
    return Path(run) / "model.pt"
