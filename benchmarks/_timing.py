"""Side-by-side step timing shared by the benchmarks (one process, alternating contenders)."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Iterable


def alternate(names: Iterable[str], steps: dict[str, Callable[[str], None]], warmup: int,
              repeats: int) -> dict[tuple[str, str], float]:
    """Median milliseconds of every ``steps[what](name)``: after ``warmup`` rounds, each repeat
    runs every step of every contender in turn, so load drifts hit all of them alike."""
    names = list(names)
    for name in names:
        for _ in range(warmup):
            for fn in steps.values():
                fn(name)
    times: dict[tuple[str, str], list[float]] = {(n, w): [] for n in names for w in steps}
    for _ in range(repeats):
        for name in names:
            for what, fn in steps.items():
                t0 = time.perf_counter()
                fn(name)
                times[(name, what)].append(time.perf_counter() - t0)
    return {key: statistics.median(v) * 1000 for key, v in times.items()}
