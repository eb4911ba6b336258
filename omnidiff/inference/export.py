"""``omnidiff export``: a model.pt whose network is a diffusers class, written as a diffusers
pipeline folder (``model_index.json``, ``unet/`` with safetensors weights and its config,
``scheduler/`` with a DDIMScheduler config) that diffusers' own ``DDIMPipeline`` /
``DDPMPipeline`` load. ``unet/omnidiff.json`` keeps what diffusers has no key for (the null
class of a class-conditional model, the domain, the training data), so the folder loads back
into omnidiff as the same model.

The scheduler config says what the model is: the ``discrete`` (or ``linear``) schedule's betas
and the prediction type; ``clip_sample`` is off (diffusers' DDIM would otherwise clamp x0
without re-deriving the noise, which no ODE solver does) and timesteps are "trailing" (the
first step at the last trained time, Lin et al. 2023). A model diffusers cannot express is
refused in one line saying why, before anything is written.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from omnidiff._version import __version__
from omnidiff.errors import PipelineError
from omnidiff.inference.pipeline import Pipeline
from omnidiff.methods.diffusers.folder import OMNIDIFF_JSON
from omnidiff.methods.diffusers.network import DiffusersNet, diffusers
from omnidiff.methods.diffusers.scheduler import PREDICTION_TYPES

__all__ = ["export_diffusers", "scheduler_config"]

KINDS = {v: k for k, v in PREDICTION_TYPES.items()}  # omnidiff prediction -> diffusers'


def scheduler_config(schedule: dict[str, Any], prediction: str) -> dict[str, Any]:
    """The DDIMScheduler keywords of an omnidiff schedule and prediction, or one line saying
    why diffusers cannot express them."""
    if prediction not in KINDS:
        raise PipelineError(f"prediction {prediction!r} has no diffusers prediction_type "
                            f"(diffusers has {', '.join(PREDICTION_TYPES)})")
    name = schedule.get("name")
    if name not in ("discrete", "linear"):
        raise PipelineError(f"the {name!r} schedule has no diffusers scheduler config; train "
                            "with schedule=discrete (diffusers' beta schedules) to export")
    return {"beta_schedule": schedule.get("beta_schedule", "linear"),
            "beta_start": float(schedule["beta_start"]), "beta_end": float(schedule["beta_end"]),
            "num_train_timesteps": int(schedule["num_steps"]),
            "rescale_betas_zero_snr": bool(schedule.get("zero_terminal_snr", False)),
            "prediction_type": KINDS[prediction], "clip_sample": False,
            "set_alpha_to_one": True, "timestep_spacing": "trailing"}


def _checked(pipe: Pipeline) -> tuple[DiffusersNet, dict[str, Any]]:
    """The model's diffusers network and scheduler config, or one line saying why not."""
    net = pipe.model.net
    if not isinstance(net, DiffusersNet):
        raise PipelineError(f"this model's network is omnidiff's own {pipe.domain_name!r} "
                            "network, not a diffusers class; train with model.name=diffusers "
                            "(e.g. recipe=image_digits_diffusers) to export it")
    if pipe.spec.consistency:
        raise PipelineError("a consistency student jumps from noise to data; diffusers' "
                            "DDIM / DDPM schedulers cannot sample it (export its teacher)")
    if pipe.decode is not None:
        raise PipelineError("a latent model needs its autoencoder, which this export does not "
                            "write; export a pixel-space model")
    if pipe.spec.sigma_data != 1.0:
        raise PipelineError(f"sigma_data={pipe.spec.sigma_data} scales the network's input, "
                            "which diffusers' schedulers do not; train with loss.sigma_data=1")
    return net, scheduler_config(pipe.model.schedule.config(), pipe.spec.prediction)


def export_diffusers(pipe: Pipeline, out: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write ``pipe`` (a model whose network is a diffusers class) as a diffusers pipeline
    folder ``out`` (see the module doc), atomically: a finished folder is never left half
    written, and an existing one is replaced only with ``overwrite``."""
    net, scheduler = _checked(pipe)
    out = Path(out).expanduser().resolve()
    if out.exists() and not overwrite and (not out.is_dir() or any(out.iterdir())):
        raise PipelineError(f"{out} exists; pass another out= or overwrite=true")
    lib = diffusers()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        folder = lib.DDIMPipeline(unet=net.model, scheduler=lib.DDIMScheduler(**scheduler))
        folder.save_pretrained(tmp, safe_serialization=True)
        ours = {"null_class": net.null_class, "domain": pipe.domain_name,
                "data": pipe.data_cfg, "omnidiff_version": __version__}
        (tmp / "unet" / OMNIDIFF_JSON).write_text(json.dumps(ours, indent=1, default=str))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp's 0700 -> what a plain mkdir gives
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
