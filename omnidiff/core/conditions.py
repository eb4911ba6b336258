"""Conditions: what a sample is generated *given*, of every kind, declared once.

A domain's data module declares a **condition specification** (``cond_spec``), which
``model.pt`` stores and every part of the core reads instead of a bare ``num_classes``:

* :class:`NoCond` — an unconditional model;
* :class:`LabelCond` ``(num_classes)`` — class labels, a ``(B,)`` long tensor;
* :class:`TensorCond` ``(shape, dtype)`` — a tensor per sample, ``(B, *shape)``: a mel
  spectrogram ``(80, None)`` (``None``: any length), the first frames of a clip, a vector of
  properties ``(3,)``; with a ``fill`` value it is optional (left out, it is that constant:
  0 for "no frame given"), and a named set may omit it;
* :class:`SequenceCond` ``(max_length, vocab_size | dim)`` — a sequence per sample, read by
  the network through cross-attention: token ids ``{"tokens": (B, L) long, "mask": (B, L)
  bool}`` or precomputed embeddings ``{"embeddings": (B, L, D), "mask": (B, L) bool}``, padded to
  ``max_length`` (``mask`` True on real tokens). How text becomes such a sequence (a tokenizer,
  a frozen encoder) is stored beside it (``encoder``) and read by :mod:`omnidiff.text`; the
  core never tokenizes;
* :class:`NamedCond` ``(fields)`` — a named set of these, a dict ``{name: value}``.

Condition *values* are ``None``, a tensor, or a dict of them (a sequence is a dict too); the
core passes them through untouched — losses, samplers and guidance never look inside
(classifier-free guidance only concatenates them, :func:`cat_conds`, and marks ``drop``).
How a condition enters the network, and what its null condition is, is the network's business
(:mod:`omnidiff.nn` has the common embeddings).

Specifications are stored as plain dicts (:meth:`CondSpec.to_dict`, :func:`as_cond_spec`), so
checkpoints stay loadable with ``torch.load(weights_only=True)``; a legacy integer
``num_classes`` reads as labels (or none for 0).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Mapping, Sequence

import torch

from omnidiff._util import map_cond
from omnidiff.errors import ConditionError, UserError

__all__ = ["ConditionError", "CondSpec", "NoCond", "LabelCond", "TensorCond", "SequenceCond",
           "NamedCond",
           "as_cond_spec", "cond_spec_of", "with_class_names", "class_names", "sequence_field",
           "map_cond", "cat_conds",
           "cond_batch_size",
           "index_cond"]

Cond = Any  # None | Tensor | dict[str, Tensor]

_DTYPES = {"float32": torch.float32, "float64": torch.float64, "float16": torch.float16,
           "bfloat16": torch.bfloat16, "long": torch.long, "int64": torch.long,
           "int32": torch.int32, "bool": torch.bool}


# ---- condition values: tree operations over None | Tensor | dict ---------------------------


def cat_conds(conds: Sequence[Cond]) -> Cond:
    """Concatenate conditions along the batch dimension (each of the same kind)."""
    first = conds[0]
    if first is None:
        return None
    if isinstance(first, Mapping):
        return {k: cat_conds([c[k] for c in conds]) for k in first}
    return torch.cat(list(conds))


def index_cond(cond: Cond, index: Any) -> Cond:
    """``cond[index]`` along the batch dimension, for every tensor."""
    return map_cond(lambda t: t[index], cond)


def cond_batch_size(cond: Cond) -> int | None:
    """The batch size of a batched condition (None for ``None``)."""
    if cond is None:
        return None
    if isinstance(cond, Mapping):
        sizes = {cond_batch_size(v) for v in cond.values()}
        sizes.discard(None)
        return sizes.pop() if len(sizes) == 1 else None
    return int(cond.shape[0]) if cond.dim() else None


def _fmt_shape(shape: Sequence[Any]) -> str:
    inner = ", ".join("*" if s is None else str(s) for s in shape)
    return f"({inner},)" if len(shape) == 1 else f"({inner})"


def _got(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"{str(value.dtype).replace('torch.', '')} {tuple(value.shape)}"
    return type(value).__name__


# ---- specifications --------------------------------------------------------------------------

@dataclass(frozen=True)
class CondSpec:
    """What a model is conditioned on. Subclasses: NoCond, LabelCond, TensorCond, NamedCond."""

    kind: ClassVar[str] = ""
    num_classes: ClassVar[int] = 0  # the class count of a label condition; 0 for other kinds

    @property
    def conditional(self) -> bool:
        return True

    @property
    def variable_shape(self) -> bool:
        """True when the condition's shape may vary (and so may fix the sample's shape)."""
        return False

    def describe(self) -> str:  # pragma: no cover - overridden
        raise NotImplementedError

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind}

    def check(self, cond: Any, n: int | None = None) -> tuple[Cond, int | None]:
        """A user's condition -> ``(batched condition, batch size)``, or one clear line.

        ``n`` (when given) is the number of samples asked for: one condition is repeated to
        ``n``; a batch of conditions must have ``n`` rows.
        """
        raise NotImplementedError  # pragma: no cover

    def check_batch(self, cond: Any, batch: int) -> None:
        """A data module's batched condition must fit exactly (dtype and shape)."""
        raise NotImplementedError  # pragma: no cover

    @property
    def drawable(self) -> bool:
        """True when :meth:`draw` makes conditions without data (labels)."""
        return False

    def draw(self, n: int, generator: torch.Generator) -> Cond:
        """Conditions drawn without data (uniform labels); None where data are needed."""
        return None

    @property
    def optional(self) -> bool:
        """True when a field of this kind may be left out of a named set (a fill value)."""
        return False

    def __str__(self) -> str:
        return self.describe()


@dataclass(frozen=True)
class NoCond(CondSpec):
    kind: ClassVar[str] = "none"

    @property
    def conditional(self) -> bool:
        return False

    def describe(self) -> str:
        return "no condition"

    def check(self, cond: Any, n: int | None = None) -> tuple[Cond, int | None]:
        if cond is not None:
            raise ConditionError("this model is unconditional: drop cond= (and guidance=)")
        return None, n

    def check_batch(self, cond: Any, batch: int) -> None:
        return None


@dataclass(frozen=True)
class LabelCond(CondSpec):
    """Class labels ``0..num_classes-1``; ``names`` (optional, one per class, e.g. the training
    folder's sub-folders) are accepted wherever labels are: ``cond="high"`` or
    ``cond=["A4", "C4"]``. Names are descriptive: two specs that differ only in them are
    equal."""

    num_classes: int = 1  # type: ignore[misc]
    names: tuple[str, ...] = field(default=(), compare=False)
    kind: ClassVar[str] = "label"

    def __post_init__(self) -> None:
        object.__setattr__(self, "num_classes", int(self.num_classes))
        object.__setattr__(self, "names", tuple(str(k) for k in self.names or ()))
        if self.num_classes < 1:
            raise UserError(f"a label condition needs num_classes >= 1, got {self.num_classes}")
        if self.names and len(self.names) != self.num_classes:
            raise UserError(f"a label condition of {self.num_classes} classes needs as many "
                            f"names, got {len(self.names)}")

    def describe(self) -> str:
        if self.names:
            shown = ", ".join(self.names[:12]) + (", ..." if self.num_classes > 12 else "")
            return f"class labels 0..{self.num_classes - 1} ({shown})"
        return f"class labels 0..{self.num_classes - 1}"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "num_classes": self.num_classes}
        if self.names:
            out["names"] = list(self.names)
        return out

    def label_of(self, value: Any) -> Any:
        """A class name (or a list of them, mixed with labels) as its label; anything else as
        it is. An unknown name is one :class:`ConditionError` listing the names."""
        if isinstance(value, (list, tuple)):
            return [self.label_of(v) for v in value]
        if not isinstance(value, str):
            return value
        if value in self.names:
            return self.names.index(value)
        if value.strip().lstrip("-").isdigit():
            return int(value)
        known = (f"its classes are {', '.join(self.names)}" if self.names
                 else "it has no class names: pass a label 0.."
                 f"{self.num_classes - 1}")
        raise ConditionError(f"cond={value!r} is not a class of this model; {known}")

    def check(self, cond: Any, n: int | None = None) -> tuple[Cond, int | None]:
        if cond is None:
            return None, n
        cond = self.label_of(cond)
        try:
            c = torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):
            raise ConditionError(f"cond must be class labels (an int, a list of ints or a long "
                                 f"tensor), got {_got(cond)}") from None
        if c.is_floating_point() or c.is_complex() or c.dtype == torch.bool:
            raise ConditionError(f"cond must be integer class labels, got dtype "
                                 f"{str(c.dtype).replace('torch.', '')}")
        c = c.long().reshape(-1)
        if n is None:
            n = c.numel()
        if c.numel() == 1:
            c = c.expand(n).clone()
        if c.numel() != n:
            raise ConditionError(f"cond has {c.numel()} labels for n={n} samples; pass one "
                                 "label or exactly n")
        self._check_range(c)
        return c, n

    def _check_range(self, c: torch.Tensor) -> None:
        bad = c[(c < 0) | (c >= self.num_classes)]
        if bad.numel():
            raise ConditionError(f"class label {int(bad[0])} is out of range; this model has "
                                 f"{self.num_classes} classes (0..{self.num_classes - 1})")

    def check_batch(self, cond: Any, batch: int) -> None:
        if not (isinstance(cond, torch.Tensor) and cond.dtype == torch.long
                and tuple(cond.shape) == (batch,)):
            raise ConditionError(f"the condition must be long class labels ({batch},); got "
                                 f"{_got(cond)}")
        self._check_range(cond)

    @property
    def drawable(self) -> bool:
        return True

    def draw(self, n: int, generator: torch.Generator) -> Cond:
        return torch.randint(0, self.num_classes, (n,), generator=generator)


@dataclass(frozen=True)
class TensorCond(CondSpec):
    shape: tuple[int | None, ...] = ()
    dtype: str = "float32"
    # the value of a condition left out: with it, the condition is optional (drawn as a
    # constant tensor, a field of a named set may be omitted), e.g. 0 for "no frame given"
    fill: float | None = None
    kind: ClassVar[str] = "tensor"

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(None if s is None else int(s)
                                                for s in self.shape))
        if self.dtype not in _DTYPES:
            raise UserError(f"unknown condition dtype {self.dtype!r}; choose one of: "
                             f"{', '.join(_DTYPES)}")
        if any(s is not None and s < 1 for s in self.shape):
            raise UserError(f"condition shape {self.shape} must hold positive sizes or None")
        if self.fill is not None:
            if self.variable_shape:
                raise UserError("a condition with a fill value needs a fixed shape")
            object.__setattr__(self, "fill", float(self.fill))

    @property
    def torch_dtype(self) -> torch.dtype:
        return _DTYPES[self.dtype]

    @property
    def variable_shape(self) -> bool:
        return any(s is None for s in self.shape)

    @property
    def numel(self) -> int | None:
        """Elements per sample (None when the shape varies)."""
        return None if self.variable_shape else math.prod(self.shape)

    def describe(self) -> str:
        return f"a {self.dtype} tensor {_fmt_shape(self.shape)} per sample"

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "shape": list(self.shape), "dtype": self.dtype}
        return out if self.fill is None else out | {"fill": self.fill}

    @property
    def drawable(self) -> bool:
        return self.fill is not None

    @property
    def optional(self) -> bool:
        return self.fill is not None

    def draw(self, n: int, generator: torch.Generator | None = None) -> Cond:
        """``(n, *shape)`` filled with :attr:`fill` (None without one)."""
        if self.fill is None:
            return None
        return torch.full((n, *self.shape), self.fill, dtype=self.torch_dtype)

    def _expected(self) -> str:
        return (f"expected {self.dtype} {_fmt_shape(self.shape)} (one sample) or "
                f"(n, {', '.join('*' if s is None else str(s) for s in self.shape)})")

    def _fits(self, shape: Sequence[int]) -> bool:
        return len(shape) == len(self.shape) and all(
            s is None or s == d for s, d in zip(self.shape, shape))

    def _as_tensor(self, cond: Any) -> torch.Tensor:
        if isinstance(cond, (list, tuple)) and cond and all(
                isinstance(c, torch.Tensor) for c in cond):
            shapes = {tuple(c.shape) for c in cond}
            if len(shapes) > 1:
                raise ConditionError(
                    f"conditions of different shapes {sorted(shapes)} in one call; generate "
                    "once per shape (or crop / pad them to one shape)")
            return torch.stack(list(cond))
        try:
            return torch.as_tensor(cond)
        except (TypeError, ValueError, RuntimeError):
            raise ConditionError(f"cond must be {self.describe()}; got {_got(cond)}") from None

    def _cast(self, c: torch.Tensor) -> torch.Tensor:
        want = self.torch_dtype
        ok = (c.is_floating_point() if want.is_floating_point
              else (c.dtype == torch.bool) if want == torch.bool
              else not (c.is_floating_point() or c.is_complex() or c.dtype == torch.bool))
        if not ok:
            raise ConditionError(f"cond has dtype {str(c.dtype).replace('torch.', '')}; "
                                 f"{self._expected()}")
        return c.to(want)

    def check(self, cond: Any, n: int | None = None) -> tuple[Cond, int | None]:
        if cond is None:
            return None, n
        c = self._cast(self._as_tensor(cond))
        if self._fits(c.shape):
            c = c.unsqueeze(0).expand(n or 1, *c.shape).clone()
        elif not (c.dim() == len(self.shape) + 1 and self._fits(c.shape[1:])):
            raise ConditionError(f"cond has shape {tuple(c.shape)}; {self._expected()}")
        if n is not None and c.shape[0] != n:
            raise ConditionError(f"cond holds {c.shape[0]} conditions for n={n} samples; pass "
                                 "one or exactly n")
        if c.is_floating_point() and not bool(torch.isfinite(c).all()):
            raise ConditionError("cond holds NaN or inf; pass finite values")
        return c, int(c.shape[0])

    def check_batch(self, cond: Any, batch: int) -> None:
        if not (isinstance(cond, torch.Tensor) and cond.dtype == self.torch_dtype
                and cond.dim() == len(self.shape) + 1 and cond.shape[0] == batch
                and self._fits(cond.shape[1:])):
            raise ConditionError(f"the condition must be {self.dtype} ({batch}, "
                                 f"{', '.join('*' if s is None else str(s) for s in self.shape)})"
                                 f"; got {_got(cond)}")


@dataclass(frozen=True)
class SequenceCond(CondSpec):
    """A sequence per sample (text), padded to ``max_length``: token ids in
    ``[0, vocab_size)`` or embeddings of width ``dim`` (exactly one of the two), each with a
    padding mask. ``encoder`` says how text becomes this sequence (:mod:`omnidiff.text`: a
    tokenizer fitted on the captions, or a frozen pretrained encoder); the core stores it and
    never reads it. An all-False mask is the empty sequence (the network's null prompt)."""

    max_length: int = 77
    vocab_size: int | None = None
    dim: int | None = None
    encoder: Mapping[str, Any] | None = field(default=None, hash=False, compare=False)
    kind: ClassVar[str] = "sequence"

    def __post_init__(self) -> None:
        object.__setattr__(self, "max_length", int(self.max_length))
        if (self.vocab_size is None) == (self.dim is None):
            raise UserError("a sequence condition needs exactly one of vocab_size (token ids) "
                            "and dim (embeddings)")
        for name in ("vocab_size", "dim", "max_length"):
            value = getattr(self, name)
            if value is not None and int(value) < 1:
                raise UserError(f"a sequence condition needs {name} >= 1, got {value}")
            if value is not None:
                object.__setattr__(self, name, int(value))

    @property
    def key(self) -> str:
        """The value's key for the sequence itself: ``"tokens"`` or ``"embeddings"``."""
        return "tokens" if self.vocab_size is not None else "embeddings"

    def describe(self) -> str:
        what = (f"token ids 0..{self.vocab_size - 1}" if self.vocab_size is not None
                else f"{self.dim}-d embeddings")
        return f"a sequence of up to {self.max_length} {what} with a mask"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "max_length": self.max_length}
        out |= {"vocab_size": self.vocab_size} if self.vocab_size else {"dim": self.dim}
        return out if self.encoder is None else out | {"encoder": dict(self.encoder)}

    def _one_dim(self) -> int:
        return 1 if self.vocab_size is not None else 2  # dims of one sample's sequence

    def _values(self, cond: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        if isinstance(cond, str) or (isinstance(cond, (list, tuple)) and cond
                                     and all(isinstance(c, str) for c in cond)):
            raise ConditionError("text needs this model's text encoder: pass prompt= to "
                                 "Pipeline.generate, or encode it with omnidiff.text")
        if not isinstance(cond, Mapping) or self.key not in cond or (
                set(cond) - {self.key, "mask"}):
            raise ConditionError(f"cond must be {{{self.key!r}: ..., 'mask': ...}} "
                                 f"({self.describe()}); got {_got(cond)}")
        seq, mask = torch.as_tensor(cond[self.key]), cond.get("mask")
        return seq, None if mask is None else torch.as_tensor(mask)

    def check(self, cond: Any, n: int | None = None) -> tuple[Cond, int | None]:
        if cond is None:
            return None, n
        seq, mask = self._values(cond)
        if seq.dim() == self._one_dim():
            seq, mask = seq.unsqueeze(0), None if mask is None else mask.unsqueeze(0)
        if seq.dim() != self._one_dim() + 1 or (self.dim and seq.shape[-1] != self.dim):
            want = ("(L,) or (n, L)" if self.vocab_size
                    else f"(L, {self.dim}) or (n, L, {self.dim})")
            raise ConditionError(f"cond[{self.key!r}] has shape {tuple(seq.shape)}; expected "
                                 f"{want}")
        mask = torch.ones(seq.shape[:2], dtype=torch.bool) if mask is None else mask
        if mask.dtype != torch.bool or tuple(mask.shape) != tuple(seq.shape[:2]):
            raise ConditionError(f"cond['mask'] must be bool {tuple(seq.shape[:2])}; got "
                                 f"{_got(mask)}")
        seq, mask = self._padded(self._cast(seq), mask)
        if n is not None and seq.shape[0] == 1 and n > 1:
            seq, mask = seq.expand(n, *seq.shape[1:]).clone(), mask.expand(n, -1).clone()
        if n is not None and seq.shape[0] != n:
            raise ConditionError(f"cond holds {seq.shape[0]} sequences for n={n} samples; pass "
                                 "one or exactly n")
        return {self.key: seq, "mask": mask}, int(seq.shape[0])

    def _cast(self, seq: torch.Tensor) -> torch.Tensor:
        if self.vocab_size is None:
            if not seq.is_floating_point() or not bool(torch.isfinite(seq).all()):
                raise ConditionError(f"cond['embeddings'] must be finite floats; got "
                                     f"{_got(seq)}")
            return seq.float()
        if seq.is_floating_point() or seq.is_complex() or seq.dtype == torch.bool:
            raise ConditionError(f"cond['tokens'] must be integer token ids; got {_got(seq)}")
        seq = seq.long()
        self._check_vocab(seq)
        return seq

    def _check_vocab(self, tokens: torch.Tensor) -> None:
        bad = tokens[(tokens < 0) | (tokens >= self.vocab_size)]
        if bad.numel():
            raise ConditionError(f"token id {int(bad[0])} is out of range; this model's "
                                 f"vocabulary has {self.vocab_size} tokens")

    def _padded(self, seq: torch.Tensor, mask: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B, L, ...)`` -> ``(B, max_length, ...)``, padding zeros with mask False."""
        length = int(seq.shape[1])
        if length > self.max_length:
            raise ConditionError(f"a sequence of {length} tokens is longer than this model's "
                                 f"maximum of {self.max_length}; shorten the prompt")
        pad = self.max_length - length
        if pad:
            seq = torch.cat([seq, seq.new_zeros(seq.shape[0], pad, *seq.shape[2:])], 1)
            mask = torch.cat([mask, mask.new_zeros(mask.shape[0], pad)], 1)
        return seq, mask

    def check_batch(self, cond: Any, batch: int) -> None:
        shape = (batch, self.max_length) + (() if self.vocab_size else (self.dim,))
        seq = cond.get(self.key) if isinstance(cond, Mapping) else None
        mask = cond.get("mask") if isinstance(cond, Mapping) else None
        ok = (isinstance(seq, torch.Tensor) and isinstance(mask, torch.Tensor)
              and tuple(seq.shape) == shape and mask.dtype == torch.bool
              and tuple(mask.shape) == shape[:2]
              and seq.dtype == (torch.long if self.vocab_size else torch.float32))
        if not ok:
            raise ConditionError(f"the condition must be {{{self.key!r}: {shape}, 'mask': bool "
                                 f"{shape[:2]}}}; got {_got(cond)}")
        if self.vocab_size:
            self._check_vocab(seq)


@dataclass(frozen=True)
class NamedCond(CondSpec):
    fields: tuple[tuple[str, CondSpec], ...] = ()
    kind: ClassVar[str] = "named"

    def __post_init__(self) -> None:
        fields = self.fields.items() if isinstance(self.fields, Mapping) else self.fields
        fields = tuple((str(k), as_cond_spec(v)) for k, v in fields)
        if not fields:
            raise UserError("a named condition needs at least one field")
        if any(not s.conditional or isinstance(s, NamedCond) for _, s in fields):
            raise UserError("named condition fields must be labels, tensors or sequences")
        object.__setattr__(self, "fields", fields)

    @property
    def field_specs(self) -> dict[str, CondSpec]:
        return dict(self.fields)

    @property
    def variable_shape(self) -> bool:
        return any(s.variable_shape for _, s in self.fields)

    def describe(self) -> str:
        return "{" + ", ".join(f"{k!r}: {s.describe()}" for k, s in self.fields) + "}"

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "fields": {k: s.to_dict() for k, s in self.fields}}

    def _keys(self, cond: Any) -> None:
        if not isinstance(cond, Mapping):
            raise ConditionError(f"cond must be a dict with keys {list(self.field_specs)} "
                                 f"({self.describe()}); got {_got(cond)}")
        missing = [k for k, s in self.fields if k not in cond and not s.optional]
        extra = [k for k in cond if k not in self.field_specs]
        if missing or extra:
            raise ConditionError(f"cond keys {sorted(cond)} do not match the model's "
                                 f"{list(self.field_specs)} (missing {missing}, unknown {extra})")

    def check(self, cond: Any, n: int | None = None) -> tuple[Cond, int | None]:
        if cond is None:
            return None, n
        self._keys(cond)
        out = {}
        for k, spec in self.fields:  # the first field that fixes n fixes it for the rest
            if k not in cond:
                continue
            try:
                out[k], n = spec.check(cond[k], n)
            except ConditionError as exc:
                raise ConditionError(f"cond[{k!r}]: {exc}") from None
        out, n = self._repeat_to(out, n) if out else (out, n)
        left = [(k, s) for k, s in self.fields if k not in out]  # optional fields left out
        if left and n is None:
            names = ", ".join(k for k, _ in left)
            raise ConditionError(f"pass n, or a condition field that fixes it ({names} left out)")
        out |= {k: s.draw(n, None) for k, s in left}
        return {k: out[k] for k in self.field_specs}, n

    @property
    def drawable(self) -> bool:
        return all(s.drawable for _, s in self.fields)

    def draw(self, n: int, generator: torch.Generator) -> Cond:
        return {k: s.draw(n, generator) for k, s in self.fields} if self.drawable else None

    @staticmethod
    def _repeat_to(out: dict[str, Cond], n: int | None) -> tuple[Cond, int | None]:
        sizes = {cond_batch_size(v) for v in out.values()}
        if len(sizes) > 1:
            if sizes - {1}:
                big = max(sizes)
                out = {k: map_cond(lambda t: t.expand(big, *t.shape[1:]).clone(), v)
                       if cond_batch_size(v) == 1 else v for k, v in out.items()}
                sizes = {cond_batch_size(v) for v in out.values()}
            if len(sizes) > 1:
                raise ConditionError(f"cond fields hold different numbers of conditions "
                                     f"{sorted(sizes)}; pass one or the same number for each")
        return out, sizes.pop()

    def check_batch(self, cond: Any, batch: int) -> None:
        self._keys(cond)
        for k, spec in self.fields:
            try:
                spec.check_batch(cond[k], batch)
            except ConditionError as exc:
                raise ConditionError(f"cond[{k!r}]: {exc}") from None


NONE = NoCond()


def as_cond_spec(obj: Any) -> CondSpec:
    """A :class:`CondSpec` from a spec, its ``to_dict()``, or a legacy ``num_classes`` int."""
    if isinstance(obj, CondSpec):
        return obj
    if obj is None:
        return NONE
    if isinstance(obj, bool):
        raise UserError(f"not a condition specification: {obj!r}")
    if isinstance(obj, int):
        return LabelCond(obj) if obj > 0 else NONE
    if isinstance(obj, Mapping):
        kind = obj.get("kind")
        if kind == "none":
            return NONE
        if kind == "label":
            return LabelCond(int(obj["num_classes"]), tuple(obj.get("names") or ()))
        if kind == "tensor":
            return TensorCond(tuple(obj["shape"]), str(obj.get("dtype", "float32")),
                              obj.get("fill"))
        if kind == "sequence":
            return SequenceCond(int(obj["max_length"]), obj.get("vocab_size"), obj.get("dim"),
                                obj.get("encoder"))
        if kind == "named":
            return NamedCond(tuple((k, as_cond_spec(v)) for k, v in obj["fields"].items()))
    raise UserError(f"not a condition specification: {obj!r} (use NoCond(), LabelCond(k), "
                     "TensorCond(shape), SequenceCond(...), NamedCond(...) or their to_dict())")


def sequence_field(spec: Any) -> tuple[str | None, SequenceCond | None]:
    """``(field name, spec)`` of the sequence in a condition specification: ``(None, spec)``
    for a bare sequence, ``(None, None)`` without one; more than one is an error."""
    spec = as_cond_spec(spec)
    if isinstance(spec, SequenceCond):
        return None, spec
    found = [(k, s) for k, s in getattr(spec, "fields", ()) if isinstance(s, SequenceCond)]
    if len(found) > 1:
        raise UserError(f"a network reads one sequence condition; got {[k for k, _ in found]}")
    return found[0] if found else (None, None)


def cond_spec_of(data: Any) -> CondSpec:
    """A data module's condition specification: its ``cond_spec``, or (data modules written
    before conditions of every kind) one read from its ``num_classes``."""
    spec = getattr(data, "cond_spec", None)
    spec = as_cond_spec(spec if spec is not None else int(getattr(data, "num_classes", 0) or 0))
    return with_class_names(spec, getattr(data, "classes", None))


def class_names(spec: Any) -> list[str]:
    """The class names of a label condition (or of a named set's label field); empty when it
    has none."""
    spec = as_cond_spec(spec)
    if isinstance(spec, LabelCond):
        return list(spec.names)
    return next((list(v.names) for _, v in getattr(spec, "fields", ())
                 if isinstance(v, LabelCond)), [])


def with_class_names(spec: CondSpec, classes: Any) -> CondSpec:
    """``spec`` with ``classes`` as the names of its labels (a label spec, or the label field
    of a named set) when they are one per class; otherwise ``spec`` unchanged."""
    names = tuple(str(c) for c in classes or ())
    if isinstance(spec, LabelCond):
        return LabelCond(spec.num_classes, names) if len(names) == spec.num_classes else spec
    if isinstance(spec, NamedCond):
        return NamedCond(tuple((k, with_class_names(v, names)) for k, v in spec.fields))
    return spec


# the names before 0.2 (kept for plugins written against them)
as_spec = as_cond_spec
spec_of = cond_spec_of
