"""Prompts -> the value of a :class:`~omnidiff.core.conditions.SequenceCond`, for either text
encoder, from what the condition specification stores (``spec.encoder``):

* ``{"kind": "tokenizer", "tokenizer": <JSON>}`` — token ids for the network's own encoder;
* ``{"kind": "pretrained", "name": <hub id or folder>}`` — a frozen encoder's embeddings
  (optionally ``tokenizer`` (its folder), ``attend_padding`` (an all-True mask) and
  ``null_prompt`` (the text whose encoding is the model's null condition under guidance, ""
  for Stable Diffusion-style models), as a diffusers pipeline folder sets them).

:func:`text_condition` builds the specification and its :class:`PromptEncoder` from a data
module's training captions and its ``text`` settings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import torch

from omnidiff.core.conditions import SequenceCond
from omnidiff.errors import ConditionError, UserError
from omnidiff.text.pretrained import PretrainedTextEncoder
from omnidiff.text.tokenizer import fit_tokenizer, load_tokenizer, tokenize

__all__ = ["PromptEncoder", "text_condition", "encode_prompts", "check_prompts",
           "TEXT_DEFAULTS"]

# data.text: the encoder ("learned": trained with the denoiser on a tokenizer fitted to the
# captions; else a CLIP / T5 hub id or folder, frozen), the token limit (null: the longest
# training caption + 8 for a learned encoder, the pretrained encoder's own limit otherwise)
TEXT_DEFAULTS = {"encoder": "learned", "max_length": None, "tokenizer": "word",
                 "vocab_size": 1000}


def check_prompts(prompts: Any) -> list[str]:
    """A prompt or a list of prompts -> a non-empty list of strings, or one clear error."""
    if isinstance(prompts, str):
        return [prompts]
    if isinstance(prompts, (list, tuple)) and all(isinstance(p, str) for p in prompts):
        if not prompts:
            raise ConditionError("the list of prompts is empty; pass at least one prompt")
        return list(prompts)
    raise ConditionError(f"a prompt must be a string or a list of strings; got "
                         f"{type(prompts).__name__}")


class PromptEncoder:
    """``encoder(texts) -> {"tokens" | "embeddings": ..., "mask": ...}`` of ``spec``'s shape."""

    def __init__(self, spec: SequenceCond, *, device: torch.device | str | None = None,
                 pretrained: PretrainedTextEncoder | None = None):
        info = dict(spec.encoder or {})
        self.spec, self.kind = spec, info.get("kind")
        if self.kind == "tokenizer":
            self.tokenizer = load_tokenizer(info["tokenizer"])
        elif self.kind == "pretrained":
            self.model = pretrained or PretrainedTextEncoder(
                info["name"], max_length=spec.max_length, device=device,
                tokenizer=info.get("tokenizer"),
                attend_padding=bool(info.get("attend_padding")))
        else:
            raise UserError("this model's sequence condition stores no text encoder: pass "
                            "token ids or embeddings as cond= instead of prompts")

    @property
    def calls(self) -> int:
        """Forward passes of a pretrained encoder so far (0 for a tokenizer)."""
        return getattr(getattr(self, "model", None), "calls", 0)

    def __call__(self, texts: Any) -> dict[str, torch.Tensor]:
        texts = check_prompts(texts)
        if self.kind == "tokenizer":
            ids, mask = tokenize(self.tokenizer, texts, self.spec.max_length)
            return {"tokens": ids, "mask": mask}
        emb, mask = self.model(texts)
        return {"embeddings": emb, "mask": mask}


def encode_prompts(spec: SequenceCond, texts: Any) -> dict[str, torch.Tensor]:
    """One-off :class:`PromptEncoder` call (a pretrained encoder is loaded each time)."""
    return PromptEncoder(spec)(texts)


def _settings(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(TEXT_DEFAULTS))
    if unknown:
        raise UserError(f"unknown data.text option(s) {unknown}; known: "
                        f"{', '.join(TEXT_DEFAULTS)}")
    return TEXT_DEFAULTS | cfg


def text_condition(captions: Sequence[str], cfg: Mapping[str, Any] | None = None, *,
                   device: torch.device | str | None = None
                   ) -> tuple[SequenceCond, PromptEncoder]:
    """The sequence condition of a data module with ``captions`` (its training captions) and
    ``cfg`` (``data.text``: :data:`TEXT_DEFAULTS`), with the encoder that makes its values."""
    s = _settings(cfg)
    if s["encoder"] == "learned":
        tok = fit_tokenizer(captions, kind=s["tokenizer"], vocab_size=int(s["vocab_size"]))
        longest = max(len(e.ids) for e in tok.encode_batch(list(captions)))
        max_length = int(s["max_length"] or longest + 8)
        spec = SequenceCond(max_length, vocab_size=tok.get_vocab_size(),
                            encoder={"kind": "tokenizer", "tokenizer": tok.to_str()})
        return spec, PromptEncoder(spec)
    name = str(s["encoder"])
    if Path(name).expanduser().is_dir():
        name = str(Path(name).expanduser().resolve())
    model = PretrainedTextEncoder(name, max_length=s["max_length"], device=device)
    spec = SequenceCond(model.max_length, dim=model.dim,
                        encoder={"kind": "pretrained", "name": name})
    return spec, PromptEncoder(spec, pretrained=model)
