"""Text-to-image on the two-digit canvases: does the model do what the prompt says?

Trains ``image_text_digits`` with its defaults (or takes a trained ``model.pt``), then samples
every evaluation set of :func:`omnidiff_domains.image.captions.eval_prompts` at 20 NFE
(dpmpp_2m) for several guidance scales, unguided first, and judges each canvas with the digits
classifier on each half (:mod:`omnidiff_domains.image.text_metrics`):

* ``held_in``: pairs and wordings seen in training; ``held_out``: the ten pairs never seen
  together (right = left + 3 mod 10); ``right_first``: captions naming the right side first;
  ``new_templates``: two wordings never seen; ``one_side``: one digit named, the other half
  must stay empty (``empty_ok``).

Joint accuracy is "both halves right" (chance 1%). Also printed: a few prompts with what the
judge read, and the sampling time per set. A labelled grid of prompts goes to ``--out``.

Usage::

    python benchmarks/text_digits.py [--checkpoint runs/.../model.pt] [--n 100]
        [--guidance 0 1.5 3 5] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _recipes import train_recipe

import omnidiff
from omnidiff_domains.image.captions import eval_prompts
from omnidiff_domains.image.text_metrics import caption_scores, judge_canvas

SETS = ("held_in", "held_out", "right_first", "new_templates", "one_side")
SHOWN = ["a 3 on the left and a 7 on the right", "seven on the right, three on the left",
         "left: 3, right: 7", "left: 0, right: 3", "right: 4; left: 1", "a 5 on the left",
         "nine on the right", "the right side shows a 2 while the left side shows an 8"]


def _row(pipe, prompts: dict, guidance: float | None) -> dict[str, float]:
    out = {}
    for name in SETS:
        s = prompts[name]
        t0 = time.perf_counter()
        x = pipe.generate(prompt=s["captions"], n=1, guidance=guidance, steps=20, seed=0,
                          sampler="dpmpp_2m")
        out[f"{name}_s"] = time.perf_counter() - t0
        scores = caption_scores(x, s["left"], s["right"])
        out[name] = scores["empty_ok"] if name == "one_side" else scores["joint_acc"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--n", type=int, default=100, help="prompts per evaluation set")
    ap.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.5, 3.0, 5.0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_text_digits"))
    args = ap.parse_args()
    ckpt = args.checkpoint or train_recipe("image_text_digits", args.out / "run")
    pipe = omnidiff.load(ckpt, device="cpu")
    prompts = eval_prompts(args.n, seed=1)  # not the training run's evaluation captions
    print(f"\n{args.n} prompts per set, dpmpp_2m 20 NFE; joint accuracy (one_side: empty_ok)")
    print(f"{'guidance':>9} " + " ".join(f"{s:>13}" for s in SETS) + "  seconds/set")
    for g in args.guidance:
        row = _row(pipe, prompts, None if g == 0 else g)
        secs = sum(row[f"{s}_s"] for s in SETS) / len(SETS)
        label = "none" if g == 0 else f"{g:g}"
        print(f"{label:>9} " + " ".join(f"{row[s]:>13.3f}" for s in SETS) + f"  {secs:10.1f}")
    g = max(args.guidance)
    x = pipe.generate(prompt=SHOWN, n=8, guidance=g, steps=20, seed=0)
    pipe.save(x, args.out, prefix="prompts")
    read = judge_canvas(x[::8])
    print(f"\nguidance {g:g}, the first of 8 samples per prompt (judge: left, right; -1 empty):")
    for text, a, b in zip(SHOWN, read["left"].tolist(), read["right"].tolist()):
        print(f"  {text!r:70} -> {a:2d}, {b:2d}")
    print(f"grid: {args.out / 'prompts.png'}")


if __name__ == "__main__":
    torch.set_num_threads(2)
    main()
