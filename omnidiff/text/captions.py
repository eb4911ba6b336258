"""Captions of a dataset as a sequence condition, for any domain.

* :class:`CaptionTable` encodes each distinct caption once (a frozen encoder runs once per
  caption) and gives the condition rows of any caption index, and captions back from
  conditions (for artifact labels and a domain's judge);
* :func:`folder_captions` reads the captions of a folder of files in the conventions users
  already have: Hugging Face's ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per
  line, as diffusers' text-to-image training reads it) or a ``.txt`` beside each file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import torch

from omnidiff.core.conditions import SequenceCond
from omnidiff.text.prompts import text_condition

__all__ = ["CaptionTable", "folder_captions"]


class CaptionTable:
    """The distinct captions of a dataset, encoded once: ``rows(index)`` -> the condition
    value ``{"tokens" | "embeddings": (n, L, ...), "mask": (n, L)}`` of caption indices."""

    def __init__(self, train: Sequence[str], other: Sequence[str], text_cfg: Any):
        self.spec, self.encoder = text_condition(list(train), text_cfg)
        self.texts = list(dict.fromkeys([*train, *other]))
        self.index = {t: i for i, t in enumerate(self.texts)}
        value, _ = self.spec.check(self.encoder(self.texts), len(self.texts))
        self.table = value  # every distinct caption, padded to max_length
        self._by_row = {self._key(value, i): t for i, t in enumerate(self.texts)}

    @property
    def cond_spec(self) -> SequenceCond:
        return self.spec

    def ids(self, captions: Sequence[str]) -> torch.Tensor:
        """Caption indices ``(n,)`` of ``captions`` (each one of the table's)."""
        return torch.tensor([self.index[c] for c in captions], dtype=torch.long)

    def rows(self, ids: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: v[ids] for k, v in self.table.items()}

    def _key(self, value: dict[str, torch.Tensor], i: int) -> bytes:
        return value[self.spec.key][i].numpy().tobytes()

    def captions_of(self, value: dict[str, torch.Tensor]) -> list[str]:
        """The caption of each row of a condition value; a prompt not in the table is decoded
        from its tokens (learned encoder) or named ``"prompt k"``."""
        value = {k: v.detach().cpu() for k, v in value.items() if k in (self.spec.key, "mask")}
        out = []
        for i in range(value["mask"].shape[0]):
            text = self._by_row.get(self._key(value, i))
            if text is None and self.spec.vocab_size is not None:
                ids = value["tokens"][i][value["mask"][i]].tolist()
                text = self.encoder.tokenizer.decode(ids)
            out.append(text if text is not None else f"prompt {i}")
        return out


def folder_captions(root: Path, paths: Sequence[Path]) -> list[str]:
    """The caption of every file: ``root/metadata.jsonl`` (``file_name``, ``text``) when
    present, else ``<file>.txt`` beside each file; one clear error naming a missing one."""
    meta = root / "metadata.jsonl"
    if meta.is_file():
        table = {}
        for n, line in enumerate(meta.read_text().splitlines(), 1):
            if line.strip():
                row = json.loads(line)
                if "file_name" not in row or "text" not in row:
                    raise ValueError(f"{meta}:{n} needs the keys file_name and text")
                table[str(row["file_name"])] = str(row["text"])
        missing = [p for p in paths if str(p.relative_to(root)) not in table]
        if missing:
            raise ValueError(f"{meta} has no caption for {missing[0].name} (and "
                             f"{len(missing) - 1} more); add a line per file")
        return [table[str(p.relative_to(root))] for p in paths]
    missing = [p for p in paths if not p.with_suffix(".txt").is_file()]
    if missing:
        raise ValueError(f"no caption for {missing[0].name}: data.text needs {root}/metadata."
                         f"jsonl (file_name, text) or a .txt beside each file")
    return [p.with_suffix(".txt").read_text().strip() for p in paths]
