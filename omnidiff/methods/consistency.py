"""Consistency models (Song et al. 2023; improved training: Song & Dhariwal 2023), in the
core's convention, as small pieces that any domain's network plugs into.

A consistency function maps any point ``x_t`` of a probability-flow ODE trajectory to the
trajectory's clean end. It is built from a diffusion network (whatever it predicts) by the
boundary-condition parametrisation:

* :class:`ConsistencyModel` — ``f(x_t, t) = c_skip(t) x_t + c_out(t) x0_hat(x_t, t)`` with
  :func:`boundary_coefficients`: ``c_skip = 1, c_out = 0`` exactly at ``t_min``, so
  ``f(x, t_min) = x`` whatever the weights (Song et al. 2023, eq. 3 and appendix C; the
  noise level is EDM's ``sigma~ = sigma / alpha``, sharpened by ``scale`` as in LCM).

Training compares the student at a noise level ``t_{n+1}`` with a stop-gradient target at the
next lower level ``t_n`` (:func:`consistency_loss`); the point at ``t_n`` comes from

* consistency distillation (CD): one step of a teacher's probability-flow ODE from ``t_{n+1}``,
  with any of the core's ODE samplers (:func:`teacher_step`);
* consistency training (CT): the same data and noise at ``t_n`` (:func:`training_step_point`),
  no teacher at all.

A student trained for the grid it will be sampled on (multistep consistency, Heek et al.
2024): with ``K`` segments split at the times of the sampler's K-step grid
(:func:`segment_ends`), the student's x0 estimate is compared after a DDIM move to its
segment's lower end (:func:`to_segment_end`), so it learns to land on the teacher's trajectory
there; DDIM on that grid then samples in K evaluations with no fresh noise.

The remaining pieces: the noise levels (:func:`discretization`, Karras' rho = 7 in
``sigma~``), improved CT's curriculum that doubles their number (:func:`curriculum`), its
log-normal choice of level (:func:`level_probabilities`) and weighting ``1 / (sigma~_{n+1} -
sigma~_n)`` (:func:`level_weights`), and the pseudo-Huber distance (:func:`pseudo_huber`).
Sampling is the core's ``consistency`` sampler (:mod:`omnidiff.samplers.consistency`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch

from omnidiff._util import append_dims, check_choice
from omnidiff.core.conditions import index_cond
from omnidiff.core.forward import add_noise
from omnidiff.core.guidance import classifier_free
from omnidiff.core.losses import cfg_drop_mask
from omnidiff.core.model import DiffusionModel
from omnidiff.core.predictions import to_x0_eps
from omnidiff.core.schedules import Schedule
from omnidiff.errors import UserError
from omnidiff.samplers import SAMPLERS
from omnidiff.samplers.denoiser import Denoiser
from omnidiff.samplers.grids import LAMBDA_FLOOR, timesteps

__all__ = ["ConsistencyModel", "boundary_coefficients", "discretization", "curriculum",
           "level_probabilities", "level_weights", "sample_levels", "pseudo_huber",
           "huber_c", "teacher_step", "distillation_points", "training_step_point",
           "consistency_loss", "segment_ends", "to_segment_end", "SEGMENT_GRID",
           "level_candidates", "choose_times", "LEVEL_SAMPLING", "WEIGHTINGS",
           "DISTANCES"]

LEVEL_SAMPLING = ("uniform", "lognormal")
SEGMENT_GRID = "logsnr_trailing"  # a multistep student's segments end at this grid's times
WEIGHTINGS = ("uniform", "ict")
DISTANCES = ("pseudo_huber", "l2")


def boundary_coefficients(schedule: Schedule, t: torch.Tensor, *, sigma_data: float = 1.0,
                          scale: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """(c_skip, c_out), each (B,) float64, for times t: (B,).

    With ``u = scale * (sigma~(t) - sigma~(t_min)) / sigma_data`` (``sigma~ = sigma / alpha``):
    ``c_skip = 1 / (1 + u^2)`` and ``c_out = 1 - c_skip``. At ``t_min`` u is exactly 0, so
    ``c_skip = 1`` and ``c_out = 0``; at zero terminal SNR (alpha = 0) ``c_skip = 0``. Song et
    al.'s c_skip with its c_out scaling a raw network output; here c_out weighs the network's
    x0 estimate (whatever it predicts), so above a few ``sigma_data / scale`` the student is
    its teacher's denoiser at the start, and the mix stays convex.
    """
    # t_min in t's own dtype: a float32 t_min then gives u = 0 exactly, as a float64 one does
    t0 = torch.full_like(t, schedule.t_min).double()
    a, s = schedule.alpha_sigma(t.double())
    a0, s0 = schedule.alpha_sigma(t0)
    u = scale * (s / a - s0 / a0) / sigma_data  # (B,), inf where alpha = 0
    c_skip = 1.0 / (1.0 + u * u)
    return c_skip, 1.0 - c_skip


class ConsistencyModel(DiffusionModel):
    """A consistency function over a diffusion network: its output is ``f(x_t, t)``, an x0
    estimate (``prediction == "x0"`` for the samplers), and ``f(x, t_min) = x`` exactly.

    ``net_prediction`` is what the network itself predicts (the teacher's type, so a student
    starts from the teacher's weights); the state dict is a :class:`DiffusionModel`'s.
    """

    def __init__(self, net: torch.nn.Module, schedule: Schedule | str | dict,
                 prediction: str = "eps", sigma_data: float = 1.0, scale: float = 10.0):
        super().__init__(net, schedule, prediction, sigma_data)
        self.net_prediction, self.prediction = self.prediction, "x0"
        self.scale = float(scale)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        out = super().forward(x_t, t, cond, drop)  # (B, *event): the network's prediction
        x0, _ = to_x0_eps(self.net_prediction, out, x_t, t.double(), self.schedule)
        c_skip, c_out = boundary_coefficients(self.schedule, t, sigma_data=self.sigma_data,
                                              scale=self.scale)  # (B,) each
        skip = append_dims(c_skip.to(x_t.dtype), x_t.ndim)
        return skip * x_t + append_dims(c_out.to(x_t.dtype), x_t.ndim) * x0.to(x_t.dtype)


# ---- noise levels ---------------------------------------------------------------------------

def discretization(schedule: Schedule, n: int) -> torch.Tensor:
    """(n,) float64 times ``t_min = t_1 < ... < t_n = t_max``, uniform in ``sigma~^(1/7)``
    (Karras et al. 2022's rho = 7, the levels of Song et al. 2023)."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise UserError(f"a consistency discretization needs at least 2 noise levels, got {n!r}")
    return timesteps(schedule, n, "karras")[:-1].flip(0)


def segment_ends(schedule: Schedule, levels: torch.Tensor, segments: int
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """(levels with the segments' boundaries added (m,), the lower end of each level's segment
    (m,)), float64, for ``segments`` >= 2 pieces split at the times of the
    :data:`SEGMENT_GRID` grid of that many steps. The lowest segment ends at ``t_min``."""
    grid = timesteps(schedule, int(segments), SEGMENT_GRID)  # (K + 1,): t_max, ..., 0
    inner = grid[1:-1].double()  # (K - 1,) boundaries, descending
    ts = torch.unique(torch.cat([levels.double(), inner]))  # ascending
    ends = torch.full_like(ts, float(ts[0]))
    for b in inner.flip(0):  # ascending boundaries: each level at or above b ends there
        ends = torch.where(ts >= b, b, ends)
    return ts, ends


def to_segment_end(x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor, end: torch.Tensor,
                   schedule: Schedule) -> torch.Tensor:
    """DDIM from ``x_t`` at ``t`` with clean estimate ``x0`` to the time ``end``, divided by
    alpha(end), so it is in x0's units: ``x0 + (sigma/alpha)(end) eps_hat``. Rows whose end is
    the lowest level keep ``x0`` (a plain consistency function there). All (B, ...) / (B,)."""
    a_t, s_t = (append_dims(v.to(x0.dtype), x0.ndim) for v in schedule.alpha_sigma(t.double()))
    ratio = torch.exp(-schedule.log_snr(end.double()))  # sigma / alpha at the end
    ratio = torch.where(end <= schedule.t_min, torch.zeros_like(ratio), ratio)
    eps = (x_t - a_t * x0) / s_t
    return x0 + append_dims(ratio.to(x0.dtype), x0.ndim) * eps


def curriculum(step: int, total_steps: int, s0: int = 10, s1: int = 1280) -> int:
    """Improved CT's number of levels at training step ``step`` of ``total_steps`` (Song &
    Dhariwal 2023, eq. 5): ``min(s0 * 2^floor(step / K'), s1) + 1`` with
    ``K' = floor(total_steps / (log2(s1 / s0) + 1))``: the levels double in equal stages."""
    stage = max(1, math.floor(total_steps / (math.log2(s1 / s0) + 1)))
    return min(s0 * 2 ** (step // stage), s1) + 1


def _sigma_tilde(schedule: Schedule, ts: torch.Tensor) -> torch.Tensor:
    """sigma / alpha at times ``ts``, at most 200 (the log-SNR floor of the core's grids, so a
    zero-terminal-SNR schedule's last level stays finite)."""
    return torch.exp(-schedule.log_snr(ts.double()).clamp_min(LAMBDA_FLOOR))


def level_probabilities(schedule: Schedule, ts: torch.Tensor, kind: str = "uniform", *,
                        p_mean: float = -1.1, p_std: float = 2.0) -> torch.Tensor:
    """(n - 1,) float64: the probability of training on the pair of levels (n, n + 1).

    ``uniform`` (Song et al. 2023); ``lognormal`` (Song & Dhariwal 2023, sec. 3.5): the mass a
    log-normal ``ln sigma~ ~ N(p_mean, p_std^2)`` puts between the two levels.
    """
    check_choice("level sampling", kind, LEVEL_SAMPLING)
    m = ts.numel() - 1
    if kind == "uniform":
        return torch.full((m,), 1.0 / m, dtype=torch.float64)
    z = (torch.log(_sigma_tilde(schedule, ts)) - p_mean) / (math.sqrt(2.0) * p_std)
    mass = torch.erf(z[1:]) - torch.erf(z[:-1])
    return mass / mass.sum()


def level_weights(schedule: Schedule, ts: torch.Tensor, kind: str = "uniform") -> torch.Tensor:
    """(n - 1,) float64 loss weights per pair of levels: ``uniform`` (1) or ``ict`` (Song &
    Dhariwal 2023, sec. 3.3: ``1 / (sigma~_{n+1} - sigma~_n)``)."""
    check_choice("consistency weighting", kind, WEIGHTINGS)
    if kind == "uniform":
        return torch.ones(ts.numel() - 1, dtype=torch.float64)
    s = _sigma_tilde(schedule, ts)
    return 1.0 / (s[1:] - s[:-1])


def sample_levels(probs: torch.Tensor, batch: int, *, generator: torch.Generator | None = None,
                  device: Any = None, groups: int | None = None) -> torch.Tensor:
    """(batch,) long indices n of the lower level of each training pair, drawn from ``probs``:
    one per sample, or ``groups`` draws each shared by a contiguous block of the batch (fewer
    solver calls per step in distillation, at the price of more correlated batches)."""
    draws = batch if not groups else min(int(groups), batch)
    n = torch.multinomial(probs.to(device), draws, replacement=True, generator=generator)
    if draws == batch:
        return n
    return n.repeat_interleave(-(-batch // draws))[:batch]


# ---- the sampling grid ----------------------------------------------------------------------

def level_candidates(schedule: Schedule, n: int, lo: float = 0.05, hi: float = 5.0,
                     most: int = 12) -> list[float]:
    """The times of a student's ``n`` training levels whose ``sigma~`` lies in ``[lo, hi]``,
    descending, at most ``most`` of them (evenly spread over those, for a curriculum's
    hundreds): where a multistep consistency sampler may re-noise to. A student is accurate
    at its levels and less so between them: on a narrow-mode 2-D mixture, re-noising to the
    level below the 2-step logsnr_trailing time instead of that time took sliced W2 from
    1.44x to 1.0x the teacher's."""
    ts = discretization(schedule, n)  # (n,) ascending
    s = _sigma_tilde(schedule, ts)
    keep = ts[(s >= lo) & (s <= hi)].flip(0)  # (m,) descending
    if keep.numel() > most:
        keep = keep[torch.linspace(0, keep.numel() - 1, most).round().long()]
    return keep.tolist()


def choose_times(score: Callable[[list[float]], float], start: list[float],
                 candidates: list[float]) -> tuple[list[float], float, float]:
    """Coordinate search over a multistep grid ``start = [t_max, t_1, ..., t_{k-1}, 0]``:
    each inner time in turn moves to the candidate strictly between its neighbours with the
    lowest ``score(grid)`` (lower is better), if that beats the grid so far. Returns (the
    grid, its score, start's score)."""
    grid = [float(t) for t in start]
    first = best = float(score(grid))
    for i in range(1, len(grid) - 1):
        for c in candidates:
            if not grid[i + 1] < c < grid[i - 1] or c == grid[i]:
                continue
            trial = [*grid[:i], float(c), *grid[i + 1:]]
            value = float(score(trial))
            if value < best:
                grid, best = trial, value
    return grid, best, first


# ---- the distance ---------------------------------------------------------------------------

def huber_c(numel: int) -> float:
    """Improved CT's pseudo-Huber constant for data of ``numel`` values: 0.00054 sqrt(d)."""
    return 0.00054 * math.sqrt(numel)


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """(B,) ``sqrt(|a - b|^2 + c^2) - c`` over each sample's values (Song & Dhariwal 2023,
    sec. 3.3): quadratic for small differences, linear for large ones."""
    sq = (a.float() - b.float()).pow(2).flatten(1).sum(1)
    return torch.sqrt(sq + c * c) - c


# ---- the point at the lower level -----------------------------------------------------------

StepFn = Callable[..., torch.Tensor]


def teacher_step(model: Callable[[torch.Tensor, torch.Tensor], torch.Tensor], x: torch.Tensor,
                 t_from: float, t_to: float, *, schedule: Schedule, prediction: str,
                 solver: str = "heun", substeps: int = 1, **options: Any) -> torch.Tensor:
    """``substeps`` equal steps in t of the core's ODE sampler ``solver`` from ``t_from`` down
    to ``t_to`` for ``model(x_t, t) -> prediction`` (a teacher, guided or not).
    x: (B, *event)."""
    denoise = Denoiser(model, schedule, prediction, x.dtype)
    times = torch.linspace(float(t_from), float(t_to), int(substeps) + 1, dtype=torch.float64)
    return SAMPLERS[solver](denoise, x, times.tolist(), **options)


def distillation_points(teacher: Callable[..., torch.Tensor], levels: list[float], *,
                        schedule: Schedule, prediction: str, solver: str = "heun",
                        guidance: float | None = None, substeps: int = 1) -> StepFn:
    """CD's lower point: per level present in the batch, ``substeps`` ``solver`` steps of the
    teacher's ODE (under classifier-free ``guidance``; rows whose condition is dropped follow
    the unconditional teacher). Returns ``step(x_hi, n, x0=, noise=, cond=, drop=) -> x_lo``.

    On a narrow-mode mixture, one Heun step between two of 18 Karras levels misses the exact
    ODE by about 0.03 where the trajectories choose their modes (sigma/alpha 0.3-1.1): as
    much as a mode's width. Two steps cut that to 0.006, three to 0.003."""
    def step(x_hi: torch.Tensor, n: torch.Tensor, *, x0: torch.Tensor, noise: torch.Tensor,
             cond: Any = None, drop: torch.Tensor | None = None) -> torch.Tensor:
        out = torch.empty_like(x_hi)
        for k in torch.unique(n).tolist():  # one solver call per level in the batch
            rows = (n == k).nonzero().squeeze(1)
            c = index_cond(cond, rows)
            fn = classifier_free(teacher, c, guidance if c is not None else None,
                                 drop=None if drop is None else drop[rows])
            out[rows] = teacher_step(fn, x_hi[rows], levels[k + 1], levels[k],
                                     schedule=schedule, prediction=prediction, solver=solver,
                                     substeps=substeps)
        return out
    return step


def training_step_point(levels: torch.Tensor, schedule: Schedule) -> StepFn:
    """CT's lower point: the same data and noise at level n, ``alpha x0 + sigma noise``
    (the one-sample estimate of the ODE step; Song et al. 2023, sec. 5)."""
    def step(x_hi: torch.Tensor, n: torch.Tensor, *, x0: torch.Tensor, noise: torch.Tensor,
             cond: Any = None, drop: torch.Tensor | None = None) -> torch.Tensor:
        return add_noise(x0, levels.to(x0.device)[n], schedule, noise)
    return step


# ---- the loss -------------------------------------------------------------------------------

def consistency_loss(student: Callable[..., torch.Tensor], target: Callable[..., torch.Tensor],
                     x0: torch.Tensor, *, schedule: Schedule, levels: torch.Tensor,
                     probs: torch.Tensor, weights: torch.Tensor, point: StepFn,
                     cond: Any = None, p_uncond: float = 0.1, distance: str = "pseudo_huber",
                     c: float | None = None, generator: torch.Generator | None = None,
                     level_groups: int | None = None, ends: torch.Tensor | None = None
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Consistency loss of a batch x0: (B, *event) (Song et al. 2023, eq. 7 / 10).

    Draw the pair (n, n + 1) from ``probs``, noise x0 to ``levels[n + 1]``, get the lower point
    with ``point`` (:func:`distillation_points` or :func:`training_step_point`) and compare
    ``student`` there with the stop-gradient ``target`` (an EMA copy, or the student itself)
    at ``levels[n]``, by ``distance`` (``pseudo_huber`` with constant ``c``, default
    :func:`huber_c`; or ``l2``), weighted per pair by ``weights``. Conditions are dropped for
    a ``p_uncond`` fraction of the batch, as in :func:`~omnidiff.core.losses.diffusion_loss`.
    ``level_groups``: draw that many pairs per batch, each shared by a block of it (see
    :func:`sample_levels`; None: one per sample). ``ends`` (per level, from
    :func:`segment_ends`): a multistep student, both sides compared after
    :func:`to_segment_end`.
    Returns (mean loss, per-sample loss (B,)).
    """
    check_choice("consistency distance", distance, DISTANCES)
    b, dev = x0.shape[0], x0.device
    n = sample_levels(probs, b, generator=generator, device=dev, groups=level_groups)  # (B,)
    ts = levels.to(dev)
    t_lo, t_hi = ts[n], ts[n + 1]  # (B,) float64
    noise = torch.randn(x0.shape, generator=generator, device=dev, dtype=x0.dtype)
    x_hi = add_noise(x0, t_hi, schedule, noise)  # (B, *event)
    drop = None if cond is None else cfg_drop_mask(b, p_uncond, generator=generator, device=dev)
    with torch.no_grad():
        x_lo = point(x_hi, n, x0=x0, noise=noise, cond=cond, drop=drop)
        tgt = target(x_lo, t_lo.to(x0.dtype), cond=cond, drop=drop)
    pred = student(x_hi, t_hi.to(x0.dtype), cond=cond, drop=drop)
    if ends is not None:
        end = ends.to(dev)[n]  # (B,) the pair's segment end
        pred = to_segment_end(pred, x_hi, t_hi, end, schedule)
        tgt = to_segment_end(tgt, x_lo, t_lo, end, schedule)
    if distance == "l2":
        d = (pred.float() - tgt.float()).pow(2).flatten(1).mean(1)
    else:
        d = pseudo_huber(pred, tgt, huber_c(x0[0].numel()) if c is None else float(c))
    per_sample = weights.to(dev)[n].to(d.dtype) * d  # (B,)
    return per_sample.mean(), per_sample
