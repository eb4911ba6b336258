"""Captioned tones for text-to-audio: what a listener hears, said in varied word orders.

A tone is four attributes (:class:`ToneAttrs`):

* pitch: one of the 12 semitones C4..B4 (index 0..11), named "C4", "C#4" or "C sharp 4";
* loudness: loud (peak at 0.8 of full scale) or soft (peak 0.2);
* decay: short (the envelope falls below 10% of its peak within 0.08 s) or long (not before
  0.2 s);
* timbre: bright (harmonic k at amplitude 1/k) or dark (1/k^3).

Captions put the attributes in one of several orders and phrasings ("a loud C4 with a short
decay, dark", "soft, bright F#4, long decay", "F sharp 4, dark and loud, long decay"); in
training each attribute but the pitch is left out of a caption now and then
(:data:`P_OMIT`), so a caption says only what it names. The combinations whose
``(pitch + [loud] + 2 [long]) mod 5 == 0`` (:func:`held_out`) never appear in training; the
evaluation sets (:func:`eval_prompts`) ask for held-in and held-out combinations, every
attribute named.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .tones import NAMES

__all__ = ["ToneAttrs", "held_out", "draw_attrs", "omit", "caption", "eval_prompts",
           "pitch_name", "P_OMIT", "SHAPES"]

P_OMIT = 0.1  # training captions: each of loudness, decay and timbre left out this often


@dataclass(frozen=True)
class ToneAttrs:
    """``pitch`` 0..11 (C4..B4); ``loud``, ``long``, ``bright``: 1 / 0 (-1: not named)."""

    pitch: int
    loud: int
    long: int
    bright: int

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.pitch, self.loud, self.long, self.bright)


def held_out(pitch: int, loud: int, long: int) -> bool:
    """Whether a (pitch, loudness, decay) combination is kept out of training."""
    return (pitch + loud + 2 * long) % 5 == 0


def pitch_name(k: int, style: int) -> str:
    """Semitone ``k`` as "C#4" (style 0) or "C sharp 4" (style 1; naturals: "C4" either way)."""
    name = NAMES[k]
    if style == 1 and "#" in name:
        return name[0] + " sharp " + name[2:]
    return name


def _article(word: str) -> str:
    return "an" if word[0] in "AEF" else "a"


def _words(a: ToneAttrs) -> dict[str, str | None]:
    pick = lambda v, yes, no: None if v < 0 else (yes if v else no)  # noqa: E731
    return {"loud": pick(a.loud, "loud", "soft"), "decay": pick(a.long, "long", "short"),
            "timbre": pick(a.bright, "bright", "dark")}


def _adjectives_first(adj: list[str], p: str, d: str | None) -> str:
    """"a loud dark C4 with a short decay"."""
    head = " ".join([_article((adj or [p])[0]), *adj, p])
    return head + (f" with a {d} decay" if d else "")


def _listed(adj: list[str], p: str, d: str | None) -> str:
    """"soft, bright F#4, long decay"."""
    parts = [", ".join([*adj[:-1], adj[-1] + " " + p]) if adj else p]
    return ", ".join(parts + ([f"{d} decay"] if d else []))


def _pitch_first(adj: list[str], p: str, d: str | None) -> str:
    """"F sharp 4, dark and loud, long decay"."""
    parts = [p] + ([" and ".join(adj)] if adj else []) + ([f"{d} decay"] if d else [])
    return ", ".join(parts)


def _decay_first(adj: list[str], p: str, d: str | None) -> str:
    """"short decay, loud and dark: E4"."""
    head = ", ".join(([f"{d} decay"] if d else []) + ([" and ".join(adj)] if adj else []))
    return f"{head}: {p}" if head else p


def _with_decay(adj: list[str], p: str, d: str | None) -> str:
    """"G4 with a long decay, soft and bright"."""
    return p + (f" with a {d} decay" if d else "") + (", " + " and ".join(adj) if adj else "")


SHAPES = (_adjectives_first, _listed, _pitch_first, _decay_first, _with_decay)


def caption(a: ToneAttrs, rng: np.random.Generator) -> str:
    """A caption naming the attributes of ``a`` that are set (>= 0), in a random shape, order
    of adjectives and pitch spelling."""
    w = _words(a)
    adj = [v for v in (w["loud"], w["timbre"]) if v is not None]
    if len(adj) == 2 and rng.random() < 0.5:
        adj.reverse()
    p = pitch_name(a.pitch, int(rng.integers(2)))
    return SHAPES[int(rng.integers(len(SHAPES)))](adj, p, w["decay"])


def draw_attrs(n: int, rng: np.random.Generator, split: str = "train") -> list[ToneAttrs]:
    """``n`` random attribute sets: ``train`` (no held-out combination) or ``held_out``."""
    out: list[ToneAttrs] = []
    while len(out) < n:
        p, lo, lg, br = (int(v) for v in rng.integers(0, [12, 2, 2, 2]))
        if held_out(p, lo, lg) == (split == "held_out"):
            out.append(ToneAttrs(p, lo, lg, br))
    return out


def omit(a: ToneAttrs, rng: np.random.Generator, p: float = P_OMIT) -> ToneAttrs:
    """``a`` with each of loudness, decay and timbre left out (-1) with probability ``p``."""
    keep = rng.random(3) >= p
    return ToneAttrs(a.pitch, *(v if k else -1 for v, k in zip((a.loud, a.long, a.bright),
                                                               keep)))


def _all_combos(split: str) -> list[ToneAttrs]:
    return [ToneAttrs(p, lo, lg, br) for p in range(12) for lo in (0, 1) for lg in (0, 1)
            for br in (0, 1) if held_out(p, lo, lg) == (split == "held_out")]


def eval_prompts(n_per_set: int, seed: int = 0) -> dict[str, tuple[list[str], list[ToneAttrs]]]:
    """Fixed evaluation prompts, ``n_per_set`` each, cycling evenly through the combinations of
    ``held_in`` (training) and ``held_out`` (never trained on); every attribute named."""
    out = {}
    for k, name in enumerate(("held_in", "held_out")):
        rng = np.random.default_rng([seed, k])
        combos = _all_combos("train" if name == "held_in" else "held_out")
        order = np.concatenate([rng.permutation(len(combos))
                                for _ in range(n_per_set // len(combos) + 1)])[:n_per_set]
        attrs = [combos[i] for i in order]
        out[name] = ([caption(a, rng) for a in attrs], attrs)
    return out
