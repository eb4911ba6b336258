"""Sampler benchmark: omnidiff's samplers vs diffusers' schedulers. Not a test; prints tables.

    python benchmarks/samplers.py [--quick] [--checkpoint PATH] [--skip-quality]

(1) Accuracy. Exact Gaussian-mixture denoiser (eight Gaussians, 2D), DDPM's linear schedule
    (our ``linear`` = DDPM's discrete alpha-bar interpolated in log alpha; diffusers' timestep k
    is our t = (k + 1) / 1000), the same starting noise for everyone. Each diffusers scheduler
    gets the exact denoiser as an eps-model on its integer timesteps (``timestep_spacing=
    "trailing"``, so every method starts at k = 999 = our t_max = 1, Lin et al. 2023).
    Endpoint convention: every method ends with an x0-prediction (ours at t_min = 0.001, i.e.
    k = 0; diffusers' last step to sigma = 0 is the same x0-prediction at its last timestep),
    so all converge, as NFE -> inf, to D(x(t_min), t_min) with x(t) the exact probability-flow
    ODE solution. The reference is exactly that: adaptive RK45 (rtol = atol = 1e-10, in
    log-SNR) to t_min, then the x0-prediction. Error per sample = ||x - x_ref||_2; we report
    RMS and the median over samples, at 5 / 10 / 20 / 50 NFE (two-evaluation methods get
    (NFE + 1) // 2 steps, i.e. NFE - 1 evaluations when NFE is even).
(2) Overhead. Time per step outside the model (the model returns zeros), ours (``sample``,
    including grid construction and the final step) vs diffusers (``set_timesteps`` + the
    ``scale_model_input`` / ``step`` loop); medians of repeats; ratio printed. Our state has
    the noise's precision (float32 here, as diffusers'); the last column keeps it in float64.
(3) Quality. A trained points2d model (``--checkpoint`` or trained now into a temp dir with
    ``omnidiff train recipe=points2d``): sliced Wasserstein-2 vs NFE per sampler, through
    ``omnidiff.load(...).generate`` and ``.metrics``.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

import torch

from omnidiff.samplers import sample
from omnidiff.schedules import get_schedule
from omnidiff.toy import eight_gaussians

NFES = (5, 10, 20, 50)
TWO_EVAL = {"heun", "dpmpp_2s_ancestral"}

# (label, sampler, options, grid)
OURS = [
    ("ddim", "ddim", {}, None),
    ("dpmpp_2m", "dpmpp_2m", {}, None),
    ("dpmpp_3m", "dpmpp_3m", {}, None),
    ("unipc bh2 p2", "unipc", {"order": 2, "variant": "bh2"}, None),
    ("unipc bh1 p3", "unipc", {"order": 3, "variant": "bh1"}, None),
    ("deis p3", "deis", {"order": 3}, None),
    ("euler (t)", "euler", {}, None),
    ("euler (sigma)", "euler", {"time": "sigma"}, None),
    ("heun (t)", "heun", {}, None),
    ("heun (sigma)", "heun", {"time": "sigma"}, None),
    ("lms p4 (sigma)", "lms", {}, None),
    ("dpmpp_2s (eta=0)", "dpmpp_2s_ancestral", {"eta": 0.0}, None),
]


def _steps(sampler: str, nfe: int) -> int:
    return (nfe + 1) // 2 if sampler in TWO_EVAL else nfe


def _diffusers_schedulers():
    import diffusers as d
    common = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                  beta_schedule="linear", timestep_spacing="trailing")
    return [
        ("DDIM", lambda: d.DDIMScheduler(**common, clip_sample=False, set_alpha_to_one=True)),
        ("DPMSolver++ 2M", lambda: d.DPMSolverMultistepScheduler(**common, solver_order=2)),
        ("DPMSolver++ 3M", lambda: d.DPMSolverMultistepScheduler(**common, solver_order=3)),
        ("UniPC bh2 p2", lambda: d.UniPCMultistepScheduler(**common, solver_order=2)),
        ("UniPC bh1 p3", lambda: d.UniPCMultistepScheduler(**common, solver_order=3,
                                                            solver_type="bh1")),
        ("DEIS p3", lambda: d.DEISMultistepScheduler(**common, solver_order=3)),
        ("Euler", lambda: d.EulerDiscreteScheduler(**common)),
        ("Heun", lambda: d.HeunDiscreteScheduler(**common)),
        ("LMS", lambda: d.LMSDiscreteScheduler(**common)),
    ]


def _run_diffusers(make, eps_model, noise, nfe):
    sch = make()
    two = type(sch).__name__.startswith("Heun")
    sch.set_timesteps((nfe + 1) // 2 if two else nfe)
    x = noise * sch.init_noise_sigma
    n = 0
    for k in sch.timesteps:
        eps = eps_model(sch.scale_model_input(x, k), k)
        n += 1
        x = sch.step(eps, k, x).prev_sample
    return x, n


def _errors(x, ref):
    e = (x.double() - ref).norm(dim=1)
    return float(e.pow(2).mean().sqrt()), float(e.median())


def accuracy(n: int) -> None:
    gm = eight_gaussians()
    sched = get_schedule("linear")
    model = gm.model(sched, "eps")
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    st: dict = {}
    t0 = time.perf_counter()
    ref = sample(model, noise, schedule=sched, prediction="eps", sampler="rk45", steps=50,
                 rtol=1e-10, atol=1e-10, stats=st)
    print(f"\n(1) ACCURACY  eight Gaussians (2D), DDPM linear schedule, {n} samples; reference: "
          f"rk45 rtol=atol=1e-10 to t_min + x0-prediction ({st['nfe']} NFE, "
          f"{time.perf_counter() - t0:.0f} s)")
    print("    error per sample ||x - x_ref||: RMS / median; columns are NFE "
          "(actual NFE in brackets where it differs)")
    hdr = f"{'method':<26}" + "".join(f"{f'NFE {k}':>24}" for k in NFES)
    print(hdr + "\n" + "-" * len(hdr))
    best: dict = {"ours": {}, "diffusers": {}}

    def row(label, who, results):
        cells = []
        for k, (rms, med, nfe) in zip(NFES, results):
            tag = f"[{nfe}]" if nfe != k else ""
            cells.append(f"{rms:9.2e} / {med:8.2e}{tag:>4}")
            b = best[who].get(k)
            if b is None or rms < b[0]:
                best[who][k] = (rms, label)
        print(f"{label:<26}" + "".join(f"{c:>24}" for c in cells))

    for label, name, opts, grid in OURS:
        res = []
        for k in NFES:
            st = {}
            x = sample(model, noise, schedule=sched, prediction="eps", sampler=name,
                       steps=_steps(name, k), grid=grid, stats=st, **opts)
            res.append((*_errors(x, ref), st["nfe"]))
        row("ours " + label, "ours", res)

    def eps_model(x, k):  # diffusers timestep k  <->  our t = (k + 1) / 1000
        t = torch.full((x.shape[0],), (float(k) + 1.0) / 1000.0, dtype=torch.float64)
        return model(x.double(), t)

    try:
        makers = _diffusers_schedulers()
    except ImportError as exc:
        print(f"(diffusers not importable: {exc}; skipping its rows)")
        makers = []
    for label, make in makers:
        res = []
        for k in NFES:
            x, nfe = _run_diffusers(make, eps_model, noise.clone(), k)
            res.append((*_errors(x, ref), nfe))
        row("diffusers " + label, "diffusers", res)
    rs = []
    for label, (name, opts) in {"rk45 (t)": ("rk45", {"time": "t"}),
                                "rk45 (lambda)": ("rk45", {})}.items():
        for tol in (1e-2, 1e-3, 1e-4):
            st = {}
            x = sample(model, noise, schedule=sched, prediction="eps", sampler=name, steps=20,
                       rtol=tol, atol=tol, stats=st, **opts)
            rms, med = _errors(x, ref)
            rs.append(f"{label} tol {tol:g}: {rms:.2e} / {med:.2e} at {st['nfe']} NFE")
    print("adaptive: " + ";  ".join(rs))
    if best["diffusers"]:
        print("\nbest per NFE (RMS):")
        for k in NFES:
            (o, ol), (dv, dl) = best["ours"][k], best["diffusers"][k]
            print(f"  NFE {k:>2}: ours {o:.2e} ({ol})   diffusers {dv:.2e} ({dl})   "
                  f"ratio ours/diffusers {o / dv:.2f}")


def _ours_per_step(model, noise, sched, name, steps, repeats, state_dtype) -> float:
    """Median microseconds per model call of ``sample`` (grid, loop and final step)."""
    tt = []
    for _ in range(repeats):
        st = {}
        t0 = time.perf_counter()
        sample(model, noise, schedule=sched, prediction="eps", sampler=name,
               steps=steps if name != "heun" else (steps + 1) // 2, stats=st,
               state_dtype=state_dtype)
        tt.append((time.perf_counter() - t0) / st["nfe"])
    return statistics.median(tt) * 1e6


def overhead(repeats: int) -> None:
    print("\n(2) OVERHEAD per step outside the model (model returns zeros), median of "
          f"{repeats} repeats, microseconds")
    sched = get_schedule("linear")

    def zeros(x, t):
        return torch.zeros_like(x)

    try:
        makers = dict(_diffusers_schedulers())
    except ImportError:
        makers = {}
    pairs = [("ddim", "DDIM"), ("dpmpp_2m", "DPMSolver++ 2M"), ("dpmpp_3m", "DPMSolver++ 3M"),
             ("unipc", "UniPC bh2 p2"), ("deis", "DEIS p3"), ("euler", "Euler"),
             ("heun", "Heun"), ("lms", "LMS")]
    steps = 50
    for shape in [(64, 2), (8, 3, 64, 64)]:
        noise = torch.randn(*shape, generator=torch.Generator().manual_seed(0))
        print(f"  x: {shape} float32, {steps} steps")
        print(f"  {'sampler':<12}{'ours':>10}{'diffusers':>12}{'ratio':>8}"
              f"{'ours, f64 state':>18}")
        for ours, theirs in pairs:
            o, o64 = (_ours_per_step(zeros, noise, sched, ours, steps, repeats, dt)
                      for dt in (None, torch.float64))
            d = float("nan")
            if theirs in makers:
                tt = []
                for _ in range(repeats):
                    sch = makers[theirs]()
                    t0 = time.perf_counter()
                    sch.set_timesteps(steps if theirs != "Heun" else (steps + 1) // 2)
                    x = noise * sch.init_noise_sigma
                    for k in sch.timesteps:
                        eps = zeros(sch.scale_model_input(x, k), k)
                        x = sch.step(eps, k, x).prev_sample
                    tt.append((time.perf_counter() - t0) / len(sch.timesteps))
                d = statistics.median(tt) * 1e6
            print(f"  {ours:<12}{o:>10.0f}{d:>12.0f}{o / d:>8.2f}{o64:>18.0f}")


def quality(checkpoint: str | None, n: int) -> None:
    import omnidiff
    tmp = None
    if checkpoint is None:
        tmp = tempfile.mkdtemp(prefix="omnidiff_bench_")
        print(f"\n(training points2d into {tmp} ...)", flush=True)
        subprocess.run([sys.executable, "-m", "omnidiff.cli", "train", "recipe=points2d",
                        f"out={tmp}/run", "eval.every_n_steps=0", "logger=none"], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        checkpoint = f"{tmp}/run/model.pt"
    pipe = omnidiff.load(checkpoint, device="cpu")
    print(f"\n(3) QUALITY  {checkpoint}: {pipe}\n    sliced_w2 vs the held-out data "
          f"({n} samples, seed 0); columns are NFE")
    ref_metric = pipe.metrics(pipe.reference(2 * n)[0][n:], n_ref=n)  # other held-out half
    print(f"    (held-out vs held-out sliced_w2: {ref_metric.get('sliced_w2', float('nan')):.4f})")
    names = ["ddim", "dpmpp_2m", "dpmpp_3m", "unipc", "deis", "euler", "heun", "lms",
             "dpmpp_2s_ancestral", "dpmpp_2m_sde", "euler_ancestral", "ddpm", "pc"]
    print(f"  {'sampler':<20}" + "".join(f"{k:>10}" for k in NFES))
    for name in names:
        cells = []
        for k in NFES:
            steps = (k + 1) // 2 if name in TWO_EVAL | {"pc"} else k
            x = pipe.generate(n, sampler=name, steps=steps, seed=0, progress=False)
            cells.append(pipe.metrics(x, n_ref=n)["sliced_w2"])
        print(f"  {name:<20}" + "".join(f"{c:>10.4f}" for c in cells))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer samples and repeats")
    ap.add_argument("--checkpoint", default=None, help="a points2d model.pt for (3)")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    accuracy(128 if args.quick else 512)
    overhead(3 if args.quick else 7)
    if not args.skip_quality:
        quality(args.checkpoint, 1024 if args.quick else 4096)


if __name__ == "__main__":
    main()
