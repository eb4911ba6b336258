"""A diffusers scheduler config as omnidiff's schedule and prediction, and the timesteps a
diffusers scheduler evaluates at (``grid="diffusers"``).

Mapped exactly: ``beta_schedule`` (linear | scaled_linear | squaredcos_cap_v2),
``beta_start``, ``beta_end``, ``num_train_timesteps``, ``rescale_betas_zero_snr`` (the
``discrete`` schedule) and ``prediction_type`` (epsilon -> eps, v_prediction -> v, sample ->
x0). ``timestep_spacing``, ``steps_offset``, ``use_karras_sigmas`` and the like choose
timesteps, not the model: they act through ``grid="diffusers"``. Anything else that changes
the model (``trained_betas``, another ``beta_schedule`` or ``prediction_type``) is refused in
one line naming the key.
"""

from __future__ import annotations

from typing import Any

import torch

from omnidiff.core.schedules import BETA_SCHEDULES
from omnidiff.errors import ConfigError
from omnidiff.methods.diffusers.network import diffusers

__all__ = ["schedule_of_scheduler", "diffusers_times", "PREDICTION_TYPES", "SCHEDULER_OF"]

PREDICTION_TYPES = {"epsilon": "eps", "v_prediction": "v", "sample": "x0"}

# the diffusers scheduler that runs the same method as each omnidiff sampler: its timesteps
# are the ones grid="diffusers" uses (other samplers: the folder's own scheduler's)
SCHEDULER_OF = {
    "ddim": "DDIMScheduler", "ddpm": "DDPMScheduler",
    "dpmpp_2m": "DPMSolverMultistepScheduler", "dpmpp_3m": "DPMSolverMultistepScheduler",
    "dpmpp_2m_sde": "DPMSolverMultistepScheduler",
    "dpmpp_2s_ancestral": "DPMSolverSinglestepScheduler", "unipc": "UniPCMultistepScheduler",
    "deis": "DEISMultistepScheduler", "euler": "EulerDiscreteScheduler",
    "euler_ancestral": "EulerAncestralDiscreteScheduler", "heun": "HeunDiscreteScheduler",
    "lms": "LMSDiscreteScheduler",
}


def schedule_of_scheduler(config: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """(omnidiff schedule config, prediction) of a diffusers scheduler ``config`` (the dict in
    ``scheduler_config.json``); :class:`ConfigError` names a key that cannot be mapped."""
    name = config.get("_class_name", "the scheduler")
    if config.get("trained_betas") is not None:
        raise ConfigError(f"{name} config: trained_betas (explicit betas) is not mapped; "
                          "omnidiff reads beta_schedule " + " | ".join(BETA_SCHEDULES))
    if "beta_schedule" not in config:  # flow matching, EDM, ...: not a DDPM schedule
        raise ConfigError(f"{name} config has no beta_schedule: only DDPM-family schedulers "
                          f"map to omnidiff (beta_schedule {' | '.join(BETA_SCHEDULES)})")
    betas = config["beta_schedule"]
    if betas not in BETA_SCHEDULES:
        raise ConfigError(f"{name} config: beta_schedule={betas!r} has no omnidiff schedule; "
                          f"mapped: {', '.join(BETA_SCHEDULES)}")
    kind = config.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise ConfigError(f"{name} config: prediction_type={kind!r} is not mapped; mapped: "
                          f"{', '.join(PREDICTION_TYPES)}")
    schedule = {"name": "discrete", "beta_schedule": betas,
                "beta_start": float(config.get("beta_start", 1e-4)),
                "beta_end": float(config.get("beta_end", 0.02)),
                "num_steps": int(config.get("num_train_timesteps", 1000)),
                "zero_terminal_snr": bool(config.get("rescale_betas_zero_snr", False))}
    return schedule, PREDICTION_TYPES[kind]


def diffusers_times(config: dict[str, Any], sampler: str, steps: int) -> torch.Tensor:
    """(steps + 1,) float64 times: where the diffusers scheduler of ``sampler``
    (:data:`SCHEDULER_OF`; else the config's own class), built from ``config``, evaluates
    the model for ``steps`` steps, as t = (k + 1) / N, then 0. Timesteps a scheduler repeats
    (Heun's second evaluation) count once."""
    lib = diffusers()
    cls = SCHEDULER_OF.get(sampler) or config.get("_class_name")
    if not hasattr(lib, str(cls)):
        raise ConfigError(f"grid='diffusers' needs a diffusers scheduler for sampler "
                          f"{sampler!r}; the folder's ({cls}) is not in diffusers")
    scheduler = getattr(lib, cls).from_config(config)
    scheduler.set_timesteps(int(steps))
    ks = torch.as_tensor(scheduler.timesteps, dtype=torch.float64).cpu()
    ks = torch.unique_consecutive(ks)
    n = int(config.get("num_train_timesteps", 1000))
    return torch.cat([(ks + 1) / n, torch.zeros(1, dtype=torch.float64)])
