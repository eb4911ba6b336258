"""The ``distill:`` block: its keys, each method's defaults in one place, the check of a
config's block, and what a distilled student's ``model.pt`` adds (:func:`student_fields`).

Plain python (no Lightning, no DictConfig): the config check, the training module and the
model file all read the options from here.
"""

from __future__ import annotations

from typing import Any

from omnidiff.errors import ConfigError
from omnidiff.methods import consistency as cm
from omnidiff.samplers import SAMPLERS, STOCHASTIC

__all__ = ["METHODS", "METHOD_DEFAULTS", "DISTILL_KEYS", "distill_options", "student_fields"]


METHODS = ("cd", "ct", "reflow")


# the choices each method makes where the config leaves them null: improved CT's levels and
# weights for both consistency methods (on points2d, CD at 2 steps: sliced W2 0.061 with them,
# 0.157 with Song et al. 2023's uniform levels and weights), CT's target is the student itself
METHOD_DEFAULTS = {
    "cd": {"level_sampling": "lognormal", "weighting": "ict", "target_ema": 0.95},
    "ct": {"level_sampling": "lognormal", "weighting": "ict", "target_ema": 0.0},
    "reflow": {"level_sampling": None, "weighting": None, "target_ema": None},
}


DISTILL_KEYS = ("teacher", "method", "solver", "guidance", "levels", "curriculum",
                "level_sampling", "weighting", "p_mean", "p_std", "distance", "huber_c",
                "target_ema", "scale", "level_groups", "pairs", "teacher_steps", "steps",
                "total_steps")


def distill_options(block: dict[str, Any]) -> dict[str, Any]:
    """A config's ``distill:`` block with each method's defaults filled in, checked: known
    keys, a method, a deterministic solver, the choices of :mod:`omnidiff.consistency`."""
    unknown = sorted(set(block) - set(DISTILL_KEYS))
    if unknown:
        raise ConfigError(f"distill.{unknown[0]} is not a distillation option; choose from: "
                          f"{', '.join(DISTILL_KEYS)}")
    method = block.get("method") or "cd"
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose cd (consistency distillation), ct "
                          "(consistency training) or reflow")
    opts = dict(block, method=method)
    for key, value in METHOD_DEFAULTS[method].items():
        if opts.get(key) is None:
            opts[key] = value
    solver = opts.get("solver") or "heun"
    if solver not in SAMPLERS or solver in STOCHASTIC or solver == "rk45":
        ode = [s for s in SAMPLERS if s not in STOCHASTIC and s != "rk45"]
        raise ConfigError(f"distill.solver={solver!r}: the teacher's ODE needs a deterministic "
                          f"fixed-step sampler: {', '.join(ode)}")
    opts["solver"] = solver
    if method != "reflow":
        for key, choices in (("level_sampling", cm.LEVEL_SAMPLING),
                             ("weighting", cm.WEIGHTINGS), ("distance", cm.DISTANCES)):
            value = opts.get(key) or ("pseudo_huber" if key == "distance" else None)
            if value not in choices:
                raise ConfigError(f"distill.{key}={value!r}: choose one of: "
                                  f"{', '.join(choices)}")
    if method in ("cd", "reflow") and not opts.get("teacher"):
        raise ConfigError(f"method={method} learns from a teacher: pass teacher=<the model.pt "
                          "of a trained run> (method=ct trains without one)")
    curriculum = opts.get("curriculum") or [10, 1280]
    if (len(curriculum) != 2 or not all(isinstance(v, int) and v >= 2 for v in curriculum)
            or curriculum[0] > curriculum[1]):
        raise ConfigError(f"distill.curriculum={curriculum!r}: give [s0, s1], the first and "
                          "last number of CT's noise levels (2 <= s0 <= s1), e.g. [10, 1280]")
    return opts


def student_fields(distill: dict[str, Any]) -> dict[str, Any]:
    """What a distilled student's ``model.pt`` adds (from its run's ``distill`` options):
    ``consistency`` (the parametrisation of :class:`~omnidiff.consistency.ConsistencyModel`,
    CD and CT), ``sampler`` (its default: consistency, or euler on the trailing grid after
    reflow, at ``steps``) and ``distilled`` (method, teacher, solver and the guidance
    distilled into it)."""
    method = distill["method"]
    # after reflow: Euler on the trailing grid (t_max (1 - i / steps); the default uniform one
    # would spend a step of two at t_min)
    sampler = ({"name": "euler", "grid": "trailing"} if method == "reflow"
               else {"name": "consistency"})
    out: dict[str, Any] = {
        "sampler": {**sampler, "steps": int(distill.get("steps") or 2)},
        "distilled": {k: distill.get(k) for k in ("method", "teacher", "solver", "guidance")}}
    if method != "reflow":
        out["consistency"] = {"scale": float(distill.get("scale") or 10.0)}
    return out
