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

__all__ = ["METHODS", "METHOD_DEFAULTS", "DISTILL_DEFAULTS", "DISTILL_KEYS", "distill_options",
           "student_fields", "level_count"]


METHODS = ("cd", "ct", "reflow")


# the choices each method makes where the config leaves them null: improved CT's levels and
# weights for both consistency methods (on points2d, CD at 2 steps: sliced W2 0.061 with them,
# 0.157 with Song et al. 2023's uniform levels and weights); the target is the student itself
# (stop-gradient) for both, as in iCT and ECT: on the 2D narrow-mode mixture an EMA target of
# 0.95 left CD's 2-step student at 1.64x its teacher's sliced W2, the student itself at 1.32x
METHOD_DEFAULTS = {
    "cd": {"level_sampling": "lognormal", "weighting": "ict", "target_ema": 0.0,
           "teacher_steps": 1},
    "ct": {"level_sampling": "lognormal", "weighting": "ict", "target_ema": 0.0,
           "teacher_steps": None},
    "reflow": {"level_sampling": None, "weighting": None, "target_ema": None,
               "teacher_steps": 20},
}


# every option's default, in this one place (conf/config.yaml's distill block leaves them
# null); the method-dependent ones are in METHOD_DEFAULTS
DISTILL_DEFAULTS: dict[str, Any] = {
    "teacher": None, "method": "cd", "solver": "heun", "guidance": None,
    # cd: noise levels, Karras rho = 7 in sigma/alpha (Song et al. 2023); [s0, s1]: they double
    # from s0 to s1 over training, as CT's curriculum (ECT's shrinking step, for CD)
    "levels": 18,
    "curriculum": [10, 1280],  # ct: the levels double from s0 to s1 over training (iCT)
    "level_sampling": None, "p_mean": -1.1, "p_std": 2.0,  # lognormal levels (iCT)
    "weighting": None, "distance": "pseudo_huber", "huber_c": None, "target_ema": None,
    "level_groups": None,
    "scale": 10.0,  # c_skip = 1 / (1 + (scale (sigma/alpha - s_min) / sigma_data)^2)
    "pairs": 10_000,  # reflow: (noise, sample) pairs from the teacher's ODE
    # the solver's steps: reflow's per pair; cd's between two neighbouring levels
    "teacher_steps": None,
    "steps": 2,  # the student's default sampling steps
    # > 1: a multistep student for that many steps (segments ending at the times of its grid;
    # Heek et al. 2024), sampled by DDIM on that grid; 1: a consistency function to t_min
    "segments": 1,
    "total_steps": 10_000,  # ct's curriculum length (omnidiff distill: trainer.max_steps)
    # a multistep consistency student's inner sampling times, chosen at the end of the run
    # among its training levels by the domain's main metric on this many samples (null: the
    # run's eval.n_samples; 0: keep the logsnr_trailing grid)
    "grid_samples": None,
}
DISTILL_KEYS = tuple(DISTILL_DEFAULTS)


def distill_options(block: dict[str, Any]) -> dict[str, Any]:
    """A config's ``distill:`` block with each method's defaults filled in, checked: known
    keys, a method, a deterministic solver, the choices of :mod:`omnidiff.methods.consistency`."""
    unknown = sorted(set(block) - set(DISTILL_KEYS))
    if unknown:
        raise ConfigError(f"distill.{unknown[0]} is not a distillation option; choose from: "
                          f"{', '.join(DISTILL_KEYS)}")
    method = block.get("method") or "cd"
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose cd (consistency distillation), ct "
                          "(consistency training) or reflow")
    opts = {**DISTILL_DEFAULTS, **{k: v for k, v in block.items() if v is not None},
            "method": method}
    for key, value in METHOD_DEFAULTS[method].items():
        if opts.get(key) is None:
            opts[key] = value
    solver = opts["solver"]
    if solver not in SAMPLERS or solver in STOCHASTIC or solver == "rk45":
        ode = [s for s in SAMPLERS if s not in STOCHASTIC and s != "rk45"]
        raise ConfigError(f"distill.solver={solver!r}: the teacher's ODE needs a deterministic "
                          f"fixed-step sampler: {', '.join(ode)}")
    opts["solver"] = solver
    if method != "reflow":
        for key, choices in (("level_sampling", cm.LEVEL_SAMPLING),
                             ("weighting", cm.WEIGHTINGS), ("distance", cm.DISTANCES)):
            value = opts[key]
            if value not in choices:
                raise ConfigError(f"distill.{key}={value!r}: choose one of: "
                                  f"{', '.join(choices)}")
    if method in ("cd", "reflow") and not opts.get("teacher"):
        raise ConfigError(f"method={method} learns from a teacher: pass teacher=<the model.pt "
                          "of a trained run> (method=ct trains without one)")
    if not _is_curriculum(opts["curriculum"]):
        raise ConfigError(f"distill.curriculum={opts['curriculum']!r}: give [s0, s1], the "
                          "first and last number of CT's noise levels (2 <= s0 <= s1), e.g. "
                          "[10, 1280]")
    segments = opts["segments"]
    if isinstance(segments, bool) or not isinstance(segments, int) or segments < 1:
        raise ConfigError(f"distill.segments={segments!r}: give 1 (a consistency student) or "
                          "the number of steps a multistep student is trained for, e.g. 2")
    if segments > 1 and method == "reflow":
        raise ConfigError("distill.segments applies to cd and ct; reflow's student is a "
                          "straightened flow (drop distill.segments)")
    levels = opts["levels"]
    if not (_is_curriculum(levels) or (isinstance(levels, int) and not isinstance(levels, bool)
                                       and levels >= 2)):
        raise ConfigError(f"distill.levels={levels!r}: give CD's number of noise levels (at "
                          "least 2), or [s0, s1] to double them from s0 to s1 over training")
    n = opts["grid_samples"]
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 0):
        raise ConfigError(f"distill.grid_samples={n!r}: give the number of samples that choose "
                          "the student's sampling times (e.g. 4096), 0 to keep its default "
                          "grid, or null for eval.n_samples")
    return opts


def _is_curriculum(value: Any) -> bool:
    """[s0, s1] with 2 <= s0 <= s1, integers."""
    return (isinstance(value, (list, tuple)) and len(value) == 2
            and all(isinstance(v, int) and not isinstance(v, bool) and v >= 2 for v in value)
            and value[0] <= value[1])


def student_fields(distill: dict[str, Any]) -> dict[str, Any]:
    """What a distilled student's ``model.pt`` adds (from its run's ``distill`` options):
    ``consistency`` (the parametrisation of
    :class:`~omnidiff.methods.consistency.ConsistencyModel`, CD and CT), ``sampler`` (its default:
    consistency, or euler on the trailing grid after reflow, at ``steps``) and ``distilled``
    (method, teacher, solver and the guidance distilled into it). A multistep student
    (``segments`` > 1) samples by DDIM on the grid its segments end at, in that many steps."""
    method = distill["method"]
    segments = int(_option(distill, "segments"))
    steps = segments if segments > 1 else int(_option(distill, "steps"))
    # after reflow: Euler on the trailing grid (t_max (1 - i / steps); the default uniform one
    # would spend a step of two at t_min)
    sampler = ({"name": "euler", "grid": "trailing"} if method == "reflow"
               else {"name": "ddim", "grid": cm.SEGMENT_GRID} if segments > 1
               else {"name": "consistency"})
    out: dict[str, Any] = {
        "sampler": {**sampler, "steps": steps},
        "distilled": {k: distill.get(k) for k in ("method", "teacher", "solver", "guidance",
                                                   "segments")}}
    if method != "reflow":
        out["consistency"] = {"scale": float(_option(distill, "scale")),
                              "levels": level_count(distill)}
    return out


def level_count(distill: dict[str, Any], step: int | None = None) -> int:
    """How many noise levels a consistency student trains on at training step ``step`` (None:
    the end of its run): CD's fixed ``levels``, else a curriculum over ``total_steps`` (CD's
    ``levels: [s0, s1]``, CT's ``curriculum``)."""
    stages = _option(distill, "curriculum" if distill["method"] == "ct" else "levels")
    if isinstance(stages, int):
        return stages
    total = int(_option(distill, "total_steps"))
    return cm.curriculum(total if step is None else int(step), total, int(stages[0]),
                         int(stages[1]))


def _option(distill: dict[str, Any], key: str) -> Any:
    """A distill option, its default where the block (of an older run) leaves it out."""
    value = distill.get(key)
    return DISTILL_DEFAULTS[key] if value is None else value
