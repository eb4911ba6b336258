"""Control at sampling time, measured. Not a test; prints tables.

    python benchmarks/control.py exact [--n 4000] [--observations 4] [--quick]
    python benchmarks/control.py autoguidance --model MODEL.pt --weak WEAK.ckpt[,...] [--n 4096]
    python benchmarks/control.py digits --model runs/image_digits/<time>/model.pt [--n 500]
    python benchmarks/control.py tones --model runs/audio_tones/<time>/model.pt [--n 96]
    python benchmarks/control.py frames --model runs/video_text_digits/<time>/model.pt

``exact``: imputation on Gaussian mixtures, where the law of the hidden coordinates given the
observed ones is known in closed form (``GaussianMixture.conditional``): the eight-Gaussian
circle in 2D (x observed, y hidden) and random narrow- and wide-mode mixtures in 8D (the first
four coordinates observed). The exact denoiser stands in for a network, so the numbers measure
the imputation methods alone. For each of ``--observations`` values of the observed part
(drawn from the data), ``--n`` samples are compared with as many exact conditional samples by
sliced W2 over the hidden coordinates (W2 itself in 1D); the table gives the mean over
observations, and the floor (two independent exact samples of that size). NFE counts model
calls; "evals" counts network passes per sample (tds: one per particle, repaint: one per
resampling), so methods can be compared at equal calls and at equal work.

``autoguidance``: an unconditional model guided by weaker ones (``--weak``: early checkpoints
or shorter / smaller runs, comma-separated; Karras et al. 2024) at ``--scales``, against
unguided sampling at the same steps and at the same NFE (twice the steps: a guided step calls
both networks), dpmpp_2m, averaged over ``--seeds``. Points: sliced W2 to exact samples of the
training law, over all points and within modes (the random split of points between modes,
which dominates the first at any n, left out), and the smallest ratio of a mode's share to its
true share; the floor is two exact samples. Digits: the domain's metrics (Fréchet distance,
precision / recall, ``class_share_min``: the smallest ratio of a class's share to its share of
the held-out digits, as the digits classifier reads them).

``digits``: an ``image_digits`` model on held-out digits. Imputation: the lower half hidden and
filled by each method, without the label (guidance 0: the unconditional branch) and with it;
the project's digits classifier (``class_acc``, not the model) reads the completion as the
source's class or not. Editing: SDEdit of each digit at several strengths towards another
label (guidance 2); ``class_acc`` against the new label. 20 steps of dpmpp_2m (tds: its own
ancestral steps).

``tones``: an audio model on held-out tones with a 30 ms gap cut from the middle of each, filled
by each method under the clip's own condition: the pitch of the gap (the strongest partial of
the filled 30 ms) against the pitch of the same 30 ms of the original (``pitch_match``: within
a quarter-tone), and the signal-to-error ratio over the gap in dB; silence as the floor.

``frames``: a video model that takes no frames as condition, on held-out clips with frames 0,
1, 6 and 7 given and 2-5 generated under the clip's own condition: the centre-of-mass error
(pixels) of the generated frames against the true ones, beside a cross-fade of the ink of
frames 1 and 6 (linear interpolation) as the baseline.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from omnidiff.core.gaussian_mixture import GaussianMixture, eight_gaussians, random_mixture
from omnidiff.samplers import sample
from omnidiff_domains.points.densities import sample_density
from omnidiff_domains.points.metrics import sliced_wasserstein

SCHEDULE, PREDICTION = "cosine", "eps"


def problems() -> dict[str, tuple[GaussianMixture, torch.Tensor]]:
    """name -> (mixture, observed coordinates (D,) bool)."""
    half = torch.tensor([True] * 4 + [False] * 4)
    return {"2d circle": (eight_gaussians(), torch.tensor([True, False])),
            "8d narrow": (random_mixture(8, width="narrow", seed=0), half),
            "8d wide": (random_mixture(8, width="wide", seed=0), half)}


def methods(quick: bool) -> list[tuple[str, str, object, int]]:
    """(label, sampler, method, steps)."""
    rows = [("replace", "dpmpp_2m", "replace", s) for s in (20, 50)]
    rows += [("replace", "ddpm", "replace", s) for s in (20, 50, 160, 400)]
    rows += [("dps", "ddpm", "dps", s) for s in (20, 50)]
    rows += [("dps", "dpmpp_2m", "dps", 20)]
    rows += [("repaint r=10", "ddpm", {"name": "repaint", "resample": 10}, s) for s in (20, 50)]
    rows += [(f"tds K={k}", "ddpm", {"name": "tds", "particles": k}, s)
             for k in (2, 4, 8, 16) for s in (20, 50)]
    rows += [(f"smc K={k}", "ddpm", {"name": "smc", "particles": k}, 20) for k in (8, 16)]
    return rows[::3] if quick else rows


def distance(x: torch.Tensor, ref: torch.Tensor) -> float:
    if x.shape[1] == 1:
        return float((x[:, 0].sort().values - ref[:, 0].sort().values).pow(2).mean().sqrt())
    return sliced_wasserstein(x, ref)


def impute(gm: GaussianMixture, obs: torch.Tensor, y: torch.Tensor, n: int, sampler: str,
           method: object, steps: int, seed: int) -> tuple[torch.Tensor, dict, float]:
    known = torch.zeros(gm.dim, dtype=torch.float64)
    known[obs] = y
    noise = torch.randn(n, gm.dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    stats: dict = {}
    t0 = time.perf_counter()
    x = sample(gm.model(SCHEDULE, PREDICTION), noise, schedule=SCHEDULE, prediction=PREDICTION,
               sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(seed + 1),
               known=known, mask=obs, method=method, stats=stats)
    return x, stats, time.perf_counter() - t0


def exact(args: argparse.Namespace) -> None:
    for name, (gm, obs) in problems().items():
        ys = gm.sample(args.observations, torch.Generator().manual_seed(11))[0][:, obs]
        refs, floors = [], []
        for j, y in enumerate(ys):
            cond = gm.conditional(obs, y)
            refs.append(cond.sample(args.n, torch.Generator().manual_seed(100 + j))[0])
            other = cond.sample(args.n, torch.Generator().manual_seed(200 + j))[0]
            floors.append(distance(other, refs[-1]))
        print(f"\n## {name}: {int(obs.sum())} of {gm.dim} coordinates observed, "
              f"{args.observations} observations x {args.n} samples; floor "
              f"{sum(floors) / len(floors):.4f}")
        print("| method | sampler | steps | NFE | evals | W2 to exact | x floor | max |known err| "
              "| seconds |")
        print("|---|---|---|---|---|---|---|---|---|")
        floor = sum(floors) / len(floors)
        for label, sampler, method, steps in methods(args.quick):
            dists, err, secs = [], 0.0, 0.0
            for j, y in enumerate(ys):
                x, st, dt = impute(gm, obs, y, args.n, sampler, method, steps, seed=j)
                dists.append(distance(x[:, ~obs], refs[j]))
                err = max(err, float((x[:, obs] - y).abs().max()))
                secs += dt
            d = sum(dists) / len(dists)
            print(f"| {label} | {sampler} | {steps} | {st['nfe']} | {st['network_evals']} | "
                  f"{d:.4f} | {d / floor:.1f} | {err:.0e} | {secs:.1f} |")


def exact_law_distances(x: torch.Tensor, density: str, n: int) -> dict[str, float]:
    """Sliced W2 of points ``x`` to ``n`` exact samples of ``density``, over all points and
    within modes (each point to its nearest labelled sample's mode, mode by mode, weighted by
    the true shares: the random split between modes, which dominates the first number at any
    n, is left out), and each mode's share of ``x``."""
    ref, labels = sample_density(density, n, torch.Generator().manual_seed(123))
    mode = labels[torch.cdist(x.float(), ref).argmin(1)]
    k = int(labels.max()) + 1
    within = sum(float((labels == j).float().mean())
                 * sliced_wasserstein(x[mode == j], ref[labels == j]) ** 2 for j in range(k))
    shares = torch.bincount(mode, minlength=k).float() / len(x)
    truth = torch.bincount(labels, minlength=k).float() / len(labels)
    return {"sliced_w2": sliced_wasserstein(x, ref), "within_modes": within ** 0.5,
            "share_min": float((shares / truth).min())}


def autoguidance_floor(density: str, n: int) -> dict[str, float]:
    """The metrics between two independent exact samples of ``density`` (the floor)."""
    return exact_law_distances(sample_density(density, n, torch.Generator().manual_seed(456))[0],
                               density, n)


def training_samples(pipe, n: int) -> torch.Tensor:
    """``n`` samples of the model's training data (scored like samples: the metrics' floor)."""
    batches, got = [], 0
    for batch in pipe.data(setup=True).train_dataloader():
        batches.append(batch["x"])
        got += len(batch["x"])
        if got >= n:
            break
    return torch.cat(batches)[:n]


def autoguidance(args: argparse.Namespace) -> None:
    import omnidiff
    pipe = omnidiff.load(args.model, device="cpu")
    density = pipe.data_cfg.get("name") if pipe.domain_name == "points" else None
    keys = (["sliced_w2", "within_modes", "share_min"] if density
            else ["fd", "precision", "recall", "class_share_min"])
    print(f"\n## autoguidance: {args.model}, {args.n} samples, dpmpp_2m, mean of seeds "
          f"{args.seed0}-{args.seed0 + args.seeds - 1}")
    print("| guided by | scale | steps | NFE | " + " | ".join(keys) + " | seconds |")
    print("|---|---|---|---|" + "---|" * (len(keys) + 1))
    floor = (autoguidance_floor(density, args.n) if density
             else pipe.metrics(training_samples(pipe, args.n)))
    print(f"| (floor: {'two exact samples' if density else 'training data'}) | | | | "
          + " | ".join(f"{floor[k]:.4f}" for k in keys) + " | |")
    weaks = {w: omnidiff.load(w, device="cpu") for w in args.weak.split(",")}  # read once
    rows = [(None, None, args.steps), (None, None, 2 * args.steps)]
    rows += [(w, sc, args.steps) for w in weaks for sc in args.scales]
    for weak, scale, steps in rows:
        guide = {} if weak is None else {"guide_model": weaks[weak], "guidance": scale}
        vals: dict[str, list[float]] = {k: [] for k in keys}
        t0 = time.perf_counter()
        for seed in range(args.seed0, args.seed0 + args.seeds):
            x = pipe.generate(args.n, steps=steps, seed=seed, **guide)
            if seed == args.seed0:
                name = "unguided" if weak is None else f"{Path(weak).stem}_{scale}"
                pipe.save(x[:64] if density is None else x, args.out,
                          prefix=f"autoguidance_{name}_{steps}steps")
            got = exact_law_distances(x, density, args.n) if density else pipe.metrics(x)
            for k in keys:
                vals[k].append(float(got[k]))
        nfe = steps * (1 if weak is None else 2)
        print(f"| {'-' if weak is None else weak} | {scale or '-'} | {steps} | {nfe} | "
              + " | ".join(f"{sum(v) / len(v):.4f}" for v in vals.values())
              + f" | {time.perf_counter() - t0:.0f} |", flush=True)
    print(f"\npictures (the first seed of each row): {args.out}")


def digits(args: argparse.Namespace) -> None:
    import omnidiff
    pipe = omnidiff.load(args.model, device="cpu")
    x, labels = pipe.reference(args.n, seed=1)  # held-out digits (n, 1, H, W) and labels
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[..., : x.shape[-2] // 2, :] = True  # the upper half is given
    out = Path(args.out)
    print(f"\n## digits: {args.model}, {len(x)} held-out digits, lower half hidden")
    print("| method | label | guidance | class_acc (source) | evals | seconds |")
    print("|---|---|---|---|---|---|")
    for guidance, with_label in ((0.0, "hidden"), (2.0, "given")):
        for method in ("replace", "repaint", "dps", "tds", "smc"):
            t0 = time.perf_counter()
            y = pipe.generate(cond=labels, guidance=guidance, known=x, mask=mask,
                              method=method, steps=20, seed=0)
            secs = time.perf_counter() - t0
            acc = pipe.metrics(y, cond=labels)["class_acc"]
            pipe.save(y[:64], out, cond=labels[:64], prefix=f"fill_{method}_{with_label}")
            print(f"| {method} | {with_label} | {guidance} | {acc:.3f} | "
                  f"{pipe.last_stats['network_evals']} | {secs:.0f} |")
    target = (labels + torch.randint(1, 10, labels.shape,
                                     generator=torch.Generator().manual_seed(0))) % 10
    print("\n| editing strength | class_acc (new label) | class_acc (source) |")
    print("|---|---|---|")
    for strength in (0.3, 0.4, 0.5, 0.6, 0.7):
        y = pipe.generate(cond=target, guidance=2.0, init=x, strength=strength, steps=20,
                          seed=0)
        pipe.save(y[:64], out, cond=target[:64], prefix=f"edit_{strength}")
        print(f"| {strength} | {pipe.metrics(y, cond=target)['class_acc']:.3f} | "
              f"{pipe.metrics(y, cond=labels)['class_acc']:.3f} |")
    pipe.save(x[:64], out, cond=labels[:64], prefix="source")
    print(f"\npictures: {out}")


def _own_condition(pipe, n: int, seed: int = 1):
    """Held-out data and its conditions (labels, prompts' encodings)."""
    return pipe.reference(n, seed=seed)


def tones(args: argparse.Namespace) -> None:
    import omnidiff
    from omnidiff_domains.audio.pitch import estimate_f0, semitone_of
    pipe = omnidiff.load(args.model, device="cpu")
    rate = int(pipe.data().sample_rate)
    x, cond = _own_condition(pipe, args.n)  # (n, 1, T)
    mid, half = x.shape[-1] // 2, int(0.015 * rate)
    gap = slice(mid - half, mid + half)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[..., gap] = False
    true_semi = semitone_of(estimate_f0(x[..., gap], rate))

    def score(y: torch.Tensor) -> tuple[float, float]:
        semi = semitone_of(estimate_f0(y[..., gap], rate))
        match = float(((semi - true_semi).abs() < 0.5).float().mean())
        err = (y[..., gap] - x[..., gap]).pow(2).sum((-1, -2))
        sig = x[..., gap].pow(2).sum((-1, -2))
        return match, float((10 * torch.log10(sig / err.clamp_min(1e-12))).median())

    print(f"\n## tones: {args.model}, {len(x)} held-out clips, a 30 ms gap at "
          f"{mid / rate:.3f} s")
    print("| fill | pitch_match | gap SNR dB (median) | evals | seconds |")
    print("|---|---|---|---|---|")
    print(f"| silence | 0.000 | {score(torch.where(mask, x, 0.0))[1]:.1f} | 0 | 0 |")
    for method in ("replace", "repaint", "dps", "tds", "smc"):
        t0 = time.perf_counter()
        y = pipe.generate(cond=cond, known=x, mask=mask, method=method, steps=20, seed=0)
        match, snr = score(y)
        print(f"| {method} | {match:.3f} | {snr:.1f} | {pipe.last_stats['network_evals']} | "
              f"{time.perf_counter() - t0:.0f} |")
        pipe.save(y[:8], Path(args.out), cond=None, prefix=f"gap_{method}")


def frames(args: argparse.Namespace) -> None:
    import omnidiff
    from omnidiff_domains.video.frames import centre_of_mass
    pipe = omnidiff.load(args.model, device="cpu")
    x, cond = _own_condition(pipe, args.n)  # (n, T, C, H, W)
    given, hidden = [0, 1, 6, 7], [2, 3, 4, 5]
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[:, given] = True
    w = torch.tensor([(j - 1) / 5 for j in hidden]).view(1, -1, 1, 1, 1)
    fade = (1 - w) * x[:, 1:2] + w * x[:, 6:7]  # (n, 4, C, H, W)
    true_com = centre_of_mass(x[:, hidden])[0]

    def com_err(y: torch.Tensor) -> float:
        return float((centre_of_mass(y)[0] - true_com).norm(dim=-1).mean())

    print(f"\n## frames: {args.model}, {len(x)} held-out clips, frames {given} given")
    print("| fill | CoM error (px) | pixel MSE | evals | seconds |")
    print("|---|---|---|---|---|")
    print(f"| cross-fade of frames 1 and 6 | {com_err(fade):.3f} | "
          f"{float((fade - x[:, hidden]).pow(2).mean()):.4f} | 0 | 0 |")
    for method in ("replace", "repaint", "dps", "tds", "smc"):
        t0 = time.perf_counter()
        y = pipe.generate(cond=cond, known=x, mask=mask, method=method, steps=20, seed=0)
        print(f"| {method} | {com_err(y[:, hidden]):.3f} | "
              f"{float((y[:, hidden] - x[:, hidden]).pow(2).mean()):.4f} | "
              f"{pipe.last_stats['network_evals']} | {time.perf_counter() - t0:.0f} |")
        pipe.save(y[:8], Path(args.out), cond=None, prefix=f"frames_{method}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["exact", "autoguidance", "digits", "tones",
                                         "frames"])
    parser.add_argument("--model")
    parser.add_argument("--weak")
    parser.add_argument("--scales", type=float, nargs="+", default=[1.5, 2.0, 3.0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--seed0", type=int, default=0, help="the first seed (autoguidance: "
                        "confirm a scale chosen on some seeds on others)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--out", default="runs/bench_control")
    parser.add_argument("--n", type=int, default=4000)
    parser.add_argument("--observations", type=int, default=4)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(1)
    {"exact": exact, "autoguidance": autoguidance, "digits": digits, "tones": tones,
     "frames": frames}[args.what](args)


if __name__ == "__main__":
    main()
