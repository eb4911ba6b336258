"""A diffusers folder read as omnidiff's model.pt payload.

Two layouts: a model folder written by ``save_pretrained`` (``config.json`` naming its
``_class_name`` and the weights) with the scheduler saved beside it (``scheduler_config.json``
in the same folder, or a ``scheduler/`` folder next to it), and a pipeline folder
(``model_index.json`` with ``unet/`` or ``transformer/`` and ``scheduler/``). The folder is
never written to: what omnidiff adds (calibrated grids) goes in a sidecar beside it
(:func:`sidecar_path`). A folder omnidiff exported also holds ``omnidiff.json`` (its null
class, domain and training data), which is read when present.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from omnidiff.errors import CheckpointError
from omnidiff.io import FILE_FORMAT, read_json
from omnidiff.methods.diffusers.network import (
    MODEL_CLASSES,
    cond_spec_of_config,
    event_shape_of_config,
    labels_of,
    model_class,
)
from omnidiff.methods.diffusers.scheduler import schedule_of_scheduler

__all__ = ["is_diffusers_folder", "read_diffusers_folder", "sidecar_path", "OMNIDIFF_JSON"]

OMNIDIFF_JSON = "omnidiff.json"
DENOISERS = ("unet", "transformer")


def is_diffusers_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder that looks like diffusers' (a model or a pipeline)."""
    path = Path(path)
    return path.is_dir() and ((path / "model_index.json").is_file()
                              or (path / "config.json").is_file())


def sidecar_path(folder: str | os.PathLike) -> Path:
    """Where omnidiff keeps what it adds to a diffusers folder: ``<folder>.omnidiff.json``."""
    folder = Path(folder).resolve()
    return folder.with_name(folder.name + ".omnidiff.json")


def _plain(config: Any) -> dict[str, Any]:
    """A diffusers config as plain JSON values (lists, not tuples or FrozenDicts), without
    the private keys diffusers adds (``_name_or_path``, ``_diffusers_version``, ...)."""
    public = {k: v for k, v in dict(config).items() if not k.startswith("_")}
    return json.loads(json.dumps(public, default=list))


def _parts(path: Path) -> tuple[Path, Path]:
    """(the model's folder, its scheduler config file), or one line saying what is missing."""
    if (path / "model_index.json").is_file():
        index = read_json(path / "model_index.json") or {}
        if "vae" in index and index.get("vae") and index["vae"][0] is not None:
            raise CheckpointError(f"{path} is a latent pipeline (it has a vae): omnidiff "
                                  "samples pixel-space diffusers models (decoding through a "
                                  "diffusers VAE is not supported)")
        sub = next((path / d for d in DENOISERS if (path / d / "config.json").is_file()), None)
        if sub is None:
            raise CheckpointError(f"{path} is a diffusers pipeline without a unet/ or "
                                  "transformer/ folder; omnidiff loads one of those")
        model_dir = sub
    else:
        model_dir = path
    for cand in (model_dir / "scheduler_config.json",
                 model_dir.parent / "scheduler" / "scheduler_config.json"):
        if cand.is_file():
            return model_dir, cand
    raise CheckpointError(f"{path} holds a diffusers model but no scheduler config: save the "
                          "scheduler beside it (scheduler.save_pretrained(folder)) or pass the "
                          "pipeline folder with scheduler/")


def _text_encoder(path: Path) -> dict[str, Any] | None:
    """A pipeline folder's frozen text encoder (``text_encoder/`` and ``tokenizer/`` beside
    the model) as a sequence condition's ``encoder`` and ``max_length``, so the model takes
    prompts: every padded position is read and the empty prompt is the null condition, as
    diffusers' text-to-image pipelines do."""
    enc, tok = path / "text_encoder", path / "tokenizer"
    if not ((enc / "config.json").is_file() and tok.is_dir()):
        return None
    length = (read_json(enc / "config.json") or {}).get("max_position_embeddings") or \
        (read_json(tok / "tokenizer_config.json") or {}).get("model_max_length") or 77
    return {"max_length": int(min(int(length), 512)),
            "encoder": {"kind": "pretrained", "name": str(enc.resolve()),
                        "tokenizer": str(tok.resolve()), "attend_padding": True,
                        "null_prompt": ""}}


def read_diffusers_folder(path: str | os.PathLike) -> dict[str, Any]:
    """The model.pt payload of a diffusers folder (see the module doc): its network as
    ``model.name=diffusers``, the ``discrete`` schedule and prediction of its scheduler
    config, its weights; ``diffusers`` holds the folder and scheduler config (for
    ``grid="diffusers"``) and ``grids`` the sidecar's calibrated grids."""
    path = Path(path)
    model_dir, scheduler_file = _parts(path)
    cls = (read_json(model_dir / "config.json") or {}).get("_class_name")
    if cls not in MODEL_CLASSES:
        raise CheckpointError(f"{model_dir} holds a {cls or 'model without _class_name'}; "
                              f"omnidiff drives the diffusers classes {', '.join(MODEL_CLASSES)}")
    scheduler = read_json(scheduler_file) or {}
    schedule, prediction = schedule_of_scheduler(scheduler)
    ours = read_json(model_dir / OMNIDIFF_JSON) or {}
    model = model_class(cls).from_pretrained(model_dir, low_cpu_mem_usage=False)
    config = _plain(model.config)
    null = labels_of(cls, config, ours.get("null_class"))[1]
    block = {"name": "diffusers", "class": cls, "config": config,
             "num_train_timesteps": schedule["num_steps"], "null_class": null}
    sidecar = sidecar_path(path)
    return {"format": FILE_FORMAT, "format_version": 2, "domain": ours.get("domain", "image"),
            "event_shape": list(event_shape_of_config(config)),
            "cond": cond_spec_of_config(cls, config, null,
                                        _text_encoder(path)).to_dict(),
            "model": block,
            "schedule": schedule, "prediction": prediction, "sigma_data": 1.0,
            "data": ours.get("data") or {},
            "state_dict": {f"net.model.{k}": v for k, v in model.state_dict().items()},
            "diffusers": {"folder": str(path), "scheduler": scheduler},
            "grids": (read_json(sidecar) or {}).get("grids", {})}
