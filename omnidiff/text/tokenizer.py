"""A word-level (or BPE) tokenizer fitted offline on training captions with Hugging Face's
``tokenizers``: lower-cased, split on white space and punctuation, ``[PAD]`` = 0 and
``[UNK]`` = 1, so that words it never saw become the unknown token rather than an error."""

from __future__ import annotations

from typing import Sequence

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from omnidiff.errors import ConditionError, UserError

__all__ = ["fit_tokenizer", "load_tokenizer", "tokenize", "SPECIAL"]

SPECIAL = ("[PAD]", "[UNK]")
KINDS = ("word", "bpe")


def fit_tokenizer(captions: Sequence[str], *, kind: str = "word", vocab_size: int = 1000,
                  min_frequency: int = 1):
    """A ``tokenizers.Tokenizer`` fitted on ``captions`` (at most ``vocab_size`` tokens)."""
    if kind not in KINDS:
        raise UserError(f"unknown tokenizer {kind!r}; choose one of: {', '.join(KINDS)}")
    if not captions:
        raise UserError("a tokenizer needs training captions; the data has none")
    if kind == "word":
        tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
        trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                            special_tokens=list(SPECIAL))
    else:
        tok = Tokenizer(models.BPE(unk_token="[UNK]"))
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=list(SPECIAL))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(list(captions), trainer)
    return tok


def load_tokenizer(json: str):
    """A tokenizer from its JSON (as stored in ``model.pt``)."""
    return Tokenizer.from_str(json)


def tokenize(tokenizer, texts: Sequence[str], max_length: int
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """``texts`` -> token ids ``(n, max_length)`` long (0-padded) and ``mask (n,
    max_length)`` bool; a text of more than ``max_length`` tokens is one clear error."""
    ids = torch.zeros(len(texts), max_length, dtype=torch.long)
    mask = torch.zeros(len(texts), max_length, dtype=torch.bool)
    for i, enc in enumerate(tokenizer.encode_batch(list(texts))):
        if len(enc.ids) > max_length:
            raise ConditionError(f"prompt {texts[i][:60]!r} has {len(enc.ids)} tokens; this "
                                 f"model's text encoder takes at most {max_length}")
        ids[i, : len(enc.ids)] = torch.tensor(enc.ids, dtype=torch.long)
        mask[i, : len(enc.ids)] = True
    return ids, mask
