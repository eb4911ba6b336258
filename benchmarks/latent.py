"""Pixel-space against latent diffusion on the same data at matched training time, side by side
in one run.

For each problem the benchmark trains (or takes) the autoencoder, then a pixel-space model and
a latent model for the same wall-clock budget (Lightning's ``max_time``), and reports for both:

* the network's training step (forward + backward, one batch) and sampling step (one guided
  evaluation of a batch; the latent one without and with its share of the decoder), medians
  over alternating repeats (:func:`_timing.alternate`);
* the wall-clock time to draw and decode the evaluation samples at 20 NFE;
* quality on those samples: class accuracy and Fréchet distance of the digits classifier's
  features (digits), pitch accuracy and the log-mel profile gap (tones);

then the ratios pixel / latent. The autoencoder's own training time and its reconstruction
metrics are printed too: the latent model's cost is the autoencoder's plus its own.

Usage::

    python benchmarks/latent.py digits [--seconds 300] [--autoencoder PATH] [--out DIR]
    python benchmarks/latent.py tones  [--seconds 300] [--autoencoder PATH] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from _timing import alternate

# problem -> autoencoder recipe, (pixel recipe, its overrides), latent recipe, metrics shown,
# evaluation guidance
PROBLEMS = {
    "digits": dict(ae="image_digits32_ae",
                   pixel=("image_digits", ["data.image_size=32", "model.channel_mult=[1,2,2]",
                                           "model.attn_resolutions=[8]"]),
                   latent="image_digits32_latent", metrics=("class_acc", "fd", "precision",
                                                            "recall"),
                   guidance=2.0, n=500),
    "tones": dict(ae="audio_tones_ae", pixel=("audio_tones", []), latent="audio_tones_latent",
                  metrics=("pitch_acc", "in_tune_frac", "mel_profile_db"), guidance=1.5, n=240),
}


def _train(recipe: str, overrides: list[str], out: Path) -> tuple[Path, float]:
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.train import train

    t0 = time.perf_counter()
    run = train(compose(recipe, [f"out={out}", "overwrite=true", "threads=2",
                                 "trainer.enable_progress_bar=false", *overrides]))
    return run, time.perf_counter() - t0


def _timed(seconds: int) -> list[str]:
    """Train for ``seconds`` of wall-clock time, however many steps that is."""
    return [f"+trainer.max_time={{seconds: {seconds}}}", "trainer.max_steps=1000000",
            "eval.n_samples=16", "eval.n_ref=64"]


def _step_times(pipes: dict, batch: int, guidance: float, repeats: int) -> dict:
    """Median ms of a training step and of one guided sampling evaluation per model; for the
    latent model also the decoder's time per sample batch."""
    from omnidiff.core.guidance import classifier_free

    setups = {}
    for name, pipe in pipes.items():
        model = pipe.model
        x = torch.randn(batch, *pipe.event_shape)
        t = torch.rand(batch)
        cond = torch.arange(batch) % max(1, pipe.num_classes)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
        setups[name] = (model, x, t, cond, opt, classifier_free(model, cond, guidance))

    def train_step(name: str) -> None:
        model, x, t, cond, opt, _ = setups[name]
        model.train()
        loss = (model(x, t, cond) - x).square().mean()
        loss.backward()
        opt.zero_grad(set_to_none=True)
        model.eval()

    @torch.no_grad()
    def sample_step(name: str) -> None:
        _, x, t, _, _, guided = setups[name]
        guided(x, t)

    @torch.no_grad()
    def decode(name: str) -> None:
        pipe = pipes[name]
        if pipe.decode is not None:
            pipe.decode(setups[name][1])

    steps = {"train_step": train_step, "sample_step": sample_step, "decode": decode}
    return alternate(pipes, steps, warmup=2, repeats=repeats)


def _quality(pipe, n: int, guidance: float, classes: int) -> tuple[dict, float]:
    cond = torch.arange(n) % classes
    t0 = time.perf_counter()
    x = pipe.generate(n, steps=20, guidance=guidance, cond=cond, seed=0, progress=False)
    seconds = time.perf_counter() - t0
    return pipe.metrics(x, n_ref=2048), seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("problem", choices=sorted(PROBLEMS))
    ap.add_argument("--seconds", type=int, default=300, help="training time of each model")
    ap.add_argument("--autoencoder", default=None, help="a trained autoencoder's model.pt "
                                                        "(default: train its recipe)")
    ap.add_argument("--out", default="runs/bench_latent")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--batch", type=int, default=64)
    args = ap.parse_args()
    import omnidiff

    spec, out = PROBLEMS[args.problem], Path(args.out) / args.problem
    if args.autoencoder is None:
        ae_run, ae_seconds = _train(spec["ae"], [], out / "autoencoder")
        ae_path = ae_run / "model.pt"
    else:
        ae_path, ae_seconds = Path(args.autoencoder), 0.0
    ae_metrics = torch.load(ae_path, weights_only=True).get("metrics", {})
    pixel_recipe, pixel_over = spec["pixel"]
    runs = {"pixel": _train(pixel_recipe, pixel_over + _timed(args.seconds), out / "pixel"),
            "latent": _train(spec["latent"], [f"autoencoder={ae_path}", *_timed(args.seconds)],
                             out / "latent")}
    pipes = {k: omnidiff.load(run / "model.pt", device="cpu") for k, (run, _) in runs.items()}
    torch.set_num_threads(2)
    ms = _step_times(pipes, args.batch, spec["guidance"], args.repeats)
    classes = pipes["pixel"].num_classes
    rows = {}
    for name, pipe in pipes.items():
        metrics, seconds = _quality(pipe, spec["n"], spec["guidance"], classes)
        steps = json.loads((runs[name][0] / "metrics.json").read_text())["global_step"]
        params = sum(p.numel() for p in pipe.model.parameters())
        rows[name] = {"train_steps": steps, "params": params, "event": pipe.event_shape,
                      "train_step_ms": ms[(name, "train_step")],
                      "sample_step_ms": ms[(name, "sample_step")],
                      "decode_ms": ms[(name, "decode")], "sample_seconds": seconds,
                      **{k: metrics.get(k, float("nan")) for k in spec["metrics"]}}
    trained = "given" if args.autoencoder else f"trained {ae_seconds:.0f} s"
    print(f"\n{args.problem}: autoencoder {ae_path} ({trained}; "
          + ", ".join(f"{k}={v:.4g}" for k, v in ae_metrics.items()
                      if isinstance(v, float)) + ")")
    print(f"both models trained for {args.seconds} s; sampling: {spec['n']} samples, dpmpp_2m "
          f"20 NFE, guidance {spec['guidance']}; step times: batch {args.batch}, median of "
          f"{args.repeats}")
    keys = list(rows["pixel"])
    print(f"{'':16}" + "".join(f"{k:>16}" for k in rows))
    for k in keys:
        cells = "".join(f"{_fmt(rows[r][k]):>16}" for r in rows)
        print(f"{k:16}{cells}")
    ratio = rows["pixel"]["sample_step_ms"] / rows["latent"]["sample_step_ms"]
    with_decode = (20 * rows["pixel"]["sample_step_ms"]) / (
        20 * rows["latent"]["sample_step_ms"] + rows["latent"]["decode_ms"])
    print(f"sampling step pixel / latent: {ratio:.2f}x (20 NFE with the decode: "
          f"{with_decode:.2f}x); sampling wall time pixel / latent: "
          f"{rows['pixel']['sample_seconds'] / rows['latent']['sample_seconds']:.2f}x; "
          f"training step pixel / latent: "
          f"{rows['pixel']['train_step_ms'] / rows['latent']['train_step_ms']:.2f}x")


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


if __name__ == "__main__":
    main()
