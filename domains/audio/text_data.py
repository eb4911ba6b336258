"""Captioned audio for text-to-audio (``data.cond=text``).

* ``text_tones``: tones with a set pitch, loudness, decay and timbre (:func:`.tones.
  described_tones`), captioned by :mod:`.captions`; held-out combinations never appear in
  training. The held-out reference is the evaluation prompts of :func:`.captions.eval_prompts`
  with tones drawn from a separate stream, so the metrics report each set apart.
* a folder of recordings with ``metadata.jsonl`` or a ``.txt`` beside each file
  (:func:`omnidiff.text.captions.folder_captions`).

:class:`CaptionedClips` serves clips with their prompts' rows from a
:class:`~omnidiff.text.captions.CaptionTable`, so each distinct caption is encoded once.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from omnidiff.text.captions import CaptionTable

from .captions import ToneAttrs, caption, draw_attrs, eval_prompts, omit
from .tones import described_tones

__all__ = ["CaptionedClips", "text_tones_arrays", "TEXT_TONES_SEED", "EVAL_PER_SET"]

TEXT_TONES_SEED = 0  # the tones, captions and evaluation sets never move with data.seed
EVAL_PER_SET = 96


def _tones(attrs: list[ToneAttrs], sample_rate: int, samples: int, g: torch.Generator,
           tone_cfg: dict[str, Any]) -> torch.Tensor:
    """Tones ``(n, 1, samples)`` of fully set attributes."""
    p, lo, lg, br = (torch.tensor(v) for v in zip(*(a.as_tuple() for a in attrs)))
    return described_tones(p, lo, lg, br, sample_rate, samples, g,
                           harmonics=tone_cfg["harmonics"],
                           detune_cents=tone_cfg["detune_cents"])


def text_tones_arrays(n_train: int, sample_rate: int, samples: int, tone_cfg: dict[str, Any]
                      ) -> dict[str, Any]:
    """Training tones with captions (some attributes left out) and the held-out reference:
    the evaluation prompts with their tones. ``truth`` maps each caption to ``(attributes,
    set name)`` ("train" for a training caption)."""
    rng = np.random.default_rng(TEXT_TONES_SEED)
    g = torch.Generator().manual_seed(TEXT_TONES_SEED)
    attrs = draw_attrs(n_train, rng, "train")
    named = [omit(a, rng) for a in attrs]
    captions = [caption(a, rng) for a in named]
    truth = {c: (a, "train") for c, a in zip(captions, named)}
    x_train = _tones(attrs, sample_rate, samples, g, tone_cfg)
    test_caps, test_attrs, sets = [], [], []
    for name, (caps, at) in eval_prompts(EVAL_PER_SET, seed=TEXT_TONES_SEED).items():
        test_caps += caps
        test_attrs += at
        sets += [name] * len(caps)
    truth.update({c: (a, s) for c, a, s in zip(test_caps, test_attrs, sets)})
    order = torch.randperm(len(test_caps), generator=torch.Generator().manual_seed(1)).tolist()
    x_test = _tones([test_attrs[i] for i in order], sample_rate, samples, g, tone_cfg)
    return {"x_train": x_train, "captions_train": captions, "x_test": x_test,
            "captions_test": [test_caps[i] for i in order], "truth": truth}


class CaptionedClips(Dataset):
    """Clips from ``read(i) -> (1, T)`` (or an in-memory ``(N, 1, T)``) with their captions'
    condition rows: items ``{"x": (1, T), "cond": {"text": ...}}``; ``fit(wav)`` cuts or pads
    a clip to the data's length."""

    def __init__(self, read: Any, ids: torch.Tensor, table: CaptionTable, fit: Any):
        self.read, self.ids, self.table, self.fit = read, ids, table, fit

    def __len__(self) -> int:
        return len(self.ids)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        x = torch.stack([self.fit(self.read[i] if torch.is_tensor(self.read) else self.read(i))
                         for i in idx])  # (B, 1, T)
        return {"x": x, "cond": {"text": self.table.rows(self.ids[idx])}}

    def __getitem__(self, i: int) -> dict[str, Any]:
        batch = self.__getitems__([i])
        return {"x": batch["x"][0], "cond": {"text": {k: v[0] for k, v in
                                                      batch["cond"]["text"].items()}}}
