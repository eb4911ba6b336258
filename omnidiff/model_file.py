"""The ``model.pt`` format: omnidiff's inference checkpoint (Lightning's ``.ckpt`` is for
resuming).

``model.pt`` is a plain dict (loadable with ``torch.load(weights_only=True)``)::

    format: "omnidiff", format_version: 2, omnidiff_version: str,
    domain: str, event_shape: [int],
    cond: dict (the condition specification, omnidiff.core.conditions.CondSpec.to_dict()),
    num_classes: int (the class count of a label condition, else 0; format 1 had only this),
    model: dict, schedule: dict, prediction: str, sigma_data: float,
    data: dict (the training data's config, for reference samples and metrics),
    ema: bool, global_step: int,
    weights_sha256: str (state_digest of state_dict, verified by read_checkpoint; files
           written before it was added carry none and load unchecked),
    grids: {key: dict} (optional: time grids fitted by ``omnidiff calibrate``, keyed by
           sampler, solver options and steps, see omnidiff.samplers.calibrate.grid_key),
    sampler, consistency, distilled (optional, a distilled student's: its default sampler
           {name, steps[, grid]}, its consistency parametrisation {scale}, and how it was
           made; see student_fields),
    state_dict: {name: Tensor}  (the DiffusionModel's weights: EMA weights when trained with EMA)

:func:`read_checkpoint` accepts that file or a Lightning ``.ckpt`` written by ``omnidiff
train`` and returns the same dict. Files of format 1 (written before conditions of every
kind) carry only ``num_classes``; :func:`payload_cond_spec` reads them as labels.

The model's identity in those fields is a :class:`~omnidiff.model_spec.ModelSpec`
(``ModelSpec.from_payload(read_checkpoint(path))``). This module imports no Lightning (inference
runs without it); the callbacks that write checkpoints during training are in
:mod:`omnidiff.training.checkpoints`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from omnidiff._version import __version__
from omnidiff.errors import CheckpointError
from omnidiff.io import (
    FILE_FORMAT,
    atomic_torch_save,
    atomic_write_json,
    read_json,
    read_torch_file,
    state_digest,
)
from omnidiff.methods.diffusers.folder import (
    is_diffusers_folder,
    read_diffusers_folder,
    sidecar_path,
)
from omnidiff.methods.distill_options import student_fields
from omnidiff.model_spec import ModelSpec, loss_settings, payload_cond_spec

__all__ = ["FORMAT", "FORMAT_VERSION", "export_payload", "save_inference", "write_inference",
           "read_checkpoint", "outputs_home", "grids_destination", "write_grids", "ModelSpec",
           "payload_cond_spec", "loss_settings"]

FORMAT = FILE_FORMAT
FORMAT_VERSION = 2


def export_payload(module: Any, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
    """The payload (the ``model.pt`` dict) of a training module with a ``spec`` (its current
    weights)."""
    state = {k: v.detach().to("cpu", copy=True).contiguous()
             for k, v in module.model.state_dict().items()}
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "omnidiff_version": __version__,
            **module.spec.payload_fields(), "ema": bool(ema), "global_step": int(global_step),
            "state_dict": state, **_embedded_autoencoder(module.hparams, module.state_dict())}


def _embedded_autoencoder(hp: Any, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """``{"autoencoder": its payload}`` for a latent model (its DiffusionModule's
    ``autoencoder.*`` weights and hyper-parameters), ``{}`` otherwise."""
    cfg = hp.get("autoencoder")
    if not cfg:
        return {}
    options = {k: v for k, v in cfg.items() if k != "data_shape"}
    ae_state = {k[len("autoencoder."):]: v.detach().to("cpu", copy=True).contiguous()
                for k, v in state.items() if k.startswith("autoencoder.")}
    return {"autoencoder": {"domain": str(hp["domain"]), "data_shape": cfg["data_shape"],
                            "ae": options, "state_dict": ae_state,
                            "weights_sha256": state_digest(ae_state)}}


def write_inference(payload: dict[str, Any], dest: str | os.PathLike) -> Path:
    """Write a payload as ``model.pt`` atomically, with the checksum of its weights."""
    payload = {**payload, "weights_sha256": state_digest(payload["state_dict"])}
    return atomic_torch_save(payload, dest)


def save_inference(module: Any, dest: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``model.pt`` atomically."""
    return write_inference(export_payload(module, **kwargs), dest)


def _verify_weights(obj: dict[str, Any], path: Path) -> None:
    expected = obj.get("weights_sha256")
    if expected is not None and state_digest(obj.get("state_dict") or {}) != expected:
        raise CheckpointError(f"{path}: its weights do not match the checksum stored with them "
                              "(the file was altered or damaged); re-export it from the run's "
                              "checkpoints/last.ckpt (omnidiff train ... resume=auto) or restore "
                              "a copy")


def _from_lightning(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    hp = ckpt.get("hyper_parameters") or {}
    if hp.get("stage") == "autoencoder":
        raise CheckpointError(f"{path} is a checkpoint of an autoencoder run; its model.pt is the "
                              "autoencoder a latent model takes (autoencoder=<model.pt>)")
    needed = ("domain", "model_cfg", "schedule_cfg", "event_shape")
    if "prediction" not in loss_settings(hp):
        needed += ("prediction",)
    if not all(k in hp for k in needed) or ("cond_spec" not in hp and "num_classes" not in hp):
        raise CheckpointError(f"{path} is a Lightning checkpoint but not one of omnidiff's "
                              "DiffusionModule (its hyper-parameters lack "
                              f"{', '.join(k for k in needed if k not in hp) or 'cond_spec'})")
    state = {k[len("model."):]: v for k, v in ckpt["state_dict"].items()
             if k.startswith("model.")}
    return {"format": FORMAT, "format_version": FORMAT_VERSION,
            "omnidiff_version": ckpt.get("omnidiff_version"),
            **ModelSpec.from_hparams(hp).payload_fields(),
            "ema": "current_model_state" in ckpt, "global_step": int(ckpt.get("global_step", 0)),
            "state_dict": state, **_embedded_autoencoder(hp, ckpt["state_dict"]),
            **(student_fields(hp["distill"]) if hp.get("distill") else {})}


PAYLOAD_KEYS = ("domain", "event_shape", "model", "schedule", "prediction", "state_dict")


def _checked_payload(obj: dict[str, Any], path: Path) -> dict[str, Any]:
    """The payload has the keys a Pipeline reads, and finite weights (a run
    that diverged would only sample NaN)."""
    missing = [k for k in PAYLOAD_KEYS if k not in obj]
    if missing:
        raise CheckpointError(f"{path} is damaged or hand-made: it lacks {', '.join(missing)}; "
                              "re-export it from the run (omnidiff train ... resume=auto)")
    bad = [k for k, v in obj["state_dict"].items()
           if isinstance(v, torch.Tensor) and v.is_floating_point()
           and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"{path} holds NaN or inf weights ({len(bad)} tensors, e.g. "
                              f"{bad[0]}): the run diverged; resume an earlier checkpoint "
                              "with a lower optim.lr")
    return obj


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load ``model.pt`` or a Lightning ``.ckpt`` (``weights_only=True``) as the payload (the
    model.pt dict)."""
    path = Path(path)
    if is_diffusers_folder(path):  # another library's model: read, never rewritten
        return _checked_payload(read_diffusers_folder(path), path)
    if path.is_dir():
        for cand in (path / "model.pt", path / "checkpoints" / "last.ckpt"):
            if cand.is_file():
                path = cand
                break
        else:
            raise CheckpointError(f"{path} is a folder without model.pt or checkpoints/last.ckpt;"
                                  " pass the run folder of `omnidiff train` or a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found; pass the model.pt (or a "
                              ".ckpt) written by `omnidiff train`")
    obj = read_torch_file(path, "pass the model.pt or a .ckpt written by `omnidiff train`")
    if isinstance(obj, dict) and obj.get("kind") == "autoencoder":
        raise CheckpointError(f"{path} is an autoencoder, not a diffusion model: train a latent "
                              f"model on it (omnidiff train recipe=... autoencoder={path})")
    if isinstance(obj, dict) and obj.get("format") == FORMAT:
        if int(obj.get("format_version", 1)) > FORMAT_VERSION:
            raise CheckpointError(f"{path} was written by a newer omnidiff "
                                  f"({obj.get('omnidiff_version')}); upgrade omnidiff to read it")
        _verify_weights(obj, path)
        return _checked_payload(obj, path)
    if isinstance(obj, dict) and "state_dict" in obj and "hyper_parameters" in obj:
        return _checked_payload(_from_lightning(obj, path), path)
    raise CheckpointError(f"{path} is not an omnidiff checkpoint; pass the model.pt or a .ckpt "
                          "written by `omnidiff train`")


def outputs_home(checkpoint: str | os.PathLike) -> Path:
    """The folder that receives what is made from a checkpoint (``generated/``): the
    model.pt's folder, the run folder, or for a diffusers folder (not ours to write into) the
    folder ``<folder>.omnidiff`` beside it."""
    src = Path(checkpoint)
    if is_diffusers_folder(src):
        src = src.resolve()
        return src.with_name(src.name + ".omnidiff")
    return src.parent if src.is_file() else src


def grids_destination(checkpoint: str | os.PathLike,
                      dest: str | os.PathLike | None = None) -> Path:
    """Where :func:`write_grids` writes: ``dest``, else the checkpoint's own model.pt (a
    Lightning ``.ckpt`` is never rewritten; a diffusers folder's grids go in its sidecar,
    ``<folder>.omnidiff.json``). Call it before long work to fail early."""
    if dest is not None:
        return Path(dest)
    src = Path(checkpoint)
    if is_diffusers_folder(src):
        return sidecar_path(src)
    if src.is_dir():
        src = src / "model.pt"
    if src.suffix == ".ckpt" or not src.is_file():
        raise CheckpointError(f"{checkpoint} is a Lightning checkpoint; calibrated grids are "
                              "stored in a model.pt: pass out=PATH/model.pt to write one")
    return src


def write_grids(checkpoint: str | os.PathLike, grids: dict[str, Any],
                dest: str | os.PathLike | None = None) -> Path:
    """Add calibrated ``grids`` to the checkpoint's ``model.pt`` (atomically; the grids it
    already holds are kept unless replaced), or write the model.pt it becomes to ``dest``."""
    dest = grids_destination(checkpoint, dest)
    if is_diffusers_folder(checkpoint) and dest == sidecar_path(checkpoint):  # grids alone
        old = (read_json(dest) or {}).get("grids") or {}
        return atomic_write_json({"grids": {**old, **grids}}, dest)
    payload = read_checkpoint(checkpoint)
    payload["grids"] = {**(payload.get("grids") or {}), **grids}
    return write_inference(payload, dest)
