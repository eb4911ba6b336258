"""Audio benchmarks: our DiffWave against the reference implementation, and samplers per NFE.

Three parts (each prints a table; numbers, not pass/fail):

* ``steps`` — our network's training step (forward + backward + Adam) and sampling step
  (a forward without gradients) against the reference model of the released ``diffwave``
  package (LMNT's), same layers, channels, dilation cycle, 80 mel bins and hop 256 (the only
  hop the reference's upsampler has). One process, alternating ours / theirs each repeat;
  medians.
* ``vocoder CKPT`` — a trained vocoder (``recipe=audio_vocoder``) re-synthesising held-out
  clips per sampler and NFE, DiffWave's 6-step fast schedule (``sampler=ddpm grid=diffwave``)
  among them, beside torchaudio's Griffin-Lim from the same spectrograms: log-mel distance
  (dB), multi-resolution STFT distance, their ratios to Griffin-Lim's, real-time factor.
* ``tones CKPT`` — a class-conditional (``audio_tones``) or unconditional
  (``audio_unconditional``) tones model per sampler, NFE and guidance: pitch accuracy or
  the pitch histogram (coverage, rarest / commonest share), real-time factor.

Usage::

    python benchmarks/audio.py steps [--threads 2 --repeats 10]
    python benchmarks/audio.py vocoder runs/audio_vocoder/<stamp>/model.pt [--n 64]
    python benchmarks/audio.py tones runs/audio_tones/<stamp>/model.pt [--n 240]

``steps`` needs the ``bench`` extra (``pip install omnidiff[bench]``: the ``diffwave``
package).
"""

from __future__ import annotations

import argparse
import time

import torch

from _timing import alternate

STEP_CONFIGS = {
    # name: (layers, channels, cycle, train batch, train frames, sample batch, sample frames)
    "base": (30, 64, 10, 2, 16, 2, 62),      # DiffWave base (LJSpeech vocoder)
    "small": (12, 32, 6, 4, 16, 4, 62),
}
N_MELS, HOP = 80, 256

# (sampler, steps, grid or None): the 6-step fast schedule first
VOCODER_RUNS = [("ddpm", 6, "diffwave"), ("ddim", 6, "diffwave"), ("dpmpp_2m", 6, None),
                ("unipc", 6, None), ("ddim", 10, None), ("dpmpp_2m", 10, None),
                ("unipc", 10, None), ("dpmpp_2m", 20, None), ("ddpm", 20, None)]
TONE_RUNS = [("ddpm", 6, "diffwave"), ("dpmpp_2m", 6, None), ("unipc", 6, None),
             ("dpmpp_2m", 10, None), ("unipc", 10, None), ("dpmpp_2m", 20, None),
             ("ddpm", 20, None)]


def _ours(layers: int, channels: int, cycle: int):
    from omnidiff.core.conditions import TensorCond
    from omnidiff_domains.audio.diffwave import DiffWave

    return DiffWave(TensorCond((N_MELS, None)), hop=HOP, layers=layers, channels=channels,
                    cycle=cycle)


def _theirs(layers: int, channels: int, cycle: int):
    try:
        from diffwave.model import DiffWave
        from diffwave.params import AttrDict, params
    except ImportError:
        raise SystemExit("benchmarks/audio.py steps needs the reference package: "
                         "pip install 'omnidiff[bench]' (or pip install diffwave)") from None
    p = AttrDict(params).override({"residual_layers": layers, "residual_channels": channels,
                                   "dilation_cycle_length": cycle, "n_mels": N_MELS})
    return DiffWave(p)


def steps(args: argparse.Namespace) -> None:
    rows = []
    for name, (layers, ch, cycle, bt, ft, bs, fs) in STEP_CONFIGS.items():
        nets = {"ours": _ours(layers, ch, cycle), "diffwave": _theirs(layers, ch, cycle)}
        opts = {k: torch.optim.Adam(n.parameters(), lr=2e-4) for k, n in nets.items()}
        g = torch.Generator().manual_seed(0)
        batch = {w: (torch.randn(b, 1, f * HOP, generator=g), torch.rand(b, generator=g),
                     torch.rand(b, N_MELS, f, generator=g))
                 for w, b, f in (("train", bt, ft), ("sample", bs, fs))}

        def call(k, x, t, mel):
            if k == "ours":
                return nets[k](x, t, mel)
            return nets[k](x[:, 0], mel, (t * 49).round().long())  # its 50 integer steps

        def train_step(k):
            x, t, mel = batch["train"]
            loss = (call(k, x, t, mel) - x).square().mean()
            opts[k].zero_grad(set_to_none=True)
            loss.backward()
            opts[k].step()

        @torch.no_grad()
        def sample_step(k):
            call(k, *batch["sample"])

        med = alternate(nets, {"train": train_step, "sample": sample_step}, args.warmup,
                        args.repeats)
        params = {k: sum(q.numel() for q in n.parameters()) for k, n in nets.items()}
        for what, b, f in (("train", bt, ft), ("sample", bs, fs)):
            rows.append((name, what, f"{b}x{f * HOP}", med[("ours", what)],
                         med[("diffwave", what)],
                         med[("ours", what)] / med[("diffwave", what)], params["ours"],
                         params["diffwave"]))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, warmup "
          f"{args.warmup}, repeats {args.repeats}, medians in ms; hop {HOP}, {N_MELS} mels")
    head = (f"{'config':7s} {'step':6s} {'batch':>9s} {'ours':>9s} {'diffwave':>9s} "
            f"{'ratio':>6s} {'params ours':>12s} {'params ref':>11s}")
    print(head)
    print("-" * len(head))
    for name, what, b, mo, md, r, po, pd in rows:
        print(f"{name:7s} {what:6s} {b:>9s} {mo:9.1f} {md:9.1f} {r:6.2f} {po:12,d} {pd:11,d}")


def vocoder(args: argparse.Namespace) -> None:
    import omnidiff
    from omnidiff_domains.audio.metrics import vocoder_table

    pipe = omnidiff.load(args.checkpoint, device="cpu")
    data = pipe.data(setup=True)
    x, mel = pipe.reference(args.n, seed=args.seed)
    if isinstance(mel, dict):
        raise SystemExit("this benchmark takes a mel-only vocoder (data.cond=mel)")
    t0 = time.perf_counter()
    gl = data.mel.griffin_lim(mel)
    gl_s = time.perf_counter() - t0
    seconds = data.duration(x)
    print(f"{args.checkpoint}: {args.n} held-out clips of {x.shape[-1]} samples at "
          f"{data.sample_rate} Hz ({seconds:.1f} s of audio), torch threads "
          f"{torch.get_num_threads()}")
    head = (f"{'sampler':22s} {'NFE':>4s} {'logmel dB':>10s} {'mrstft':>7s} {'mel/GL':>7s} "
            f"{'stft/GL':>8s} {'rtf':>6s}")
    print(head)
    print("-" * len(head))
    base = vocoder_table(x, x, mel, data.sample_rate, data.mel, griffin_lim=gl)
    print(f"{'griffin-lim (64 iter)':22s} {'-':>4s} {base['gl_logmel_db']:10.2f} "
          f"{base['gl_mrstft']:7.3f} {1.0:7.2f} {1.0:8.2f} {gl_s / seconds:6.2f}")
    for sampler, n_steps, grid in VOCODER_RUNS:
        t0 = time.perf_counter()
        y = pipe.generate(sampler=sampler, steps=n_steps, cond=mel, seed=args.seed,
                          progress=False, **({"grid": grid} if grid else {}))
        s = time.perf_counter() - t0
        row = vocoder_table(y, x, mel, data.sample_rate, data.mel, griffin_lim=gl)
        label = f"{sampler}" + (f" grid={grid}" if grid else "")
        print(f"{label:22s} {n_steps:4d} {row['logmel_db']:10.2f} {row['mrstft']:7.3f} "
              f"{row['logmel_vs_gl']:7.2f} {row['mrstft_vs_gl']:8.2f} {s / seconds:6.2f}")


def tones(args: argparse.Namespace) -> None:
    import omnidiff
    from omnidiff_domains.audio.pitch import pitch_stats

    pipe = omnidiff.load(args.checkpoint, device="cpu")
    data = pipe.data()
    labelled = pipe.num_classes > 0
    n = args.n
    cond = (torch.arange(n) % pipe.num_classes) if labelled else None
    guidances = [None, 1.5, 2.0] if labelled else [None]
    ref, _ = pipe.reference(n)
    ref_rms = float(ref.pow(2).mean().sqrt())
    print(f"{args.checkpoint}: {n} clips per row, {'class-conditional' if labelled else 'unconditional'}")
    head = (f"{'sampler':22s} {'NFE':>4s} {'guid.':>5s} {'pitch_acc':>9s} {'in_tune':>8s} "
            f"{'coverage':>8s} {'min sh.':>7s} {'max sh.':>7s} {'rms/ref':>7s} {'rtf':>6s}")
    print(head)
    print("-" * len(head))
    for sampler, n_steps, grid in TONE_RUNS:
        for w in guidances:
            t0 = time.perf_counter()
            y = pipe.generate(None if labelled else n, sampler=sampler, steps=n_steps,
                              cond=cond, guidance=w, seed=args.seed, progress=False,
                              **({"grid": grid} if grid else {}))
            s = time.perf_counter() - t0
            st = pitch_stats(y, data.sample_rate, cond)
            label = f"{sampler}" + (f" grid={grid}" if grid else "")
            acc = f"{st['pitch_acc']:9.3f}" if labelled else f"{'-':>9s}"
            print(f"{label:22s} {n_steps:4d} {str(w):>5s} {acc} {st['in_tune_frac']:8.3f} "
                  f"{st['pitch_coverage']:8.3f} {st['pitch_share_min']:7.2f} "
                  f"{st['pitch_share_max']:7.2f} {float(y.pow(2).mean().sqrt()) / ref_rms:7.2f} "
                  f"{s / data.duration(y):6.2f}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    sub = p.add_subparsers(dest="part", required=True)
    s = sub.add_parser("steps", help="step time against the reference diffwave model")
    s.add_argument("--warmup", type=int, default=2)
    s.add_argument("--repeats", type=int, default=8)
    for name, n in (("vocoder", 64), ("tones", 240)):
        q = sub.add_parser(name)
        q.add_argument("checkpoint")
        q.add_argument("--n", type=int, default=n)
        q.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    {"steps": steps, "vocoder": vocoder, "tones": tones}[args.part](args)


if __name__ == "__main__":
    main()
