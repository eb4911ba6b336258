"""Captioned moving digits (``data.name=text_moving_digits``), generated offline.

Each clip holds one digit moving in a straight line at a constant integer speed (pixels per
frame) in the direction its caption names (:mod:`.captions`), with no bounce: the start is drawn
so the whole path stays on the canvas, and the other coordinate is uniform. The speed is the
fastest up to ``max_speed`` whose path fits, ``(frames - 1) * speed <= size - digit_size``
(8 frames on a 16x16 canvas with a 9 px digit: 1 px per frame, all 7 px of room).

The training clips (digits of the training split, pairs of ``PAIR_SETS["train"]``) never show a
held-out pair; the held-out reference is the evaluation sets of :func:`.captions.eval_prompts`
drawn with the digits' test split. ``truth`` maps each caption to ``(digit, direction, set)``
("train" for captions seen only in training).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from .captions import captioned_pairs, digit_caption, direction_caption, eval_prompts

__all__ = ["TEXT_SEED", "EVAL_PER_SET", "clip_speed", "straight_paths", "draw_clips",
           "text_clips_arrays"]

TEXT_SEED = 0  # the clips and the evaluation sets never move with data.seed
EVAL_PER_SET = 64
# unit steps (row, col) of the directions left, right, up, down
STEPS = torch.tensor([[0, -1], [0, 1], [-1, 0], [1, 0]])


def clip_speed(frames: int, size: int, digit_size: int, max_speed: int) -> int:
    """The fastest speed up to ``max_speed`` whose straight path fits the canvas; one clear
    error when not even 1 px per frame does."""
    room = size - digit_size
    speed = min(int(max_speed), room // max(frames - 1, 1))
    if speed < 1:
        raise ValueError(f"a digit of {digit_size} px cannot cross a {size} px canvas in "
                         f"{frames} frames without bouncing: make data.size bigger or "
                         f"data.digit_size / data.frames smaller")
    return speed


def straight_paths(direction: torch.Tensor, frames: int, room: int, speed: int,
                   rng: np.random.Generator) -> torch.Tensor:
    """Top-left corners ``(n, frames, 2)`` (row, col) in ``[0, room]`` moving ``speed`` px per
    frame in each ``direction: (n,)``."""
    n, travel = len(direction), (frames - 1) * speed
    step = STEPS[direction] * speed  # (n, 2)
    start = torch.from_numpy(rng.integers(0, room + 1, size=(n, 2)))  # (n, 2)
    lead = torch.from_numpy(rng.integers(0, room - travel + 1, size=(n, 2)))  # (n, 2)
    start = torch.where(step > 0, lead, torch.where(step < 0, lead + travel, start))
    return start[:, None] + step[:, None] * torch.arange(frames)[None, :, None]  # (n, T, 2)


def draw_clips(digits: torch.Tensor, paths: torch.Tensor, size: int) -> torch.Tensor:
    """Digits ``(n, 1, d, d)`` in [-1, 1] at corners ``paths: (n, T, 2)`` on a blank canvas
    -> clips ``(n, T, 1, size, size)``."""
    n, t, d = paths.shape[0], paths.shape[1], digits.shape[-1]
    clips = torch.full((n, t, 1, size, size), -1.0)
    for i in range(n):
        for f in range(t):
            r, c = (int(v) for v in paths[i, f])
            clips[i, f, 0, r:r + d, c:c + d] = digits[i, 0]
    return clips


def _pick(x: torch.Tensor, y: torch.Tensor, digit: torch.Tensor, rng: np.random.Generator
          ) -> torch.Tensor:
    """A random image ``(n, 1, d, d)`` of each class in ``digit: (n,)``."""
    rows = [np.flatnonzero(y.numpy() == int(k)) for k in digit]
    return x[torch.tensor([r[rng.integers(len(r))] for r in rows])].float()


def _clips(x: torch.Tensor, y: torch.Tensor, pairs: dict, rng: np.random.Generator,
           frames: int, size: int, speed: int) -> torch.Tensor:
    room = size - x.shape[-1]
    paths = straight_paths(pairs["direction"], frames, room, speed, rng)
    return draw_clips(_pick(x, y, pairs["digit"], rng), paths, size)


def _part_captions(train: dict, shares: dict[str, float], rng: np.random.Generator
                   ) -> list[bool]:
    """Replace random shares of ``train``'s captions by captions naming one part alone
    (``shares``: ``digit`` and ``direction``), in place; which captions stay full (all of them,
    drawing nothing, when no share is set)."""
    full = [True] * len(train["captions"])
    digit, direction = (float(shares.get(k, 0.0)) for k in ("digit", "direction"))
    if digit + direction <= 0:
        return full
    for i in range(len(full)):
        u = rng.random()
        if u < digit:
            train["captions"][i] = digit_caption(int(train["digit"][i]), rng)
        elif u < digit + direction:
            train["captions"][i] = direction_caption(int(train["direction"][i]), rng)
        full[i] = u >= digit + direction
    return full


def text_clips_arrays(n_train: int, digits: dict[str, torch.Tensor], *, frames: int, size: int,
                      max_speed: int, part_captions: dict[str, float] | None = None
                      ) -> dict[str, Any]:
    """Training clips ``(n_train, T, 1, S, S)`` with captions, and the held-out reference (the
    evaluation sets' captions, clips of the test split, shuffled together); ``truth`` maps each
    full caption to ``(digit, direction, set)``. Shares ``part_captions`` (``{"digit": s,
    "direction": s}``) of the training captions name the digit or the direction alone
    (:func:`.captions.digit_caption`, :func:`.captions.direction_caption`; not in ``truth``)."""
    digit_size = int(digits["x_train"].shape[-1])
    speed = clip_speed(frames, size, digit_size, max_speed)
    rng = np.random.default_rng(TEXT_SEED)
    train = captioned_pairs(n_train, rng)
    full = _part_captions(train, part_captions or {}, rng)
    x_train = _clips(digits["x_train"], digits["y_train"], train, rng, frames, size, speed)
    truth = {c: (int(a), int(b), "train")
             for c, a, b, f in zip(train["captions"], train["digit"], train["direction"], full)
             if f}
    parts, captions = [], []
    for name, s in eval_prompts(EVAL_PER_SET, seed=TEXT_SEED).items():
        parts.append(_clips(digits["x_test"], digits["y_test"], s, rng, frames, size, speed))
        captions += s["captions"]
        truth.update({c: (int(a), int(b), name)
                      for c, a, b in zip(s["captions"], s["digit"], s["direction"])})
    order = torch.randperm(len(captions), generator=torch.Generator().manual_seed(TEXT_SEED))
    return {"x_train": x_train, "captions_train": train["captions"],
            "x_test": torch.cat(parts)[order],
            "captions_test": [captions[i] for i in order.tolist()],
            "truth": truth, "y_train": None, "y_test": None, "classes": [],
            "speed": speed}
