"""Time and condition embeddings, each condition kind with its own null for guidance.

* :class:`TimeEmbedding` — continuous ``t`` in [0, 1] -> sinusoidal features -> MLP;
* :class:`ClassEmbedding` — labels with a learned null class;
* :class:`ConditionEmbedding` — any *global* condition of a
  :class:`~omnidiff.core.conditions.CondSpec` (labels, fixed-shape tensors, or a named set of
  them) -> one ``(B, dim)`` vector, with a learned null embedding where ``drop`` is True or the
  condition is missing. Dense conditions (a mel spectrogram aligned with the waveform) enter the
  network elsewhere; :func:`null_where` substitutes their null tensor;
* :class:`Conditioning` — time + condition, the vector an adaLN / adaGN network modulates with.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
from torch import nn

from omnidiff.core.conditions import CondSpec, LabelCond, NamedCond, TensorCond, as_cond_spec

__all__ = ["timestep_embedding", "TimeEmbedding", "ClassEmbedding", "ConditionEmbedding",
           "Conditioning", "null_where"]


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0,
                       scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding of continuous times.

    t: (B,) in [0, 1] (scaled by ``scale`` so that frequencies match DDPM's integer steps).
    Returns (B, dim) in float32 (float64 for float64 ``t``): half precision cannot resolve
    the phases; :class:`TimeEmbedding` casts the features to its weights' dtype.
    """
    half = dim // 2
    dtype = torch.promote_types(t.dtype, torch.float32)  # float32, or float64 for float64 t
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=dtype) / half)  # (half,)
    args = (t.to(dtype) * scale)[:, None] * freqs[None]  # (B, half)
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class TimeEmbedding(nn.Module):
    """t (B,) -> (B, dim): sinusoidal features followed by a two-layer MLP."""

    def __init__(self, dim: int, freq_dim: int = 128):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        emb = timestep_embedding(t, self.freq_dim)  # (B, freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))  # (B, dim)


class ClassEmbedding(nn.Module):
    """Class labels (B,) -> (B, dim), with a learned null class for classifier-free guidance.

    ``drop`` (B,) bool selects the null embedding (index ``num_classes``). With
    ``num_classes == 0`` every input maps to the null embedding (an unconditional model).
    """

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.num_classes = num_classes
        self.table = nn.Embedding(num_classes + 1, dim)

    def forward(self, cond: torch.Tensor | None, drop: torch.Tensor | None,
                batch: int, device: torch.device) -> torch.Tensor:
        null = torch.full((batch,), self.num_classes, device=device, dtype=torch.long)
        if cond is None or self.num_classes == 0:
            idx = null
        else:
            idx = cond.long()
            if drop is not None:
                idx = torch.where(drop, null, idx)
        return self.table(idx)


def null_where(drop: torch.Tensor | None, cond: torch.Tensor, null: torch.Tensor
               ) -> torch.Tensor:
    """``cond: (B, ...)`` with the rows where ``drop: (B,)`` is True replaced by ``null``
    (broadcastable to one row, e.g. a learned null tensor or zeros)."""
    if drop is None:
        return cond
    mask = drop.reshape(drop.shape + (1,) * (cond.dim() - 1))
    return torch.where(mask, null.to(cond.dtype), cond)


class _VectorEmbedding(nn.Module):
    """A fixed-shape tensor condition ``(B, *shape)`` -> ``(B, dim)`` through a two-layer MLP,
    with a learned null embedding."""

    def __init__(self, spec: TensorCond, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(spec.numel, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(0.02 * torch.randn(dim))

    def forward(self, cond: torch.Tensor | None, drop: torch.Tensor | None,
                batch: int, device: torch.device) -> torch.Tensor:
        null = self.null.expand(batch, -1)  # (B, dim)
        if cond is None:
            return null
        w = self.mlp[0].weight
        emb = self.mlp(cond.reshape(batch, -1).to(w.dtype))  # (B, dim)
        return null_where(drop, emb, self.null)


def _global_fields(spec: NamedCond, fields: Iterable[str] | None) -> list[tuple[str, CondSpec]]:
    names = spec.field_specs
    if fields is None:
        return [(k, s) for k, s in spec.fields  # sequences are read by cross-attention
                if isinstance(s, (LabelCond, TensorCond)) and not s.variable_shape]
    unknown = [f for f in fields if f not in names]
    if unknown:
        raise ValueError(f"condition fields {unknown} are not in {list(names)}")
    return [(k, names[k]) for k in fields]


class ConditionEmbedding(nn.Module):
    """A global condition of any kind -> ``(B, dim)``; its null where ``drop`` or ``cond=None``.

    * no condition: one learned null vector (``table``, as :class:`ClassEmbedding` with 0
      classes);
    * labels: :class:`ClassEmbedding`'s table with a null class (same parameter names);
    * a fixed-shape tensor: flattened -> MLP, a learned null vector;
    * a named set: the sum of its fields' embeddings (``fields`` picks which; by default every
      fixed-shape label or tensor field; variable-shape fields are dense and sequences are
      cross-attended, both left to the network);
    * a sequence alone: the null vector only (the network cross-attends to it).
    """

    def __init__(self, spec: Any, dim: int, fields: Iterable[str] | None = None):
        super().__init__()
        self.spec = spec = as_cond_spec(spec)
        self.parts: nn.ModuleDict | None = None
        if isinstance(spec, NamedCond):
            chosen = _global_fields(spec, fields)
            self.parts = nn.ModuleDict({k: ConditionEmbedding(s, dim) for k, s in chosen})
        elif isinstance(spec, TensorCond):
            if spec.variable_shape:
                raise ValueError(f"a global condition embedding needs a fixed shape; got "
                                 f"{spec.describe()} (feed dense conditions to the network "
                                 "directly)")
            self.vector = _VectorEmbedding(spec, dim)
        else:
            self.table = nn.Embedding(spec.num_classes + 1, dim)
        self.dim = dim

    def forward(self, cond: Any, drop: torch.Tensor | None, batch: int,
                device: torch.device) -> torch.Tensor:
        if self.parts is not None:  # the sum of the fields' embeddings, in their dtype
            parts = [part(None if cond is None else cond[k], drop, batch, device)
                     for k, part in self.parts.items()]  # each (B, dim)
            return sum(parts[1:], parts[0]) if parts else torch.zeros(batch, self.dim,
                                                                      device=device)
        if hasattr(self, "vector"):
            return self.vector(cond, drop, batch, device)
        null = torch.full((batch,), self.spec.num_classes, device=device, dtype=torch.long)
        idx = null if cond is None or not isinstance(self.spec, LabelCond) else cond.long()
        if drop is not None:
            idx = torch.where(drop, null, idx)
        return self.table(idx)  # (B, dim)


class Conditioning(nn.Module):
    """``(t, cond, drop)`` -> ``(B, dim)``: time embedding + :class:`ConditionEmbedding`.

    Checkpoints of earlier omnidiff versions named the condition part ``label``; they load.
    """

    def __init__(self, spec: Any, dim: int, freq_dim: int = 128,
                 fields: Iterable[str] | None = None):
        super().__init__()
        self.time = TimeEmbedding(dim, freq_dim)
        self.embed = ConditionEmbedding(spec, dim, fields)
        self.register_load_state_dict_pre_hook(_rename_legacy_label)

    def forward(self, t: torch.Tensor, cond: Any, drop: torch.Tensor | None,
                batch: int) -> torch.Tensor:
        if t.dim() == 0:
            t = t.expand(batch)
        temb = self.time(t)  # (B, dim)
        return temb + self.embed(cond, drop, batch, t.device).to(temb.dtype)  # (B, dim)


def _rename_legacy_label(module: nn.Module, state_dict: dict, prefix: str, *args: Any) -> None:
    old = prefix + "label."
    for key in [k for k in state_dict if k.startswith(old)]:
        state_dict[prefix + "embed." + key[len(old):]] = state_dict.pop(key)
