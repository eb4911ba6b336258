"""How many CPU threads torch uses, the same way everywhere a model runs (training, evaluation,
``omnidiff sample``, :func:`omnidiff.load`).

torch's own default is the machine's core count, whatever share of it this process may use; on
a shared machine (a CPU affinity mask from ``taskset``, a container's or SLURM's CPU set, or
another job on the same cores) that oversubscribes, and small models then run many times
slower. The default here is ``OMP_NUM_THREADS`` when set, else the CPUs this process may run
on, and never more than torch's own default.
"""

from __future__ import annotations

import os
from typing import Any

import torch

from omnidiff._util import INT64_MAX, number_problem
from omnidiff.errors import UserError

__all__ = ["default_threads", "use_threads"]


def default_threads() -> int:
    """``OMP_NUM_THREADS`` (when a positive integer), else the CPUs in this process's affinity
    mask, capped at torch's own default."""
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    try:
        allowed = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not on Linux
        allowed = os.cpu_count() or 1
    return max(1, min(allowed, torch.get_num_threads()))


def use_threads(threads: Any = None) -> int:
    """Set torch's intra-op threads to ``threads`` (None: :func:`default_threads`); returns the
    count. Anything but a positive integer is one :class:`UserError` naming ``threads=``."""
    if threads is None:
        threads = default_threads()
    problem = number_problem("threads", threads, int, 1, INT64_MAX)
    if problem:
        raise UserError(problem + " (threads=1 is fastest for small models on a busy machine)")
    torch.set_num_threads(int(threads))
    return int(threads)
