"""A sequence condition (text) -> the context a network cross-attends to, computed once per
prompt.

:class:`SequenceEncoder` turns token ids (a small transformer trained with the denoiser, as a
text encoder from scratch) or precomputed embeddings (a frozen pretrained encoder's, projected
to the network's width) into ``context: (B, 1 + L, width)`` with ``mask: (B, 1 + L)``. Position 0
is a learned start token that every row attends to, so an empty sequence is valid: its encoding
is the null prompt, which a dropped row (``drop``) gets.

:class:`SequenceConditioning` finds the one sequence in a condition of any kind (bare, or a
field of a named set) and gives the network ``encode_cond(cond)`` (run once before sampling:
the sequence replaced by its encoding ``{"context", "mask"}``) and ``forward(cond, drop)``
(encoding only where ``cond`` is not encoded yet, as in training).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from omnidiff.core.conditions import SequenceCond, as_cond_spec, sequence_field

__all__ = ["SequenceEncoder", "SequenceConditioning", "sequence_field", "pool", "WordBag"]


def pool(context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``context: (B, L, D)`` over its unmasked tokens -> ``(B, D)``."""
    w = mask.to(context.dtype).unsqueeze(-1)  # (B, L, 1)
    return (context * w).sum(1) / w.sum(1).clamp_min(1.0)


class WordBag(nn.Module):
    """A prompt as a bag of words: the sum over its unmasked tokens of a learned vector per
    token id (or of a linear map of each embedding) -> ``(B, dim)``; zero for the empty prompt.

    Each word adds the same vector whatever the prompt's length and wording, as a class label
    adds its embedding, so what a word means is learned as fast as a label. A mean over the
    encoder's tokens instead shrinks each word's share as the prompt grows: the same pitch or
    digit named in a longer caption arrives weaker. Word order is the encoder's to read.
    The vectors start at a label embedding's scale (N(0, 1) per entry), not at zero: a network
    tells classes apart from its first step because their random embeddings already differ, and
    a bag that starts at zero gives every word the same (zero) vector until the loss has pulled
    them apart; the words that carry little of the loss (a digit's name beside the direction it
    moves in) then stay indistinct for thousands of steps (video_text_digits: frames read as the
    prompted digit 0.46 at 2000 steps against 0.19 from zero, std 0.3: 0.37).

    ``gain`` stores the vectors ``gain`` times smaller and multiplies them back: the same
    vectors at the start, but an optimiser's steps (Adam's are about ``lr`` per entry whatever
    the scale) move them ``gain`` times faster -- the bag's own learning rate.
    """

    def __init__(self, spec: SequenceCond, dim: int, gain: float = 1.0):
        super().__init__()
        if not gain > 0:
            raise ValueError(f"a bag of words needs gain > 0, got {gain}")
        self.spec, self.gain = spec, float(gain)
        if spec.vocab_size is not None:
            self.table = nn.Embedding(spec.vocab_size, dim)  # N(0, 1), as a label's
        else:  # unit-variance embeddings give unit-variance vectors
            self.proj = nn.Linear(spec.dim, dim, bias=False)
            nn.init.normal_(self.proj.weight, std=spec.dim ** -0.5)
        with torch.no_grad():  # stored gain times smaller (no new draw: gain 1 is as before)
            next(self.parameters()).div_(self.gain)

    def forward(self, value: dict[str, torch.Tensor]) -> torch.Tensor:
        seq, mask = value[self.spec.key], value["mask"]  # (B, L[, D]), (B, L)
        if self.spec.vocab_size is not None:
            words = self.table(seq)  # (B, L, dim)
        else:
            words = self.proj(seq.to(self.proj.weight.dtype))  # (B, L, dim)
        return self.gain * (words * mask[..., None].to(words.dtype)).sum(1)  # (B, dim)


class SequenceEncoder(nn.Module):
    """Token ids ``(B, L)`` or embeddings ``(B, L, D)`` with ``mask: (B, L)`` -> ``{"context":
    (B, 1 + L, width), "mask": (B, 1 + L)}`` through ``layers`` pre-norm transformer layers."""

    def __init__(self, spec: SequenceCond, width: int, layers: int = 2, heads: int = 4):
        super().__init__()
        self.spec = spec
        if spec.vocab_size is not None:
            self.tokens = nn.Embedding(spec.vocab_size, width)
            # at the tokens' scale (nn.Embedding draws N(0, 1)): positions 50x smaller
            # leave the encoder a bag of words for hundreds of steps, blind to word order
            self.position = nn.Parameter(torch.randn(spec.max_length, width))
        else:
            self.proj = nn.Sequential(nn.LayerNorm(spec.dim), nn.Linear(spec.dim, width))
        self.start = nn.Parameter(0.02 * torch.randn(width))
        self.layers = nn.ModuleList(
            nn.TransformerEncoderLayer(width, heads, 4 * width, dropout=0.0, activation="gelu",
                                       batch_first=True, norm_first=True)
            for _ in range(layers))
        self.norm = nn.LayerNorm(width)

    def forward(self, value: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        seq, mask = value[self.spec.key], value["mask"]  # (B, L[, D]), (B, L)
        if self.spec.vocab_size is not None:
            h = self.tokens(seq) + self.position[: seq.shape[1]]  # (B, L, W)
        else:
            h = self.proj(seq.to(self.start.dtype))  # (B, L, W)
        b = h.shape[0]
        h = torch.cat([self.start.expand(b, 1, -1), h], 1)  # (B, 1 + L, W)
        mask = torch.cat([mask.new_ones(b, 1), mask], 1)  # (B, 1 + L)
        for layer in self.layers:
            h = layer(h, src_key_padding_mask=~mask)  # (B, 1 + L, W)
        return {"context": self.norm(h), "mask": mask}

    def null(self) -> dict[str, torch.Tensor]:
        """The encoding of the empty sequence (the null prompt): ``(1, 1 + L, W)``, ``(1, 1 +
        L)``."""
        spec, p = self.spec, self.start
        shape = (1, spec.max_length) + (() if spec.vocab_size is not None else (spec.dim,))
        seq = torch.zeros(shape, device=p.device,
                          dtype=torch.long if spec.vocab_size is not None else p.dtype)
        return self({spec.key: seq, "mask": torch.zeros(shape[:2], dtype=torch.bool,
                                                        device=p.device)})


class SequenceConditioning(nn.Module):
    """The sequence of a condition specification, encoded for cross-attention; with
    ``bag_dim``, also its :class:`WordBag` (``bag(cond, drop, batch)``; ``bag_gain``: its
    ``gain``). ``encoder=False`` (a network that reads the bag alone) builds and runs no
    encoder."""

    def __init__(self, spec: Any, width: int, layers: int = 2, heads: int = 4,
                 bag_dim: int | None = None, encoder: bool = True, bag_gain: float = 1.0):
        super().__init__()
        self.field, seq = sequence_field(spec)
        if seq is None:
            raise ValueError(f"no sequence condition in {as_cond_spec(spec).describe()}")
        if not encoder and not bag_dim:
            raise ValueError("a sequence condition needs its encoder, its bag of words or both")
        self.encoder = SequenceEncoder(seq, width, layers, heads) if encoder else None
        self.words = WordBag(seq, int(bag_dim), bag_gain) if bag_dim else None
        self.width, self.bag_dim = width, int(bag_dim or 0)

    def _get(self, cond: Any) -> Any:
        return cond if self.field is None or cond is None else cond.get(self.field)

    def encode_cond(self, cond: Any) -> Any:
        """``cond`` with its sequence replaced by ``{"context", "mask", "null_context",
        "null_mask"}`` (the prompt's encoding and the null prompt's, per row; done once per
        sampling run, so no step runs the encoder; encoded conditions pass through)."""
        value = self._get(cond)
        if value is None or "context" in value or "bag" in value:
            return cond
        enc = {}
        if self.encoder is not None:
            enc = self.encoder(value)
            b = enc["mask"].shape[0]
            null = self.encoder.null()
            enc |= {"null_context": null["context"].expand(b, -1, -1),
                    "null_mask": null["mask"].expand(b, -1)}
        if self.words is not None:
            enc["bag"] = self.words(value)  # (B, bag_dim)
        return enc if self.field is None else {**cond, self.field: enc}

    def bag(self, cond: Any, drop: torch.Tensor | None, batch: int, device: torch.device
            ) -> torch.Tensor:
        """The prompt's :class:`WordBag` ``(B, bag_dim)``: zero where ``drop`` is True and
        every row when ``cond`` is None (the empty prompt's bag)."""
        value = self._get(cond)
        if value is None:
            return torch.zeros(batch, self.bag_dim, device=device)
        out = value["bag"] if "bag" in value else self.words(value)  # (B, bag_dim)
        return out if drop is None else out * (~drop)[:, None].to(out.dtype)

    def forward(self, cond: Any, drop: torch.Tensor | None, batch: int, device: torch.device
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(context (B, 1 + L, W), mask (B, 1 + L))``; rows where ``drop`` is True (and every
        row when ``cond`` is None) get the empty sequence's encoding (the null prompt)."""
        value = self._get(cond)
        if value is None:
            null = self.encoder.null()
            return (null["context"].expand(batch, -1, -1), null["mask"].expand(batch, -1))
        if "context" not in value:  # training: encoded here, with gradients
            value = self.encoder(value)
        context, mask = value["context"], value["mask"]
        if drop is not None:
            null = (value if "null_context" in value else
                    {f"null_{k}": v for k, v in self.encoder.null().items()})
            context = torch.where(drop[:, None, None], null["null_context"].to(context.dtype),
                                  context)
            mask = torch.where(drop[:, None], null["null_mask"], mask)
        return context, mask
