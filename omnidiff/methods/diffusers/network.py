"""A diffusers model class as an omnidiff network: ``net(x, t, cond, drop) -> prediction``.

The time map: a discrete-time model trained on ``N`` timesteps ``k = 0..N-1`` sees, at
omnidiff's continuous time ``t``, the timestep ``k = N t - 1`` (the ``discrete`` schedule puts
alpha-bar_k at t = (k + 1) / N). Timesteps within 1e-3 of an integer are snapped to it, so
float32's round-off of t never moves a network off the timesteps it was trained on; between
integers the network gets the fractional timestep (its sinusoidal embedding takes any value).

Conditions: ``class_labels`` for a class-conditional model (its null class, where it has
one, under guidance); ``encoder_hidden_states`` (with ``encoder_attention_mask``) for a
cross-attention model, as a sequence condition of embeddings (zeros with a full mask as its
null). A model that learns its variance (twice the input channels out) gives its first half.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

from omnidiff.core.conditions import CondSpec, LabelCond, NoCond, SequenceCond
from omnidiff.errors import ConfigError

__all__ = ["DiffusersNet", "build_diffusers_net", "diffusers", "MODEL_CLASSES",
           "cond_spec_of_config", "event_shape_of_config", "training_block"]

# the model classes omnidiff drives, and how each takes a condition
MODEL_CLASSES = {"UNet2DModel": "labels", "UNet2DConditionModel": "sequence",
                 "DiTTransformer2DModel": "labels"}
TRAINABLE = ("UNet2DModel", "UNet2DConditionModel")  # model.name=diffusers
SNAP = 1e-3  # timesteps this close to an integer are that integer


def diffusers() -> Any:
    """The ``diffusers`` module, or one line saying how to install it."""
    try:
        return importlib.import_module("diffusers")
    except ImportError:
        raise ConfigError("diffusers models need the diffusers package: pip install "
                          "'omnidiff[diffusers]'") from None


def model_class(name: str) -> type:
    """The diffusers model class ``name``, if omnidiff knows how to drive it."""
    if name not in MODEL_CLASSES:
        raise ConfigError(f"diffusers model class {name!r} is not supported; omnidiff drives: "
                          f"{', '.join(MODEL_CLASSES)}")
    return getattr(diffusers(), name)


def event_shape_of_config(config: dict[str, Any]) -> tuple[int, ...]:
    """(C, H, W) of one sample, from ``in_channels`` and ``sample_size``."""
    size = config.get("sample_size")
    if size is None:
        raise ConfigError("the diffusers model config has no sample_size: set it (the image "
                          "size the model was trained on)")
    h, w = (size, size) if isinstance(size, int) else tuple(size)
    return int(config.get("in_channels", 3)), int(h), int(w)


def cond_spec_of_config(cls: str, config: dict[str, Any], null_class: int | None,
                        text: dict[str, Any] | None = None) -> CondSpec:
    """The condition a model of class ``cls`` and ``config`` takes: labels (a class-conditional
    UNet2DModel: ``num_class_embeds`` less its null class), a sequence of embeddings
    (``cross_attention_dim`` wide; ``text``: its pipeline's text encoder, ``{"encoder": ...,
    "max_length": ...}``, so that it takes prompts) or none."""
    if MODEL_CLASSES.get(cls) == "sequence":
        dim = config.get("cross_attention_dim") or 1280
        text = text or {}
        return SequenceCond(max_length=int(text.get("max_length") or 77),
                            dim=int(dim[0] if isinstance(dim, (list, tuple)) else dim),
                            encoder=text.get("encoder"))
    classes, _ = labels_of(cls, config, null_class)
    return LabelCond(classes) if classes else NoCond()


def labels_of(cls: str, config: dict[str, Any], null_class: int | None
              ) -> tuple[int, int | None]:
    """(classes, null class) of a class-conditional model: a UNet2DModel's
    ``num_class_embeds`` hold its null class when one is named (omnidiff's exports name it in
    ``omnidiff.json``); DiT's ``num_embeds_ada_norm`` classes come with one more embedding,
    its null class (DiT's classifier-free guidance label)."""
    if cls == "DiTTransformer2DModel":
        classes = int(config.get("num_embeds_ada_norm") or 0)
        return classes, classes
    classes = int(config.get("num_class_embeds") or 0)
    return (classes - 1, null_class) if classes and null_class is not None else (classes, None)


class DiffusersNet(nn.Module):
    """``model`` (a diffusers model) behind omnidiff's network interface (see the module
    doc). ``cond_kind``: "labels", "sequence" or None (unconditional). ``null_class``: the
    label of a class-conditional model's null class, used where ``drop`` is set or no label
    is given (None: it has none, and guidance is refused)."""

    def __init__(self, model: nn.Module, num_train_timesteps: int, cond_kind: str | None,
                 null_class: int | None = None):
        super().__init__()
        self.model = model
        self.num_train_timesteps = int(num_train_timesteps)
        self.cond_kind, self.null_class = cond_kind, null_class

    def timestep(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) discrete timesteps ``N t - 1`` (snapped to integers within 1e-3)."""
        k = t * self.num_train_timesteps - 1
        near = k.round()
        return torch.where((k - near).abs() < SNAP, near, k)

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: Any = None,
                drop: torch.Tensor | None = None) -> torch.Tensor:
        kwargs = self._condition(cond, drop, x)
        out = self.model(x, self.timestep(t), return_dict=False, **kwargs)[0]  # (B, C', H, W)
        return out[:, :x.shape[1]] if out.shape[1] == 2 * x.shape[1] else out  # (B, C, H, W)

    def _condition(self, cond: Any, drop: torch.Tensor | None, x: torch.Tensor
                   ) -> dict[str, Any]:
        if self.cond_kind == "labels":
            if cond is None or (drop is not None and drop.any()):
                if self.null_class is None:
                    raise ConfigError("this diffusers model has no null class: pass class "
                                      "labels (cond=) and sample it without guidance")
                null = torch.full(x.shape[:1], self.null_class, dtype=torch.long,
                                  device=x.device)  # (B,)
                cond = null if cond is None else torch.where(drop, null, cond)
            return {"class_labels": cond}
        if self.cond_kind == "sequence":
            if cond is None:
                raise ConfigError("this diffusers model reads encoder_hidden_states: pass "
                                  "cond={'embeddings': (n, L, D)}")
            emb, mask = cond["embeddings"], cond["mask"]  # (B, L, D), (B, L)
            if drop is not None:
                emb = torch.where(drop[:, None, None], torch.zeros_like(emb), emb)
                mask = mask | drop[:, None]
            return {"encoder_hidden_states": emb, "encoder_attention_mask": mask}
        return {}


def build_diffusers_net(event_shape: Any = None, cond: CondSpec | None = None,
                        **block: Any) -> DiffusersNet:
    """A freshly initialised diffusers model behind :class:`DiffusersNet`, from a ``model``
    block with ``name: diffusers``: ``class`` (default UNet2DModel), ``config`` (its
    ``from_config`` dict), ``num_train_timesteps`` (1000) and ``null_class`` (a
    class-conditional model's null label). The domain's own network options are ignored."""
    cls = str(block.get("class") or "UNet2DModel")
    config = block.get("config")
    if not config:
        raise ConfigError(f"model.name=diffusers needs model.config (the {cls} config, e.g. "
                          "its sample_size, in_channels, block_out_channels)")
    model = model_class(cls).from_config(dict(config))
    if event_shape is not None:
        want = tuple(int(s) for s in event_shape)
        have = event_shape_of_config(dict(model.config))
        if have != want:
            raise ConfigError(f"the {cls} config makes samples of shape {have}, the data "
                              f"{want}: set model.config.sample_size / in_channels to match")
    null = block.get("null_class")
    kind = MODEL_CLASSES[cls] if cond is None or cond.conditional else None
    return DiffusersNet(model, int(block.get("num_train_timesteps", 1000)), kind,
                        None if null is None else int(null))


def training_block(block: dict[str, Any], event_shape: Any, cond: CondSpec,
                   schedule: dict[str, Any]) -> dict[str, Any]:
    """The ``model`` block that ``model.name=diffusers`` trains, completed from the data: the
    config's ``sample_size`` / ``in_channels`` / ``out_channels`` default to the samples', a
    class-conditional UNet2DModel gets one class embedding more than the data has classes
    (the last: its null class for guidance), ``num_train_timesteps`` follows a discrete
    schedule's steps (1000 on a continuous one). The domain's own options are dropped."""
    cls = str(block.get("class") or "UNet2DModel")
    model_class(cls)  # one line for an unknown class, before anything is built
    if cls not in TRAINABLE:
        raise ConfigError(f"model.name=diffusers trains {', '.join(TRAINABLE)}; {cls} is "
                          "loaded from a folder, not trained here")
    shape = tuple(int(s) for s in event_shape)
    if len(shape) != 3:
        raise ConfigError(f"model.name=diffusers drives 2D models of (C, H, W) samples; this "
                          f"data's samples are {shape}")
    config = dict(block.get("config") or {})
    c, h, w = shape
    config.setdefault("sample_size", h if h == w else [h, w])
    config.setdefault("in_channels", c)
    config.setdefault("out_channels", c)
    null = None
    if isinstance(cond, LabelCond) and MODEL_CLASSES[cls] == "labels":
        config["num_class_embeds"], null = cond.num_classes + 1, cond.num_classes
    elif cond.conditional and not (MODEL_CLASSES[cls] == "sequence"
                                   and isinstance(cond, SequenceCond) and cond.dim):
        raise ConfigError(f"a diffusers {cls} cannot take this data's condition "
                          f"({cond.describe()}); use UNet2DModel for class labels (or none), "
                          "UNet2DConditionModel for a frozen text encoder's embeddings")
    steps = schedule.get("num_steps", 1000) if schedule.get("name") in ("discrete", "linear") \
        else 1000
    return {"name": "diffusers", "class": cls, "config": config,
            "num_train_timesteps": int(steps), "null_class": null}
