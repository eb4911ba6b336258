"""Text-to-audio on the captioned tones: does each tone sound as its prompt says?

Trains ``audio_text_tones`` with its defaults (or takes a trained ``model.pt``), then samples
the held-in and held-out evaluation prompts of :func:`omnidiff_domains.audio.captions.
eval_prompts` (new phrasings: another seed than the training run's evaluation) at 20 NFE
(dpmpp_2m) for several guidance scales, unguided first, and judges each tone
(:mod:`omnidiff_domains.audio.text_metrics`): pitch within a quarter tone, loudness (RMS of
the loudest 10 ms), decay (time to 10% of the peak), timbre (spectral tilt), and all four
together. Held-out prompts ask for (pitch, loudness, decay) combinations never trained on.

Usage::

    python benchmarks/text_tones.py [--checkpoint runs/.../model.pt] [--n 96]
        [--guidance 0 1 2 3] [--out DIR]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from _recipes import train_recipe

import omnidiff
from omnidiff_domains.audio.captions import eval_prompts
from omnidiff_domains.audio.text_metrics import caption_scores

SETS = ("held_in", "held_out")
ATTRS = ("pitch", "loud", "decay", "timbre", "all")
SHOWN = ["a loud E4 with a long decay", "soft, bright F#4, long decay",
         "F sharp 4, dark and loud, short decay", "short decay, soft and dark: C4"]


def _scores(pipe, prompts: dict, guidance: float | None) -> dict[str, dict[str, float]]:
    out = {}
    for name in SETS:
        captions, attrs = prompts[name]
        t0 = time.perf_counter()
        x = pipe.generate(prompt=captions, n=1, guidance=guidance, steps=20, seed=0,
                          sampler="dpmpp_2m")
        out[name] = caption_scores(x, attrs, pipe.sample_rate) | {
            "seconds": time.perf_counter() - t0}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--n", type=int, default=96, help="prompts per evaluation set")
    ap.add_argument("--guidance", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench_text_tones"))
    args = ap.parse_args()
    ckpt = args.checkpoint or train_recipe("audio_text_tones", args.out / "run")
    pipe = omnidiff.load(ckpt, device="cpu")
    prompts = eval_prompts(args.n, seed=1)
    print(f"\n{args.n} prompts per set, dpmpp_2m 20 NFE; share of tones right")
    print(f"{'guidance':>9} {'set':>9} " + " ".join(f"{a:>7}" for a in ATTRS) + "  seconds")
    for g in args.guidance:
        for name, row in _scores(pipe, prompts, None if g == 0 else g).items():
            label = "none" if g == 0 else f"{g:g}"
            print(f"{label:>9} {name:>9} " + " ".join(f"{row[f'{a}_acc']:>7.3f}" for a in ATTRS)
                  + f"  {row['seconds']:7.1f}")
    g = max(args.guidance)
    x = pipe.generate(prompt=SHOWN, n=2, guidance=g, steps=20, seed=0)
    files = pipe.save(x, args.out / "prompts")
    print(f"\nguidance {g:g}: {len(SHOWN)} prompts, 2 tones each -> {files[0].parent}")


if __name__ == "__main__":
    torch.set_num_threads(1)
    main()
