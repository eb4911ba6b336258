"""Captioned two-digit canvases for text-to-image training.

A canvas is one channel, ``S`` high and ``2S`` wide: the left digit fills columns ``[0, S)``,
the right one ``[S, 2S)``; an empty side is background (-1.0). Captions bind digits to sides
through a small grammar of paraphrases (:data:`TEMPLATES`), with the digits written as
numerals ("3") or words ("three"), one choice per caption.

Two kinds of generalisation are held out of training:

* pairs: :data:`HELD_OUT_PAIRS`, the ten ``(left, right)`` with ``right == (left + 3) % 10``,
  never appear together in a training canvas or caption (each digit still appears on both
  sides with other partners, and alone);
* wordings: :data:`HELD_OUT_TEMPLATES` (one left-first, one right-first), used only for
  evaluation (``eval_prompts(...)["new_templates"]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "DIGIT_WORDS",
    "HELD_OUT_PAIRS",
    "HELD_OUT_TEMPLATES",
    "TEMPLATES",
    "TRAIN_TEMPLATES",
    "Template",
    "caption",
    "compose",
    "digit_images",
    "eval_prompts",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
HELD_OUT_PAIRS = frozenset((a, (a + 3) % 10) for a in range(10))
_PAIR_SETS = {
    "train": [(a, b) for a in range(10) for b in range(10) if (a, b) not in HELD_OUT_PAIRS],
    "held_out": sorted(HELD_OUT_PAIRS),
    "all": [(a, b) for a in range(10) for b in range(10)],
}


@dataclass(frozen=True)
class Template:
    """One wording: a phrase per side (``{d}``: the digit, ``{ad}``: "a"/"an" + the digit)
    joined by ``join``, the right-side phrase first when ``right_first``.

    A one-sided caption is that side's phrase alone.
    """

    name: str
    left: str
    right: str
    join: str
    right_first: bool

    def render(self, left: int | None, right: int | None, words: bool) -> str:
        """The caption for the digits (None: side left out), as words or as numerals."""
        parts = [(self.left, left), (self.right, right)]
        if self.right_first:
            parts.reverse()
        return self.join.join(p.format(d=_word(d, words), ad=_article(_word(d, words)))
                              for p, d in parts if d is not None)


def _word(d: int, words: bool) -> str:
    return DIGIT_WORDS[d] if words else str(d)


def _article(w: str) -> str:
    return ("an " if w in ("8", "eight") else "a ") + w


TEMPLATES = (
    Template("a_on", "{ad} on the left", "{ad} on the right", " and ", False),
    Template("on_rev", "{d} on the left", "{d} on the right", ", ", True),
    Template("colon", "left: {d}", "right: {d}", ", ", False),
    Template("colon_rev", "left: {d}", "right: {d}", "; ", True),
    Template("digit_is", "the left digit is {d}", "the right digit is {d}", " and ", False),
    Template("on_the_rev", "on the left {ad}", "on the right {ad}", ", ", True),
    # held out of training
    Template("at", "{d} at left", "{d} at right", ", ", False),
    Template("side_shows_rev", "the left side shows {ad}", "the right side shows {ad}", " while ",
             True),
)
_BY_NAME = {t.name: t for t in TEMPLATES}
HELD_OUT_TEMPLATES = (_BY_NAME["at"], _BY_NAME["side_shows_rev"])
TRAIN_TEMPLATES = tuple(t for t in TEMPLATES if t not in HELD_OUT_TEMPLATES)


def caption(left: int | None, right: int | None, rng: np.random.Generator,
            templates: tuple[Template, ...] = TRAIN_TEMPLATES) -> tuple[str, bool]:
    """A caption for ``(left, right)`` (None: that side empty; at least one side given) with a
    random template and random digit form; returns ``(text, right_first)``, where
    ``right_first`` is whether the first side named is the right one (True for a right-only
    caption)."""
    if left is None and right is None:
        raise ValueError("caption needs at least one side")
    t = templates[rng.integers(len(templates))]
    text = t.render(left, right, words=bool(rng.integers(2)))
    return text, left is None or (right is not None and t.right_first)


def _draw_labels(n: int, rng: np.random.Generator, pairs: str, one_side: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Labels ``left, right: (n,)`` (-1: empty side) from the pair set, some one-sided."""
    if pairs not in _PAIR_SETS:
        raise ValueError(f"pairs={pairs!r}; choose one of {', '.join(_PAIR_SETS)}")
    table = np.array(_PAIR_SETS[pairs])
    left, right = table[rng.integers(len(table), size=n)].T.copy()
    single = rng.random(n) < one_side
    drop_left = rng.random(n) < 0.5
    left[single & drop_left] = -1
    right[single & ~drop_left] = -1
    return left, right


def digit_images(x: torch.Tensor, y: torch.Tensor, labels: np.ndarray,
                 rng: np.random.Generator) -> torch.Tensor:
    """Random images of the given classes: ``x: (N, 1, S, S)``, ``labels: (n,)`` -> ``(n, 1, S,
    S)``, background where the label is -1."""
    order = np.argsort(y.numpy(), kind="stable")
    counts = np.bincount(y.numpy(), minlength=10)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    cls = np.clip(labels, 0, 9)
    if (counts[cls[labels >= 0]] == 0).any():
        raise ValueError("compose needs images of every class it draws")
    idx = order[starts[cls] + (rng.random(len(labels)) * counts[cls]).astype(int)]
    out = x[torch.from_numpy(idx)].float().clone()
    out[torch.from_numpy(labels < 0)] = -1.0
    return out


def compose(x: torch.Tensor, y: torch.Tensor, n: int, rng: np.random.Generator, *,
            pairs: str = "train", one_side: float = 0.15,
            templates: tuple[Template, ...] = TRAIN_TEMPLATES) -> dict:
    """``n`` captioned canvases from digit images ``x: (N, 1, S, S)`` in [-1, 1] with labels
    ``y: (N,)``.

    ``pairs``: "train" (no pair of :data:`HELD_OUT_PAIRS`), "held_out" (only those) or "all";
    with probability ``one_side`` a canvas holds one digit (random side). Returns
    ``{"x": (n, 1, S, 2S) float32, "left": (n,) long (-1: empty), "right": (n,) long,
    "captions": list[str], "right_first": (n,) bool}``.
    """
    left, right = _draw_labels(n, rng, pairs, one_side)
    y = torch.as_tensor(y).long()
    canvas = torch.cat([digit_images(x, y, left, rng), digit_images(x, y, right, rng)], dim=-1)
    return {"x": canvas, **_captioned(left, right, rng, templates)}


def _captioned(left: np.ndarray, right: np.ndarray, rng: np.random.Generator,
               templates: tuple[Template, ...]) -> dict:
    """Labels ``(n,)`` (-1: empty side) -> ``{"left", "right", "captions", "right_first"}``."""
    texts, first = [], []
    for a, b in zip(left.tolist(), right.tolist()):
        text, rf = caption(None if a < 0 else a, None if b < 0 else b, rng, templates)
        texts.append(text)
        first.append(rf)
    return {"left": torch.from_numpy(left).long(), "right": torch.from_numpy(right).long(),
            "captions": texts, "right_first": torch.tensor(first, dtype=torch.bool)}


def _balanced_pairs(pairs: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """``n`` pairs cycling through a random order of the pair set (as even as ``n`` allows)."""
    table = np.array(_PAIR_SETS[pairs])
    reps = n // len(table) + 1
    idx = np.concatenate([rng.permutation(len(table)) for _ in range(reps)])[:n]
    return tuple(table[idx].T.copy())


def _one_sided(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``n`` one-digit labels, alternating sides, digits cycling through 0-9."""
    digits = np.concatenate([rng.permutation(10) for _ in range(n // 10 + 1)])[:n]
    on_left = np.arange(n) % 2 == 0
    return np.where(on_left, digits, -1), np.where(on_left, -1, digits)


def eval_prompts(n_per_set: int, seed: int = 0) -> dict[str, dict]:
    """Fixed evaluation captions, ``n_per_set`` each, deterministic for ``seed``.

    Each set is ``{"captions": list[str], "left": (n,) long, "right": (n,) long (-1: empty),
    "right_first": (n,) bool}``:

    * ``held_in``: training pairs, training templates, both sides;
    * ``held_out``: :data:`HELD_OUT_PAIRS`, training templates;
    * ``right_first``: training pairs, right-first training templates only;
    * ``one_side``: one digit (half on each side), training templates;
    * ``new_templates``: training pairs, :data:`HELD_OUT_TEMPLATES` only.
    """
    right_first = tuple(t for t in TRAIN_TEMPLATES if t.right_first)
    specs = {"held_in": ("train", TRAIN_TEMPLATES), "held_out": ("held_out", TRAIN_TEMPLATES),
             "right_first": ("train", right_first), "one_side": (None, TRAIN_TEMPLATES),
             "new_templates": ("train", HELD_OUT_TEMPLATES)}
    out = {}
    for k, (name, (pairs, templates)) in enumerate(specs.items()):
        rng = np.random.default_rng([seed, k])
        labels = _one_sided(n_per_set, rng) if pairs is None else _balanced_pairs(
            pairs, n_per_set, rng)
        out[name] = _captioned(*labels, rng, templates)
    return out
