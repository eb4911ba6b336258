"""Audio benchmarks: the vocoder against Griffin-Lim and the reference DiffWave, its levers,
and samplers per NFE.

Five parts (each prints a table; numbers, not pass/fail):

* ``steps`` — our DiffWave's training step (forward + backward + Adam) and sampling step
  (a forward without gradients) against the reference model of the released ``diffwave``
  package (LMNT's), same layers, channels, dilation cycle, 80 mel bins and hop 256 (the only
  hop the reference's upsampler has). One process, alternating ours / theirs each repeat;
  medians.
* ``vocoder CKPT`` — a trained vocoder (``recipe=audio_vocoder``) re-synthesising held-out
  clips per sampler and NFE, DiffWave's 6-step fast schedule (``sampler=ddpm grid=diffwave``)
  among them, beside torchaudio's Griffin-Lim from the same spectrograms: log-mel distance
  (dB), multi-resolution STFT distance, their ratios to Griffin-Lim's, the fraction of clips
  whose pitch is kept, the level over the original's, real-time factor; then the same on
  tones off the training grid (any pitch, another harmonic mix, other envelopes).
* ``levers`` — ``recipe=audio_vocoder`` with each lever of :data:`LEVERS` (network, energy
  prior, auxiliary STFT loss) trained for the same wall-clock time, then its re-syntheses.
* ``equal`` — omnidiff's DiffWave (the recipe's loop: energy prior, v-loss, AdamW) against
  the reference package's model and its own training step (``DiffWaveLearner.train_step``:
  L1 on the noise, its 50-step schedule, Adam at 2e-4), same layers / channels / cycle, the
  same tones (16 kHz, hop 256, 80 mels: the reference's upsampler), batch and number of steps;
  each re-synthesises the same held-out tones with its own samplers (the reference's
  ``diffwave.inference.predict``, fast and full), and ``--spectral`` adds the spectral network.
  Seconds per step from each loop (ours: Lightning's, with its periodic validation).
* ``tones CKPT`` — a class-conditional (``audio_tones``) or unconditional
  (``audio_unconditional``) tones model per sampler, NFE and guidance: pitch accuracy or
  the pitch histogram (coverage, rarest / commonest share), real-time factor.

Usage::

    python benchmarks/audio.py steps [--threads 2 --repeats 10]
    python benchmarks/audio.py vocoder runs/audio_vocoder/<stamp>/model.pt [--n 64]
    python benchmarks/audio.py levers [--minutes 10 --only spectral+prior]
    python benchmarks/audio.py equal [--steps 1000 --spectral --plain]
    python benchmarks/audio.py tones runs/audio_tones/<stamp>/model.pt [--n 240]

``steps`` and ``equal`` need the ``bench`` extra (``pip install omnidiff[bench]``: the
``diffwave`` package).
"""

from __future__ import annotations

import argparse
import json
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


def _off_grid(data, n: int, seed: int) -> torch.Tensor:
    """Tones the vocoder never saw: pitches anywhere between C4 and B4 (not on the training
    semitones), harmonics at 1/k or 1/k^3 (not the training data's random mix), set decays
    and levels (:func:`~omnidiff_domains.audio.tones.described_tones`), whole clips (not
    training crops: a short tone's pitch is measured better over its whole length).
    (n, 1, clip_samples)."""
    from omnidiff_domains.audio.tones import described_tones

    g = torch.Generator().manual_seed(seed)
    pitch = torch.rand(n, generator=g, dtype=torch.float64) * 11.0
    flags = [torch.randint(0, 2, (n,), generator=g) for _ in range(3)]
    length = data.clip_samples
    return described_tones(pitch, *flags, sample_rate=data.sample_rate, samples=length,
                           generator=g, detune_cents=0.0)


def _vocoder_rows(pipe, data, x: torch.Tensor, mel: torch.Tensor, seed: int,
                  runs: list) -> None:
    """One table: Griffin-Lim, then each (sampler, steps, grid) of ``runs``."""
    from omnidiff_domains.audio.metrics import vocoder_table

    t0 = time.perf_counter()
    gl = data.mel.griffin_lim(mel)
    gl_s = time.perf_counter() - t0
    seconds = data.duration(x)
    head = (f"{'sampler':22s} {'NFE':>4s} {'logmel dB':>10s} {'mrstft':>7s} {'mel/GL':>7s} "
            f"{'stft/GL':>8s} {'pitch':>6s} {'rms':>5s} {'rtf':>6s}")
    print(head)
    print("-" * len(head))
    base = vocoder_table(gl, x, mel, data.sample_rate, data.mel, griffin_lim=gl)
    print(f"{'griffin-lim (64 iter)':22s} {'-':>4s} {base['gl_logmel_db']:10.2f} "
          f"{base['gl_mrstft']:7.3f} {1.0:7.2f} {1.0:8.2f} {base['pitch_kept']:6.2f} "
          f"{base['rms_ratio']:5.2f} {gl_s / seconds:6.2f}")
    for sampler, n_steps, grid in runs:
        t0 = time.perf_counter()
        y = pipe.generate(sampler=sampler, steps=n_steps, cond=mel, seed=seed,
                          progress=False, **({"grid": grid} if grid else {}))
        s = time.perf_counter() - t0
        row = vocoder_table(y, x, mel, data.sample_rate, data.mel, griffin_lim=gl)
        label = f"{sampler}" + (f" grid={grid}" if grid else "")
        print(f"{label:22s} {n_steps:4d} {row['logmel_db']:10.2f} {row['mrstft']:7.3f} "
              f"{row['logmel_vs_gl']:7.2f} {row['mrstft_vs_gl']:8.2f} "
              f"{row['pitch_kept']:6.2f} {row['rms_ratio']:5.2f} {s / seconds:6.2f}")


def vocoder(args: argparse.Namespace) -> None:
    import omnidiff

    pipe = omnidiff.load(args.checkpoint, device="cpu")
    data = pipe.data(setup=True)
    x, mel = pipe.reference(args.n, seed=args.seed)
    if isinstance(mel, dict):
        raise SystemExit("this benchmark takes a mel-only vocoder (data.cond=mel)")
    runs = VOCODER_RUNS if not args.quick else [r for r in VOCODER_RUNS if r[2] is None
                                                and r[0] == "dpmpp_2m"]
    print(f"{args.checkpoint}: torch threads {torch.get_num_threads()}; pitch: the fraction "
          "of clips whose pitch is within 50 cents of the original's; rms: level over the "
          "original's")
    print(f"\n{args.n} held-out clips of {x.shape[-1]} samples at {data.sample_rate} Hz "
          f"({data.duration(x):.1f} s of audio)")
    _vocoder_rows(pipe, data, x, mel, args.seed, runs)
    if data.name == "tones":
        y = _off_grid(data, args.n, args.seed)
        print(f"\n{args.n} tones off the training grid: any pitch C4..B4, harmonics at 1/k "
              f"or 1/k^3, set decays and levels, {y.shape[-1]} samples each")
        _vocoder_rows(pipe, data, y, data.spectrogram(y), args.seed, runs)


# the levers of the tones vocoder, each trained for the same wall-clock time (name: overrides)
_DW = ["model.arch=diffwave", "model.layers=12", "model.channels=32", "model.cycle=6"]
_SP = ["model.arch=spectral", "model.layers=8", "model.channels=256"]
LEVERS = {
    "diffwave": [*_DW, "model.prior=none", "loss.aux=null", "optim.lr=1e-3"],
    "diffwave+prior": [*_DW, "model.prior=energy", "loss.aux=null", "optim.lr=1e-3"],
    "diffwave+stft": [*_DW, "model.prior=none", "loss.aux=stft", "optim.lr=1e-3"],
    "diffwave+prior+stft": [*_DW, "model.prior=energy", "loss.aux=stft", "optim.lr=1e-3"],
    "spectral": [*_SP, "model.prior=none", "loss.aux=null", "optim.lr=1e-3"],
    "spectral+prior": [*_SP, "model.prior=energy", "loss.aux=null", "optim.lr=1e-3"],
    "spectral+prior+stft": [*_SP, "model.prior=energy", "loss.aux=stft", "loss.aux_weight=0.1",
                            "optim.lr=1e-3"],
    "spectral+prior lr 2e-3": [*_SP, "model.prior=energy", "loss.aux=null", "optim.lr=2e-3"],
}
# the recipe's levers table was measured on the semitone data of that time
LEVER_DATA = ["data.detune_cents=10", "model.project=0"]


def levers(args: argparse.Namespace) -> None:
    """Each lever of ``LEVERS`` (or ``--only``) trained by ``recipe=audio_vocoder`` for
    ``--minutes`` of wall-clock time on the semitone data, then its re-syntheses of the same
    held-out tones without the projection (``model.project`` acts at sampling only: patch it
    into a model to see it)."""
    import tempfile
    from pathlib import Path

    import omnidiff
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.train import train

    names = args.only.split(",") if args.only else list(LEVERS)
    work = Path(tempfile.mkdtemp(prefix="omnidiff-levers-"))
    stamp = f"00:00:{args.minutes:02d}:00"
    for name in names:
        run = train(compose("audio_vocoder", [
            f"out={work / name.replace(' ', '_')}", *LEVER_DATA, *LEVERS[name],
            "trainer.max_steps=1000000",
            f"+trainer.max_time={stamp}", "trainer.enable_progress_bar=false",
            f"threads={torch.get_num_threads()}", "eval.n_samples=8", "eval.n_ref=8"]))
        steps = json.loads((run / "metrics.json").read_text())["global_step"]
        pipe = omnidiff.load(run / "model.pt", device="cpu")
        data = pipe.data(setup=True)
        x, mel = pipe.reference(args.n, seed=args.seed)
        print(f"\n{name}: {steps} steps in {args.minutes} minutes "
              f"({' '.join(LEVERS[name])})")
        _vocoder_rows(pipe, data, x, mel, args.seed,
                      [("dpmpp_2m", 6, None), ("dpmpp_2m", 20, None), ("ddpm", 20, None)])


# equal steps: tones at 16 kHz with the reference's spectrogram (hop 256, n_fft 1024, 80 mels)
EQUAL_DATA = ["data.sample_rate=16000", "data.clip_seconds=0.5", "data.mel.n_fft=1024",
              "data.mel.hop_length=256", "data.mel.n_mels=80"]


def _reference_learner(layers: int, channels: int, cycle: int, workdir: str):
    """The reference package's model and its own training step (DiffWaveLearner.train_step:
    its 50-step schedule, L1 on the noise, Adam at its learning rate)."""
    from diffwave.learner import DiffWaveLearner
    from diffwave.params import AttrDict, params

    p = AttrDict(params).override({"residual_layers": layers, "residual_channels": channels,
                                   "dilation_cycle_length": cycle, "n_mels": N_MELS})
    model = _theirs(layers, channels, cycle)
    opt = torch.optim.Adam(model.parameters(), lr=p.learning_rate)
    return DiffWaveLearner(workdir, model, None, opt, p)


def _reference_resynth(model, mel: torch.Tensor, fast: bool) -> torch.Tensor:
    """The reference package's own sampler (``diffwave.inference.predict``; fast: its 6-step
    schedule, else all 50 steps) on a model held in its cache. (n, M, F) -> (n, 1, F * hop)."""
    from diffwave import inference

    inference.models["omnidiff-bench"] = model.eval()
    audio, _ = inference.predict(mel, model_dir="omnidiff-bench", device=torch.device("cpu"),
                                 fast_sampling=fast)
    return audio.unsqueeze(1)


def equal(args: argparse.Namespace) -> None:
    """omnidiff's vocoder recipe and the reference's training loop, same network size, data,
    batch and number of steps; re-syntheses of the same held-out tones, beside Griffin-Lim."""
    import tempfile
    from pathlib import Path

    import omnidiff
    from omnidiff.tasks.config import compose
    from omnidiff.tasks.train import train
    from omnidiff_domains.audio.metrics import vocoder_table

    layers, ch, cycle = args.layers, args.channels, args.cycle
    common = [*EQUAL_DATA, f"data.crop_frames={args.frames}", f"data.batch_size={args.batch}",
              f"model.layers={layers}", f"model.channels={ch}", f"model.cycle={cycle}",
              f"threads={torch.get_num_threads()}",
              f"trainer.max_steps={args.steps}", "trainer.enable_progress_bar=false",
              "eval.n_samples=8", "eval.n_ref=8", "trainer.check_val_every_n_epoch=1000"]
    work = Path(tempfile.mkdtemp(prefix="omnidiff-equal-"))
    rows, times = {}, {}
    same = ["model.arch=diffwave", "model.project=0", "model.prior=energy"]  # ours, no help
    runs = {"omnidiff": [*same, *args.ours.split()],
            **({"omnidiff (plain)": [*same, "model.prior=none"]} if args.plain else {}),
            **({"omnidiff spectral": ["model.arch=spectral", "model.layers=8",
                                      "model.channels=256", "model.project=0"]}
               if args.spectral else {})}
    for name, extra in runs.items():
        run = train(compose("audio_vocoder", [f"out={work / name.replace(' ', '_')}",
                                              *common, *extra]))
        summary = json.loads((run / "metrics.json").read_text())
        times[name] = summary["train_seconds"] / args.steps
        rows[name] = omnidiff.load(run / "model.pt", device="cpu")
    data = rows["omnidiff"].data(setup=True)
    torch.manual_seed(args.seed)  # the reference's own noise and times
    ref = _reference_learner(layers, ch, cycle, str(work / "diffwave"))
    t0, step = time.perf_counter(), 0
    while step < args.steps:
        for batch in data.train_dataloader():
            if step >= args.steps:
                break
            ref.train_step({"audio": batch["x"][:, 0], "spectrogram": batch["cond"]})
            step += 1
    times["diffwave"] = (time.perf_counter() - t0) / args.steps
    x, mel = data.reference(args.n, generator=torch.Generator().manual_seed(args.seed))
    gl = data.mel.griffin_lim(mel)
    base = vocoder_table(x, x, mel, data.sample_rate, data.mel, griffin_lim=gl)
    print(f"{args.steps} steps of batch {args.batch} x {args.frames * HOP} samples, "
          f"{layers} layers x {ch} channels, cycle {cycle}; {args.n} held-out tones at "
          f"{data.sample_rate} Hz; torch threads {torch.get_num_threads()}")
    head = (f"{'model':18s} {'sampler':24s} {'logmel dB':>10s} {'mrstft':>7s} {'mel/GL':>7s} "
            f"{'stft/GL':>8s} {'s/step':>7s}")
    print(head)
    print("-" * len(head))
    print(f"{'griffin-lim':18s} {'64 iterations':24s} {base['gl_logmel_db']:10.2f} "
          f"{base['gl_mrstft']:7.3f} {1.0:7.2f} {1.0:8.2f} {'-':>7s}")
    outs = []
    for name, pipe in rows.items():
        for sampler, n_steps, grid in (("ddpm", 6, "diffwave"), ("dpmpp_2m", 6, None),
                                       ("dpmpp_2m", 20, None)):
            y = pipe.generate(cond=mel, sampler=sampler, steps=n_steps, seed=args.seed,
                              progress=False, **({"grid": grid} if grid else {}))
            label = f"{sampler} {n_steps}" + (f" grid={grid}" if grid else "")
            outs.append((name, label, y))
    torch.manual_seed(args.seed)
    for fast, label in ((True, "its fast 6 steps"), (False, "its 50 steps")):
        outs.append(("diffwave", label, _reference_resynth(ref.model, mel, fast)))
    for name, label, y in outs:
        r = vocoder_table(y, x, mel, data.sample_rate, data.mel, griffin_lim=gl)
        print(f"{name:18s} {label:24s} {r['logmel_db']:10.2f} {r['mrstft']:7.3f} "
              f"{r['logmel_vs_gl']:7.2f} {r['mrstft_vs_gl']:8.2f} {times[name]:7.3f}")


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
    lv = sub.add_parser("levers", help="the vocoder's levers at equal wall-clock time")
    lv.add_argument("--minutes", type=int, default=10)
    lv.add_argument("--only", default="", help="comma-separated names of LEVERS")
    lv.add_argument("--n", type=int, default=32)
    lv.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("equal", help="equal steps against the reference's training loop")
    e.add_argument("--steps", type=int, default=1000)
    e.add_argument("--batch", type=int, default=8)
    e.add_argument("--frames", type=int, default=8, help="training crops, frames of 256")
    e.add_argument("--layers", type=int, default=12)
    e.add_argument("--channels", type=int, default=32)
    e.add_argument("--cycle", type=int, default=6)
    e.add_argument("--n", type=int, default=32, help="held-out tones re-synthesised")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--ours", default="", help="overrides of omnidiff's run (quoted)")
    e.add_argument("--plain", action="store_true", help="also omnidiff's DiffWave without "
                   "the energy prior")
    e.add_argument("--spectral", action="store_true", help="also the spectral network (the "
                   "recipe's, without its projection) at the same steps")
    for name, n in (("vocoder", 64), ("tones", 240)):
        q = sub.add_parser(name)
        q.add_argument("checkpoint")
        q.add_argument("--n", type=int, default=n)
        q.add_argument("--seed", type=int, default=0)
        if name == "vocoder":
            q.add_argument("--quick", action="store_true", help="dpmpp_2m rows only")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    {"steps": steps, "vocoder": vocoder, "tones": tones, "equal": equal,
     "levers": levers}[args.part](args)


if __name__ == "__main__":
    main()
