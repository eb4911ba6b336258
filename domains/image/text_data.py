"""Captions for image data: the two-digit canvases (``data.name=text_digits``).

Two scikit-learn digits side by side on an ``S x 2S`` canvas with captions from
:mod:`.captions` (some pairs and wordings held out). The training canvases are drawn once from
the digits' training split (``train_size``, default 20 000, a fixed seed); the held-out
reference is the evaluation sets of :func:`.captions.eval_prompts` drawn from the test split,
so the metrics report joint accuracy per set. A folder's captions and the caption table are
the core's (:mod:`omnidiff.text.captions`), shared with the other domains.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .captions import compose, digit_images, eval_prompts

__all__ = ["text_digits_arrays", "TEXT_DIGITS_SEED"]

TEXT_DIGITS_SEED = 0  # the canvases and the evaluation sets never move with data.seed
EVAL_PER_SET = 100


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
