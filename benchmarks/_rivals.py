"""diffusers' schedulers and k-diffusion's samplers on omnidiff's continuous-time eps-model.

Both libraries run the same exact model (an eps-prediction ``model(x, t)`` on the DDPM linear
schedule, omnidiff's ``linear`` = DDPM's discrete alpha-bar, t = (k + 1) / 1000) from the same
starting noise, and every method ends with an x0-prediction, as omnidiff does.

* diffusers: every deterministic scheduler of its DDPM family (DDIM, PNDM/PLMS, DPM-Solver
  multistep in both algorithm types and single-step, UniPC bh1/bh2, DEIS, SA-Solver with
  tau = 0, Euler, Heun, LMS, KDPM2), each with every ``timestep_spacing`` (leading, linspace,
  trailing; single-step DPM-Solver has only its own) and, where it has them, its sigma
  variants (Karras, exponential, beta, Lu's lambdas). The model is called at the
  scheduler's integer timesteps.
* k-diffusion: every deterministic sampler (the ancestral and SDE ones with eta = 0, so they
  solve the ODE) with each sigma schedule (the model's discrete one, Karras, exponential,
  polyexponential, VP) between sigma~(t_min) and sigma~(t_max). The denoiser maps sigma~ to
  omnidiff's t exactly (continuous), so only the sampler differs.

A method's NFE is the number of model calls it makes; at a budget it gets the most steps that
fit (a two-evaluation method gets about half as many).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch

SPACINGS = ("leading", "linspace", "trailing")


def diffusers_methods() -> list[tuple[str, Callable]]:
    """(label, make scheduler) for every configuration; ImportError when diffusers is absent."""
    import diffusers as d
    d.utils.logging.set_verbosity_error()  # its notes on adjusted orders, once per scheduler
    base = dict(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02,
                beta_schedule="linear")
    sig = {"": {}, " karras": {"use_karras_sigmas": True}}
    sig_all = sig | {" exp": {"use_exponential_sigmas": True}, " beta": {"use_beta_sigmas": True},
                     " lu": {"use_lu_lambdas": True}}
    kinds: list[tuple[str, Callable, dict]] = [
        ("DDIM", d.DDIMScheduler, {"clip_sample": False}),
        ("PNDM (PLMS)", d.PNDMScheduler, {"skip_prk_steps": True}),
        ("SA-Solver p2c2", d.SASolverScheduler, {"tau_func": lambda t: 0}),
        ("SA-Solver p3c3", d.SASolverScheduler, {"tau_func": lambda t: 0, "predictor_order": 3,
                                                 "corrector_order": 3}),
    ]
    for name, extra in sig_all.items():
        for order in (1, 2, 3):
            kinds.append((f"DPM++ {order}M{name}", d.DPMSolverMultistepScheduler,
                          {"solver_order": order, **extra}))
        kinds.append((f"DPM++ 2M heun{name}", d.DPMSolverMultistepScheduler,
                      {"solver_order": 2, "solver_type": "heun", **extra}))
    for order in (2, 3):
        kinds.append((f"DPM {order}M", d.DPMSolverMultistepScheduler,
                      {"solver_order": order, "algorithm_type": "dpmsolver",
                       "final_sigmas_type": "sigma_min"}))
    for name, extra in sig.items():
        for order in (2, 3):
            kinds.append((f"DPM++ {order}S{name}", d.DPMSolverSinglestepScheduler,
                          {"solver_order": order, **extra}))
            kinds.append((f"DEIS p{order}{name}", d.DEISMultistepScheduler,
                          {"solver_order": order, **extra}))
        for variant in ("bh1", "bh2"):
            for order in (1, 2, 3):
                kinds.append((f"UniPC {variant} p{order}{name}", d.UniPCMultistepScheduler,
                              {"solver_order": order, "solver_type": variant, **extra}))
        for label, cls in (("Euler", d.EulerDiscreteScheduler), ("Heun", d.HeunDiscreteScheduler),
                           ("LMS", d.LMSDiscreteScheduler), ("KDPM2", d.KDPM2DiscreteScheduler)):
            kinds.append((label + name, cls, dict(extra)))
    out = []
    for label, cls, extra in kinds:
        if "timestep_spacing" not in inspect.signature(cls.__init__).parameters:
            out.append((label, lambda cls=cls, extra=extra: cls(**base, **extra)))
            continue  # DPM-Solver single-step has one spacing of its own
        for spacing in SPACINGS:
            out.append((f"{label} {spacing}",
                        (lambda cls=cls, extra=extra, spacing=spacing:
                         cls(**base, timestep_spacing=spacing, **extra))))
    return out


def run_diffusers(make: Callable, model: Callable, noise: torch.Tensor, steps: int
                  ) -> tuple[torch.Tensor, int]:
    """(x0 (B, D) float64, model calls) of one scheduler at ``steps`` steps."""
    sch = make()
    sch.set_timesteps(steps)
    x = noise.double() * sch.init_noise_sigma
    calls = 0
    for k in sch.timesteps:
        t = torch.full((x.shape[0],), (float(k) + 1.0) / 1000.0, dtype=torch.float64)
        eps = model(sch.scale_model_input(x, k).double(), t)
        calls += 1
        x = sch.step(eps, k, x).prev_sample
    return x.double(), calls


def kdiffusion_methods(schedule) -> list[tuple[str, Callable]]:
    """(label, run(denoiser, x, n)) for every deterministic sampler x sigma schedule."""
    import k_diffusion.sampling as ks
    from omnidiff.samplers.denoiser import coefficients
    s_min = math.exp(-coefficients(schedule, schedule.t_min)[2])
    s_max = math.exp(-coefficients(schedule, schedule.t_max)[2])
    lam_k = [coefficients(schedule, (k + 1) / 1000)[2] for k in range(1000)]
    discrete = torch.tensor([math.exp(-v) for v in lam_k], dtype=torch.float64)

    def model_sigmas(n):  # k-diffusion's DiscreteSchedule.get_sigmas: t linear in [999, 0]
        t = torch.linspace(999, 0, n, dtype=torch.float64)
        lo, w = t.floor().long(), t - t.floor()
        hi = (lo + 1).clamp_max(999)
        ls = (1 - w) * discrete[lo].log() + w * discrete[hi].log()
        return ks.append_zero(ls.exp())

    sigmas = {
        "model": model_sigmas,
        "karras": lambda n: ks.get_sigmas_karras(n, s_min, s_max, device="cpu").double(),
        "exponential": lambda n: ks.get_sigmas_exponential(n, s_min, s_max,
                                                           device="cpu").double(),
        "polyexp": lambda n: ks.get_sigmas_polyexponential(n, s_min, s_max, rho=1.0,
                                                           device="cpu").double(),
        "vp": lambda n: ks.get_sigmas_vp(n, device="cpu").double(),
    }
    samplers = {
        "euler": ks.sample_euler, "heun": ks.sample_heun, "lms": ks.sample_lms,
        "dpm_2": ks.sample_dpm_2,
        "dpmpp_2m": ks.sample_dpmpp_2m,
        "dpmpp_2s (eta 0)": lambda m, x, s, **k: ks.sample_dpmpp_2s_ancestral(m, x, s, eta=0.0,
                                                                              **k),
        "dpmpp_sde (eta 0)": lambda m, x, s, **k: ks.sample_dpmpp_sde(m, x, s, eta=0.0, **k),
        "dpmpp_2m_sde heun (eta 0)": lambda m, x, s, **k: ks.sample_dpmpp_2m_sde(
            m, x, s, eta=0.0, solver_type="heun", **k),
        "dpmpp_3m_sde (eta 0)": lambda m, x, s, **k: ks.sample_dpmpp_3m_sde(m, x, s, eta=0.0,
                                                                            **k),
    }
    out = []
    for sname, fn in samplers.items():
        for gname, sig in sigmas.items():
            out.append((f"{sname} {gname}",
                        lambda den, x, n, fn=fn, sig=sig: fn(den, x * sig(n)[0], sig(n),
                                                             disable=True)))
    out.append(("dpm_fast", lambda den, x, n: ks.sample_dpm_fast(den, x * s_max, s_min, s_max,
                                                                   n, disable=True)))
    return out


def kdiffusion_denoiser(model: Callable, schedule) -> Callable:
    """k-diffusion's D(x / alpha, sigma~) -> x0 from omnidiff's eps-model, t exact in sigma~."""
    def den(x_ve: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        lam = -torch.log(sigma.double())
        t = schedule.t_of_lambda(lam).clamp(schedule.t_min, schedule.t_max)
        a, s = schedule.alpha_sigma(t)
        x_vp = x_ve.double() * a[:, None]
        eps = model(x_vp, t)
        return (x_vp - s[:, None] * eps) / a[:, None]
    return den


def budgeted(run: Callable[[int], tuple[torch.Tensor, int]], nfe: int
             ) -> tuple[torch.Tensor, int] | None:
    """``run(steps)`` with the most steps whose model calls fit in ``nfe``: (x, calls)."""
    steps = nfe
    while steps >= 1:
        x, calls = run(steps)
        if calls <= nfe:
            return x, calls
        steps = max(1, min(steps - 1, steps * nfe // calls)) if steps > 1 else 0
    return None


def counted(fn: Callable) -> tuple[Callable, list]:
    """``fn`` wrapped to count its calls in the returned one-element list."""
    box = [0]

    def wrapped(*args, **kwargs):
        box[0] += 1
        return fn(*args, **kwargs)
    return wrapped, box
