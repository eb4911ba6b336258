"""Captions of moving digits: which digit moves, and which way.

A captioned clip shows one digit moving in a straight line, left, right, up or down (direction
index 0, 1, 2, 3: :data:`DIRECTIONS`). Its caption names the digit (a numeral, "7", or a word,
"seven") and the direction through a small grammar of paraphrases: a template
(:data:`TEMPLATES`, "{ad} moving {where}", "the digit {d} drifts {where}", ...) and one of a
few phrases per direction (:data:`PHRASES`, "left", "to the left", "leftwards"), e.g. "a 7
moving left", "the digit seven drifts up", "3 going downwards", "an eight slides to the right".

:data:`HELD_OUT_PAIRS`, the ten ``(digit, direction)`` with ``digit % 4 == direction``, never
appear in training (every digit still moves in its three other directions, and every direction
carries seven or eight digits); :func:`eval_prompts` gives fixed evaluation sets of training
pairs (``held_in``) and of held-out pairs (``held_out``). :func:`digit_caption` and
:func:`direction_caption` name the digit or the direction alone (shares of the training
captions with ``data.part_captions``); :func:`digit_part` and :func:`direction_part` find
those words in a full caption: the parts that composed guidance pushes towards.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "DIGIT_WORDS",
    "DIRECTIONS",
    "HELD_OUT_PAIRS",
    "PAIR_SETS",
    "PHRASES",
    "TEMPLATES",
    "DIRECTION_FORMS",
    "PART_FORMS",
    "caption",
    "captioned_pairs",
    "digit_caption",
    "digit_part",
    "direction_caption",
    "direction_part",
    "eval_prompts",
]

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
DIRECTIONS = ("left", "right", "up", "down")
# the wordings of each direction, in order of DIRECTIONS
PHRASES = (("left", "to the left", "leftwards"), ("right", "to the right", "rightwards"),
           ("up", "upwards", "towards the top"), ("down", "downwards", "towards the bottom"))
# {ad}: "a"/"an" + the digit, {d}: the digit, {where}: a phrase of the direction
TEMPLATES = ("{ad} moving {where}", "the digit {d} drifts {where}", "{d} going {where}",
             "{ad} slides {where}", "the number {d} travels {where}", "{ad} heading {where}")
# captions that name the digit alone, a part of a full caption ("a 7", "the digit seven")
PART_FORMS = ("{ad}", "the digit {d}", "the number {d}", "{d}")
# captions that name the direction alone ("moving left", "something drifts up")
DIRECTION_FORMS = ("moving {where}", "something drifts {where}", "going {where}")
HELD_OUT_PAIRS = frozenset((d, d % 4) for d in range(10))
PAIR_SETS = {
    "train": [(d, k) for d in range(10) for k in range(4) if (d, k) not in HELD_OUT_PAIRS],
    "held_out": sorted(HELD_OUT_PAIRS),
}


def _article(word: str) -> str:
    return ("an " if word in ("8", "eight") else "a ") + word


def caption(digit: int, direction: int, rng: np.random.Generator) -> str:
    """A caption of ``digit`` moving in ``direction`` (an index of :data:`DIRECTIONS`): a random
    template, phrase and digit form."""
    word = DIGIT_WORDS[digit] if rng.integers(2) else str(digit)
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    phrases = PHRASES[direction]
    where = phrases[rng.integers(len(phrases))]
    return template.format(d=word, ad=_article(word), where=where)


def digit_caption(digit: int, rng: np.random.Generator) -> str:
    """A caption naming ``digit`` alone, without a direction: a random form of
    :data:`PART_FORMS` and of the digit ("a 7", "the number seven")."""
    word = DIGIT_WORDS[digit] if rng.integers(2) else str(digit)
    return PART_FORMS[rng.integers(len(PART_FORMS))].format(d=word, ad=_article(word))


def digit_part(text: str, digit: int) -> str:
    """The words of caption ``text`` that name its ``digit``, in the caption's own form ("a 7
    moving left" -> "a 7", "the digit seven drifts up" -> "a seven")."""
    word = DIGIT_WORDS[digit] if DIGIT_WORDS[digit] in text.split() else str(digit)
    return _article(word)


def direction_caption(direction: int, rng: np.random.Generator) -> str:
    """A caption naming ``direction`` alone, without a digit: a random form of
    :data:`DIRECTION_FORMS` and phrase of the direction ("moving left", "going upwards")."""
    phrases = PHRASES[direction]
    where = phrases[rng.integers(len(phrases))]
    return DIRECTION_FORMS[rng.integers(len(DIRECTION_FORMS))].format(where=where)


def direction_part(text: str, direction: int) -> str:
    """The words of caption ``text`` that name its ``direction``, in the caption's own phrase
    ("a 7 moving to the left" -> "moving to the left")."""
    phrase = max((p for p in PHRASES[direction] if text.endswith(" " + p)), key=len,
                 default=DIRECTIONS[direction])
    return f"moving {phrase}"


def captioned_pairs(n: int, rng: np.random.Generator, pairs: str = "train", balanced: bool = False
                    ) -> dict:
    """``n`` pairs of a pair set (``train`` or ``held_out``; uniform draws, or cycling through
    random orders of the set when ``balanced``) with a caption each: ``{"digit": (n,) long,
    "direction": (n,) long, "captions": list[str]}``."""
    if pairs not in PAIR_SETS:
        raise ValueError(f"pairs={pairs!r}; choose one of {', '.join(PAIR_SETS)}")
    table = np.array(PAIR_SETS[pairs])  # (P, 2)
    if balanced:
        idx = np.concatenate([rng.permutation(len(table)) for _ in range(n // len(table) + 1)])
    else:
        idx = rng.integers(len(table), size=n)
    digit, direction = table[idx[:n]].T
    texts = [caption(int(d), int(k), rng) for d, k in zip(digit, direction)]
    return {"digit": torch.from_numpy(digit.copy()).long(),
            "direction": torch.from_numpy(direction.copy()).long(), "captions": texts}


def eval_prompts(n_per_set: int, seed: int = 0) -> dict[str, dict]:
    """Fixed evaluation sets of ``n_per_set`` captions each, deterministic for ``seed``:
    ``held_in`` (training pairs) and ``held_out`` (:data:`HELD_OUT_PAIRS`), each as
    :func:`captioned_pairs` returns it, the pairs as even as ``n_per_set`` allows."""
    return {name: captioned_pairs(n_per_set, np.random.default_rng([seed, k]), pairs,
                                  balanced=True)
            for k, (name, pairs) in enumerate((("held_in", "train"), ("held_out", "held_out")))}
