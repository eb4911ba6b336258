"""``init=PATH``: start a new run from a trained model's weights (fine-tuning).

The weights of ``model.pt`` or a ``.ckpt`` (EMA weights where it kept them) go into the new
run's network wherever a tensor of the same name and shape exists; the optimizer, schedule,
step count and EMA start fresh, as for any new run. What did not match (a class embedding for
another number of classes, a layer the new recipe adds or drops) is named in one line, so a
fine-tune on new data or a new recipe says exactly what it kept.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from omnidiff.errors import CheckpointError
from omnidiff.model_file import read_checkpoint

__all__ = ["load_initial_weights"]


def _shape(t: Any) -> str:
    return "x".join(map(str, t.shape)) or "scalar"


def load_initial_weights(model: torch.nn.Module, path: str | Path) -> str:
    """Copy the checkpoint's tensors into ``model`` (a :class:`DiffusionModel`) where name and
    shape agree; the one-line report of what was loaded and what was not. A checkpoint with
    nothing in common is a :class:`CheckpointError`."""
    payload = read_checkpoint(path)
    theirs: dict[str, torch.Tensor] = payload["state_dict"]
    ours = model.state_dict()
    fits = {k: v for k, v in theirs.items() if k in ours and tuple(v.shape) == tuple(ours[k].shape)}
    if not fits:
        raise CheckpointError(f"init={path}: none of its {len(theirs)} tensors fits this "
                              f"network (another domain or architecture?); pass a model of "
                              "the same network")
    model.load_state_dict(fits, strict=False)
    reshaped = [f"{k} ({_shape(theirs[k])} -> {_shape(ours[k])})" for k in theirs
                if k in ours and k not in fits]
    new = [k for k in ours if k not in theirs]
    dropped = [k for k in theirs if k not in ours]
    line = (f"omnidiff: init={path}: loaded {len(fits)} of the network's {len(ours)} tensors "
            f"from its {payload.get('global_step', '?')}-step model; optimizer fresh")
    for what, keys in (("shape differs", reshaped), ("new here", new),
                       ("not in this network", dropped)):
        if keys:
            shown = ", ".join(keys[:4]) + (f" and {len(keys) - 4} more" if len(keys) > 4 else "")
            line += f"; {what}: {shown}"
    return line
