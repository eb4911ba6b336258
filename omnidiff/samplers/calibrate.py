"""Calibrated time grids: the few-step grid that makes one sampler most accurate for one model.

At 5-10 model evaluations the choice of times, not the update rule, dominates a sampler's
error (Align Your Steps, Sabour et al. 2024; GITS, Chen et al. 2024; LD3, Tong et al. 2024).
:func:`calibrate_grid` fits the grid to the model itself:

1. Reference. The probability-flow ODE from a batch of calibration noise, solved tightly
   (adaptive RK45 in log-SNR, ``rtol``) to t_min, then the x0-prediction there: what every
   sampler converges to as its NFE grows.
2. Starts. Every named grid at the NFE budget (and ``start``, if given), and a coarse global
   look over a three-parameter family (first and last log-SNR, and a warp between uniform in
   log-SNR and Karras-like crowding at either end): the best named grid and the best member
   of the family are the two starting points. (Measured: from the named grid alone the
   search often stalls in a poor basin, e.g. 3.8x worse on a narrow 16-D mixture at 5 NFE.)
3. Search. From each start, a pattern search (Hooke & Jeeves 1961) over the grid's log-SNR
   values, every one free (the first may move below t_max where the signal is still
   negligible, as diffusers' ``leading`` spacing does; the last above t_min, which decides
   how early the final denoising step comes): each point is moved up and down by a step in
   lambda, kept (and pushed further the same way) when it lowers the score of the whole
   sampler run, and the step halves when no point moves. The score is the geometric mean
   over samples of the global endpoint error ``||x - x_ref||`` (not a sum of local errors),
   so a sampler's warm-up, its history and its final step are all accounted for; the
   geometric mean follows the typical sample where the mean would chase the few whose
   trajectories switch modes.

A move is kept only when the score falls, so the result is never worse than the best named
grid on the calibration noise; on other noise it generalises because a handful of times are
fitted to hundreds of samples. Everything is deterministic given the noise.
"""

from __future__ import annotations

import math
import time as _time
from typing import Any, Callable

import torch

from omnidiff._util import check_choice
from omnidiff.core.schedules import Schedule, get_schedule
from omnidiff.errors import UserError
from omnidiff.samplers.denoiser import coefficients
from omnidiff.samplers.grids import GRIDS, LAMBDA_FLOOR, explicit_grid, timesteps
from omnidiff.samplers.helpers import time_of
from omnidiff.samplers.sampling import SAMPLERS, STOCHASTIC, resolve_grid, sample

__all__ = ["calibrate_grid", "grid_error", "grid_key", "stored_grid"]

# lambda gap kept between neighbouring grid points (times strictly decreasing)
MIN_GAP = 1e-3


# sampler options that change the model, not the solver: not part of a grid's key
NOT_SOLVER = ("grid", "clip_x0")


def grid_key(sampler: str, steps: int, options: dict | None = None) -> str:
    """The key a calibrated grid is stored under in ``model.pt``: the sampler, its solver
    options (if any) and the steps, e.g. ``"dpmpp_2m:5"`` or
    ``"unipc[order=3,variant=bh1]:10"``."""
    opts = {k: v for k, v in (options or {}).items() if k not in NOT_SOLVER and v is not None}
    inner = ",".join(f"{k}={opts[k]}" for k in sorted(opts))
    return f"{sampler}{f'[{inner}]' if inner else ''}:{int(steps)}"


def stored_grid(grids: dict | None, sampler: str, steps: int, options: dict | None = None
                ) -> torch.Tensor | None:
    """The calibrated times stored for this sampler, its options and steps (or None)."""
    entry = (grids or {}).get(grid_key(sampler, steps, options))
    return None if entry is None else torch.tensor(entry["times"], dtype=torch.float64)


def _errors(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-sample endpoint error ``||x - ref||``: (B,) float64."""
    return (x.double() - ref.double()).flatten(1).norm(dim=1)


def _score(errors: torch.Tensor) -> float:
    """What the search minimises: the geometric mean of the per-sample errors. It tracks the
    median (the typical sample), where the mean would chase the few samples whose trajectory
    switches between modes, and it is smooth enough for small moves to register."""
    return float(errors.clamp_min(1e-30).log().mean())


def grid_error(model: Callable, noise: torch.Tensor, reference: torch.Tensor, grid: Any, *,
               schedule: Schedule | str, prediction: str, sampler: str,
               **options: Any) -> torch.Tensor:
    """Per-sample endpoint errors (B,) of ``sampler`` on ``grid`` against ``reference``."""
    x = sample(model, noise, schedule=schedule, prediction=prediction, sampler=sampler,
               grid=grid, state_dtype=torch.float64, **options)
    return _errors(x, reference)


class _Search:
    """The grid as log-SNR values ``lam`` (increasing), bounded by the schedule's range."""

    def __init__(self, schedule: Schedule, objective: Callable[[torch.Tensor], float]):
        self.schedule, self.objective = schedule, objective
        self.lam_lo = max(coefficients(schedule, schedule.t_max)[2], LAMBDA_FLOOR)
        self.lam_hi = coefficients(schedule, schedule.t_min)[2]
        self.evals = 0

    def to_grid(self, lam: list[float]) -> torch.Tensor:
        ts = [min(max(time_of(self.schedule, v), self.schedule.t_min), self.schedule.t_max)
              for v in lam]
        if lam[0] <= self.lam_lo + 1e-12:
            ts[0] = self.schedule.t_max
        if lam[-1] >= self.lam_hi - 1e-12:
            ts[-1] = self.schedule.t_min
        return torch.tensor(ts + [0.0], dtype=torch.float64)

    def of_grid(self, grid: torch.Tensor) -> list[float]:
        return [min(max(coefficients(self.schedule, float(t))[2], self.lam_lo), self.lam_hi)
                for t in grid[:-1]]

    def valid(self, lam: list[float]) -> bool:
        if lam[0] < self.lam_lo - 1e-12 or lam[-1] > self.lam_hi + 1e-12:
            return False
        return all(b - a >= MIN_GAP for a, b in zip(lam[:-1], lam[1:]))

    def f(self, lam: list[float]) -> float:
        self.evals += 1
        return self.objective(self.to_grid(lam))

    def family(self, steps: int) -> list[tuple[float, list[float]]]:
        """A coarse global look over three-parameter grids: first and last log-SNR, and the
        warp q of ``lambda(u) = -log((1 - u) e^{-q lam_a} + u e^{-q lam_b}) / q`` (q = 0:
        uniform in log-SNR; q = 1/7: Karras et al.'s rho = 7; q < 0 crowds the noisy end).
        Returns (score, lambdas) pairs, best first."""
        span = self.lam_hi - self.lam_lo
        out = []
        for a in (0.0, 0.15, 0.3):
            for b in (0.0, 0.15, 0.3, 0.45):
                lam_a, lam_b = self.lam_lo + a * span, self.lam_hi - b * span
                if lam_b - lam_a < MIN_GAP * steps:
                    continue
                for q in (-0.25, 0.0, 1 / 7, 0.5):
                    u = torch.linspace(0, 1, steps, dtype=torch.float64)
                    if q == 0.0:
                        lam = lam_a + u * (lam_b - lam_a)
                    else:
                        lam = -torch.log((1 - u) * math.exp(-q * lam_a)
                                         + u * math.exp(-q * lam_b)) / q
                    lam = [float(v) for v in lam]
                    if self.valid(lam):
                        out.append((self.f(lam), lam))
        return sorted(out, key=lambda p: p[0])

    def _moved(self, lam: list[float], i: int, delta: float) -> list[float] | None:
        """``lam`` with point ``i`` moved by ``delta`` in log-SNR, or None if that breaks the
        grid (order, gap or range)."""
        cand = list(lam)
        cand[i] += delta
        return cand if self.valid(cand) else None

    def _try(self, lam: list[float], fx: float, i: int, delta: float, max_evals: int
             ) -> tuple[list[float], float]:
        """Move point ``i`` by ``delta`` while each move lowers the score."""
        while self.evals < max_evals:
            cand = self._moved(lam, i, delta)
            if cand is None:
                break
            fc = self.f(cand)
            if fc >= fx:
                break
            lam, fx = cand, fc
        return lam, fx

    def run(self, lam: list[float], fx: float, step: float, tol: float, max_evals: int,
            progress: Any = None) -> tuple[list[float], float]:
        """Pattern search (Hooke & Jeeves 1961): each point moved up, else down, by ``step``
        and pushed on the same way while the score keeps falling; the step halves after a
        sweep that moves nothing, until it is below ``tol`` or ``max_evals`` runs are made."""
        while step >= tol and self.evals < max_evals:
            before = fx
            for i in range(len(lam)):
                for delta in (step, -step):
                    lam, f_new = self._try(lam, fx, i, delta, max_evals)
                    if f_new < fx:
                        fx = f_new
                        break
            if progress is not None:
                progress(step, fx, self.evals)
            if fx >= before:
                step /= 2.0
        return lam, fx


def _check(sampler: str, steps: Any, noise: torch.Tensor, options: dict) -> None:
    check_choice("sampler", sampler, SAMPLERS)
    if sampler in STOCHASTIC or sampler == "rk45" or float(options.get("eta", 0.0)) != 0.0:
        raise UserError(f"calibrate a deterministic sampler (an ODE solver), not {sampler!r}"
                         f"{' with eta' if 'eta' in options else ''}: a grid is fitted to the "
                         "solution of the probability-flow ODE")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 2:
        raise UserError(f"steps must be an integer >= 2 to calibrate (1 step has only the "
                         f"start to choose), got {steps!r}")
    if noise.ndim < 2 or noise.shape[0] < 2:
        raise UserError(f"noise must be a batch (B >= 2, *event), got {tuple(noise.shape)}")


def _named_starts(schedule: Schedule, steps: int, start: Any) -> dict[str, torch.Tensor]:
    """Every general-purpose named grid at ``steps``, and the caller's ``start``."""
    starts = {g: timesteps(schedule, steps, g) for g in GRIDS if g != "diffwave"}
    if start is not None:
        ts, label = resolve_grid(schedule, steps, start)
        if len(ts) - 1 != steps:
            raise UserError(f"start grid has {len(ts) - 1} steps, not steps={steps}")
        starts[label if isinstance(start, str) else "start"] = ts
    return starts


def _summary(e: torch.Tensor) -> dict:
    return {"mean": float(e.mean()), "median": float(e.median()),
            "rms": float(e.pow(2).mean().sqrt())}


def calibrate_grid(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                   noise: torch.Tensor, *, schedule: Schedule | str, prediction: str,
                   sampler: str = "dpmpp_2m", steps: int = 5, start: Any = None,
                   rtol: float = 1e-6, tol: float = 1e-2, max_evals: int | None = None,
                   stats: dict | None = None, verbose: bool = False,
                   **options: Any) -> torch.Tensor:
    """The ``(steps + 1,)`` time grid (ending in 0) that minimises ``sampler``'s endpoint
    error over ``noise`` (geometric mean over samples) against a tight solution of the same
    probability-flow ODE.

    model: ``model(x_t, t) -> prediction`` as for :func:`~omnidiff.samplers.sample` (wrap it
    in :func:`~omnidiff.core.guidance.classifier_free` to calibrate a guided model). noise:
    (B, *event) calibration noise (a few hundred samples for small events, 32-128 for images);
    keep it apart from the noise you evaluate on. sampler: a deterministic sampler (an ODE
    solver); ``options`` go to it as in ``sample`` (``clip_x0`` to the reference too).
    start: an extra grid to start from (a name or times). rtol: tolerance of the reference
    solver. tol: the search stops when its step in log-SNR falls below this. max_evals: most
    sampler runs of the refinement (default 40 per step; the named grids and the coarse look
    cost about 50 more). A run costs ``steps`` model calls on the whole batch, so a cheap
    model affords more: the benchmark uses ``tol=2e-3, max_evals=80 * steps``. stats, if a
    dict, receives the errors (mean / median / RMS) of the best named grid (``start``) and
    of the result, the sampler runs, the reference's NFE and the seconds taken.
    """
    schedule = get_schedule(schedule)
    _check(sampler, steps, noise, options)
    t0 = _time.perf_counter()
    ref_stats: dict = {}
    reference = sample(model, noise, schedule=schedule, prediction=prediction, sampler="rk45",
                       rtol=rtol, atol=rtol, state_dtype=torch.float64, stats=ref_stats,
                       clip_x0=options.get("clip_x0")).double()

    def errors(grid: torch.Tensor) -> torch.Tensor:
        return grid_error(model, noise, reference, grid, schedule=schedule,
                          prediction=prediction, sampler=sampler, **options)

    starts = _named_starts(schedule, steps, start)
    named_errors = {name: errors(ts) for name, ts in starts.items()}
    named = {name: _score(e) for name, e in named_errors.items()}
    name0 = min(named, key=named.get)
    search = _Search(schedule, lambda g: _score(errors(g)))
    budget = (40 * steps if max_evals is None else int(max_evals)) // 2
    report = (lambda step, fx, n: print(f"  calibrate {sampler}:{steps}  step {step:.3g}  "
                                        f"score {fx:.4g}  runs {n}")) if verbose else None
    # the best named grid and the best of the coarse family, each refined; the best wins
    best_lam, best = None, named[name0]
    for f0, lam0 in [(best, search.of_grid(starts[name0]))] + search.family(steps)[:1]:
        if not search.valid(lam0):  # e.g. a named grid with a repeated time
            continue
        lam, f = search.run(lam0, f0, step=0.5 * (lam0[-1] - lam0[0]) / steps, tol=tol,
                            max_evals=search.evals + budget, progress=report)
        if f < best:
            best_lam, best = lam, f
    grid = starts[name0] if best_lam is None else search.to_grid(best_lam)
    if stats is not None:
        stats.update(n=int(noise.shape[0]), start=name0,
                     start_error=_summary(named_errors[name0]), error=_summary(errors(grid)),
                     runs=search.evals + len(starts), reference_nfe=ref_stats.get("nfe"),
                     seconds=round(_time.perf_counter() - t0, 2), named_scores=named)
    return explicit_grid(schedule, grid)
