"""Captioned two-digit canvases (omnidiff_domains.image.captions) and their judge
(omnidiff_domains.image.text_metrics)."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

from omnidiff_domains.image.captions import (
    HELD_OUT_PAIRS,
    HELD_OUT_TEMPLATES,
    TEMPLATES,
    TRAIN_TEMPLATES,
    caption,
    compose,
    eval_prompts,
)
from omnidiff_domains.image.data import digits_arrays
from omnidiff_domains.image.text_metrics import EMPTY_INK, caption_scores, judge_canvas

NAMES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
VALUE = {**{w: i for i, w in enumerate(NAMES)}, **{str(i): i for i in range(10)}}
DIGIT_RE = re.compile(r"\b(" + "|".join(VALUE) + r")\b")


def parse(text: str) -> tuple[int, int, bool]:
    """Read ``(left, right, right_first)`` from a caption (-1: side not named).

    Every clause (split at commas, semicolons, "and", "while") names one side and one digit.
    """
    found: dict[str, int] = {}
    order = []
    for clause in re.split(r"[,;]| and | while ", text):
        sides = re.findall(r"\b(left|right)\b", clause)
        digits = DIGIT_RE.findall(clause)
        assert len(sides) == 1 and len(digits) == 1, (text, clause)
        assert sides[0] not in found, text
        found[sides[0]] = VALUE[digits[0]]
        order.append(sides[0])
    return found.get("left", -1), found.get("right", -1), order[0] == "right"


@pytest.fixture(scope="module")
def digits():
    return digits_arrays()


def test_held_out_pairs_and_template_split():
    assert HELD_OUT_PAIRS == {(a, (a + 3) % 10) for a in range(10)} and len(HELD_OUT_PAIRS) == 10
    assert set(TRAIN_TEMPLATES).isdisjoint(HELD_OUT_TEMPLATES)
    assert set(TRAIN_TEMPLATES) | set(HELD_OUT_TEMPLATES) == set(TEMPLATES)
    assert sorted(t.right_first for t in HELD_OUT_TEMPLATES) == [False, True]
    assert {t.right_first for t in TRAIN_TEMPLATES} == {False, True}
    both = {t.render(3, 7, w) for t in TEMPLATES for w in (False, True)}
    one = {t.render(a, b, w) for t in TEMPLATES for w in (False, True)
           for a, b in ((3, None), (None, 7))}
    assert {"a 3 on the left and a 7 on the right", "seven on the right, three on the left",
            "left: 3, right: 7"} <= both
    assert {"a 3 on the left", "right: 7", "seven on the right"} <= one


@pytest.mark.parametrize("template", TEMPLATES, ids=lambda t: t.name)
def test_every_template_round_trips(template):
    cases = [(a, b) for a in range(10) for b in range(10)]
    cases += [(a, None) for a in range(10)] + [(None, b) for b in range(10)]
    texts = set()
    for a, b in cases:
        for words in (False, True):
            text = template.render(a, b, words)
            l_, r_, first = parse(text)
            assert (l_, r_) == (-1 if a is None else a, -1 if b is None else b), text
            if a is not None and b is not None:
                assert first == template.right_first, text
            assert bool(re.search(r"\d", text)) != words, text
            texts.add(text)
    assert len(texts) == 2 * len(cases)  # no two digit assignments read alike


def test_caption_samples_templates_and_forms():
    rng = np.random.default_rng(0)
    seen_forms, seen = set(), set()
    for _ in range(400):
        a, b = (int(v) for v in rng.integers(10, size=2))
        text, first = caption(a, b, rng, HELD_OUT_TEMPLATES)
        assert parse(text) == (a, b, first)
        seen_forms.add(bool(re.search(r"\d", text)))
        seen.add(next(t.name for t in TEMPLATES if text in (t.render(a, b, False),
                                                            t.render(a, b, True))))
    assert seen_forms == {False, True}
    assert seen == {t.name for t in HELD_OUT_TEMPLATES}
    assert caption(None, 4, rng)[1] and not caption(4, None, rng)[1]
    with pytest.raises(ValueError):
        caption(None, None, rng)


def _from_class(halves: torch.Tensor, labels: torch.Tensor, x, y) -> bool:
    """Each half (n, 1, S, S) is exactly one of the images of its label, or blank for -1."""
    flat = halves.flatten(1)
    if not bool((flat[labels < 0] == -1).all()):
        return False
    for c in range(10):
        rows, bank = flat[labels == c], x[y == c].flatten(1)
        if len(rows) and not bool((rows[:, None] == bank[None]).all(-1).any(1).all()):
            return False
    return True


def test_compose_train_never_shows_held_out_pairs(digits):
    x, y = digits["x_train"], digits["y_train"]
    c = compose(x, y, 3000, np.random.default_rng(1))
    s = x.shape[-1]
    assert c["x"].shape == (3000, 1, s, 2 * s) and c["x"].dtype == torch.float32
    assert c["x"].min() >= -1 and c["x"].max() <= 1
    assert c["left"].dtype == torch.long and c["right_first"].dtype == torch.bool
    pairs = set(zip(c["left"].tolist(), c["right"].tolist()))
    assert not pairs & HELD_OUT_PAIRS
    assert len({p for p in pairs if -1 not in p}) == 90  # every other pair is used
    for text, a, b, first in zip(c["captions"], c["left"].tolist(), c["right"].tolist(),
                                 c["right_first"].tolist()):
        assert parse(text) == (a, b, first)
        assert (a, b) not in HELD_OUT_PAIRS
    assert _from_class(c["x"][..., :s], c["left"], x, y)
    assert _from_class(c["x"][..., s:], c["right"], x, y)
    threes = c["x"][..., :s][c["left"] == 3].flatten(1)
    assert len(torch.unique(threes, dim=0)) > 20  # pixels vary within a class
    assert 0.1 < ((c["left"] < 0) | (c["right"] < 0)).float().mean() < 0.2


def test_compose_pair_sets(digits):
    x, y = digits["x_test"], digits["y_test"]
    held = compose(x, y, 300, np.random.default_rng(2), pairs="held_out", one_side=0.0)
    assert set(zip(held["left"].tolist(), held["right"].tolist())) == HELD_OUT_PAIRS
    assert all(parse(t)[:2] in HELD_OUT_PAIRS for t in held["captions"])
    every = compose(x, y, 3000, np.random.default_rng(3), pairs="all", one_side=0.0)
    assert len(set(zip(every["left"].tolist(), every["right"].tolist()))) == 100
    with pytest.raises(ValueError):
        compose(x, y, 4, np.random.default_rng(0), pairs="nope")


def test_one_sided_canvases_leave_the_other_half_blank(digits):
    x, y = digits["x_train"], digits["y_train"]
    s = x.shape[-1]
    c = compose(x, y, 400, np.random.default_rng(4), one_side=1.0)
    left_empty = c["left"] < 0
    assert bool((left_empty ^ (c["right"] < 0)).all()) and 50 < int(left_empty.sum()) < 350
    assert bool((c["x"][left_empty][..., :s] == -1).all())
    assert bool((c["x"][~left_empty][..., s:] == -1).all())
    assert bool((c["x"][left_empty][..., s:] > -1).flatten(1).any(1).all())
    for text, a, b in zip(c["captions"], c["left"].tolist(), c["right"].tolist()):
        assert parse(text)[:2] == (a, b)
        assert ("left" in text) != (a < 0) and ("right" in text) != (b < 0)
    assert c["right_first"].tolist() == left_empty.tolist()


def test_judge_reads_real_canvases(digits):
    c = compose(digits["x_test"], digits["y_test"], 600, np.random.default_rng(5), pairs="all")
    s = c["x"].shape[-2]
    real = caption_scores(c["x"], c["left"], c["right"])
    assert real["joint_acc"] > 0.9 and real["left_acc"] > 0.9 and real["right_acc"] > 0.9
    assert real["empty_ok"] > 0.95
    swapped = torch.cat([c["x"][..., s:], c["x"][..., :s]], dim=-1)
    assert caption_scores(swapped, c["left"], c["right"])["joint_acc"] < 0.3
    noise = torch.rand(c["x"].shape, generator=torch.Generator().manual_seed(0)) * 2 - 1
    scores = caption_scores(noise, c["left"], c["right"])
    assert scores["joint_acc"] < 0.1 and scores["empty_ok"] == 0.0
    blank = judge_canvas(torch.full((3, 1, s, 2 * s), -1.0))
    assert blank["left"].tolist() == [-1] * 3 and blank["right"].tolist() == [-1] * 3
    faint = c["x"][c["left"] >= 0][:50]
    assert bool((judge_canvas(faint)["ink"][:, 0] > 2 * EMPTY_INK).all())
    assert np.isnan(caption_scores(c["x"][:2], torch.tensor([1, 2]),
                                   torch.tensor([3, 4]))["empty_ok"])


def test_eval_prompts_are_fixed_and_have_their_properties():
    a, b, other = eval_prompts(40), eval_prompts(40), eval_prompts(40, seed=1)
    assert set(a) == {"held_in", "held_out", "right_first", "one_side", "new_templates"}
    for name in a:
        assert a[name]["captions"] == b[name]["captions"]
        assert torch.equal(a[name]["left"], b[name]["left"])
        assert len(a[name]["captions"]) == 40 and a[name]["right"].shape == (40,)
        for text, l_, r_, first in zip(a[name]["captions"], a[name]["left"].tolist(),
                                       a[name]["right"].tolist(), a[name]["right_first"].tolist()):
            assert parse(text) == (l_, r_, first), (name, text)
    assert any(a[k]["captions"] != other[k]["captions"] for k in a)

    def pairs(name):
        return list(zip(a[name]["left"].tolist(), a[name]["right"].tolist()))

    for name in ("held_in", "right_first", "new_templates"):
        assert all(-1 not in p and p not in HELD_OUT_PAIRS for p in pairs(name))
    assert set(pairs("held_out")) == HELD_OUT_PAIRS
    assert all(a["right_first"]["right_first"].tolist())
    assert set(a["held_in"]["right_first"].tolist()) == {False, True}
    assert all((x < 0) != (y < 0) for x, y in pairs("one_side"))
    held_out_texts = {t.render(x, y, w) for t in HELD_OUT_TEMPLATES for x in range(10)
                      for y in range(10) for w in (False, True)}
    assert set(a["new_templates"]["captions"]) <= held_out_texts
    for name in ("held_in", "held_out", "right_first", "one_side"):
        assert not set(a[name]["captions"]) & held_out_texts
