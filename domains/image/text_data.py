"""Captions for image data: the two-digit canvases (``data.name=text_digits``) and captions
of a folder of images in the conventions users already have.

* ``text_digits``: two scikit-learn digits side by side on an ``S x 2S`` canvas with captions
  from :mod:`.captions` (some pairs and wordings held out). The training canvases are drawn
  once from the digits' training split (``train_size``, default 20 000, a fixed seed); the
  held-out reference is the evaluation sets of :func:`.captions.eval_prompts` drawn from the
  test split, so the metrics report joint accuracy per set.
* folders: Hugging Face's ``metadata.jsonl`` (``{"file_name": ..., "text": ...}`` per line,
  as diffusers' text-to-image training reads it) or a ``.txt`` beside each image.

:class:`CaptionTable` encodes each distinct caption once (a frozen encoder runs once per
caption) and gives the condition rows of any caption index, and captions back from
conditions (for grid labels and the judge).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from omnidiff.core.conditions import SequenceCond
from omnidiff.text import text_condition

from .captions import compose, digit_images, eval_prompts

__all__ = ["CaptionTable", "text_digits_arrays", "folder_captions", "TEXT_DIGITS_SEED"]

TEXT_DIGITS_SEED = 0  # the canvases and the evaluation sets never move with data.seed
EVAL_PER_SET = 100


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


def text_digits_arrays(n_train: int, digits: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Training canvases ``(n_train, 1, S, 2S)`` with captions, and the held-out reference:
    the evaluation sets' captions with canvases drawn from the digits' test split; ``truth``
    maps each caption to ``(left, right, set name)`` (-1: empty side; "train" for training)."""
    rng = np.random.default_rng(TEXT_DIGITS_SEED)
    train = compose(digits["x_train"], digits["y_train"], n_train, rng)
    truth = {c: (int(a), int(b), "train") for c, a, b in
             zip(train["captions"], train["left"], train["right"])}
    parts, captions = [], []
    for name, s in eval_prompts(EVAL_PER_SET, seed=TEXT_DIGITS_SEED).items():
        left = digit_images(digits["x_test"], digits["y_test"], s["left"].numpy(), rng)
        right = digit_images(digits["x_test"], digits["y_test"], s["right"].numpy(), rng)
        parts.append(torch.cat([left, right], dim=-1))  # (n, 1, S, 2S)
        captions += s["captions"]
        truth.update({c: (int(a), int(b), name) for c, a, b in
                      zip(s["captions"], s["left"], s["right"])})
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(0))
    x_test = torch.cat(parts)[order]
    return {"x_train": train["x"], "captions_train": train["captions"],
            "x_test": x_test, "captions_test": [captions[i] for i in order.tolist()],
            "truth": truth, "y_train": None, "y_test": None, "classes": []}


def folder_captions(root: Path, paths: Sequence[Path]) -> list[str]:
    """The caption of every image: ``root/metadata.jsonl`` (``file_name``, ``text``) when
    present, else ``<image>.txt`` beside each image; one clear error naming a missing one."""
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
                             f"{len(missing) - 1} more); add a line per image")
        return [table[str(p.relative_to(root))] for p in paths]
    missing = [p for p in paths if not p.with_suffix(".txt").is_file()]
    if missing:
        raise ValueError(f"no caption for {missing[0].name}: data.text needs {root}/metadata."
                         f"jsonl (file_name, text) or a .txt beside each image")
    return [p.with_suffix(".txt").read_text().strip() for p in paths]
