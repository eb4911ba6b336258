"""``omnidiff demo``: the forward and reverse processes on a 2D Gaussian mixture, no training.

The mixture's exact denoiser (:mod:`omnidiff.core.gaussian_mixture`) stands in for a trained
network, so the figure shows what the core does — and the printed moment errors show how well a
sampler does it — in a few seconds on a CPU:

* top row: data noised by the forward process ``x_t = alpha(t) x0 + sigma(t) eps`` at
  t = 0 ... 1 (left to right);
* bottom row: one sampler trajectory from noise (left) to data (right), at the same times as
  the top row read right to left.

    omnidiff demo [out=demo_out n=2000 steps=20 sampler=dpmpp_2m seed=0 schedule=linear]
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from omnidiff.core.forward import add_noise
from omnidiff.core.gaussian_mixture import GaussianMixture
from omnidiff.core.schedules import VPSchedule, get_schedule
from omnidiff.errors import UserError
from omnidiff.io import atomic_save_figure, atomic_write_json
from omnidiff.samplers import SAMPLERS, Denoiser, sample, timesteps

__all__ = ["spiral_mixture", "moment_errors", "run_demo"]

PREDICTION = "v"  # what the stand-in network predicts: well-posed on every schedule
# (eps is not where alpha = 0, e.g. flow at t = 1); the exact model gives the same samples in
# any parameterisation
COLUMNS = 6  # panels per row
LIMIT = 3.5  # axes span [-LIMIT, LIMIT] in both rows


def spiral_mixture(arms: int = 2, per_arm: int = 9) -> GaussianMixture:
    """Gaussians strung along an ``arms``-armed spiral, stretched along the curve.

    Unit-scale data (overall std about 1) with modes of unequal weight, so that a sampler
    must get the covariance and the mode weights right, not only the mean.
    """
    means, covs, weights = [], [], []
    for arm in range(arms):
        for i in range(per_arm):
            theta = arm * 2 * math.pi / arms + 0.55 * i
            r = 0.3 + 0.24 * i
            means.append([r * math.cos(theta), r * math.sin(theta)])
            # tangent of the spiral (dr/di, r dtheta/di) rotated into x, y
            dx = 0.24 * math.cos(theta) - 0.55 * r * math.sin(theta)
            dy = 0.24 * math.sin(theta) + 0.55 * r * math.cos(theta)
            norm = math.hypot(dx, dy)
            u = torch.tensor([[dx / norm, -dy / norm], [dy / norm, dx / norm]],
                             dtype=torch.float64)  # columns: tangent, normal
            std_along, std_across = 0.35 * norm, 0.06
            covs.append(u @ torch.diag(torch.tensor([std_along ** 2, std_across ** 2],
                                                    dtype=torch.float64)) @ u.T)
            weights.append(r)
    return GaussianMixture(weights, means, torch.stack(covs))


def moment_errors(x: torch.Tensor, mixture: GaussianMixture) -> dict[str, float]:
    """How far samples x: (N, D) are from the mixture.

    ``mean_error``: Euclidean distance of the means; ``cov_rel_error``: Frobenius norm of the
    covariance error over that of the covariance; ``mode_weight_error``: largest error of the
    mode weights (the average posterior component probabilities of the samples).
    """
    x = x.double()
    mean_err = float(torch.linalg.vector_norm(x.mean(0) - mixture.mean()))
    cov = torch.cov(x.T)
    true_cov = mixture.covariance()
    cov_err = float(torch.linalg.matrix_norm(cov - true_cov) / torch.linalg.matrix_norm(true_cov))
    r = mixture.responsibilities(x, torch.zeros(x.shape[0], dtype=torch.float64),
                                 get_schedule("flow"))  # (N, K) at t = 0: the data's modes
    w_err = float((r.mean(0) - mixture.weights).abs().max())
    return {"mean_error": mean_err, "cov_rel_error": cov_err, "mode_weight_error": w_err}


def _scatter(ax, x: torch.Tensor, title: str, color: str) -> None:
    pts = x.double().numpy()
    ax.scatter(pts[:, 0], pts[:, 1], s=1.5, alpha=0.35, color=color, linewidths=0,
               rasterized=True)
    ax.set_xlim(-LIMIT, LIMIT)
    ax.set_ylim(-LIMIT, LIMIT)
    ax.set_aspect("equal")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)


def _contours(ax, mixture: GaussianMixture) -> None:
    g = torch.linspace(-LIMIT, LIMIT, 160, dtype=torch.float64)
    xx, yy = torch.meshgrid(g, g, indexing="xy")
    logp = mixture.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], -1)).reshape(xx.shape)
    levels = torch.quantile(logp.flatten(), torch.tensor([0.85, 0.93, 0.98],
                                                          dtype=torch.float64)).tolist()
    ax.contour(xx.numpy(), yy.numpy(), logp.numpy(), levels=levels, colors="0.25",
               linewidths=0.6, alpha=0.7)


def _trajectory(model: Any, sched: Any, sampler: str, steps: int, noise: torch.Tensor,
                seed: int) -> tuple[torch.Tensor, dict[str, Any], list[tuple[int, float, Any]]]:
    """``(samples, sampler stats, [(step k, time, state after k steps)])`` of the reverse
    process from ``noise`` (N, 2), at about COLUMNS steps from noise to samples."""
    stats: dict[str, Any] = {}
    samples = sample(model, noise, schedule=sched, prediction=PREDICTION, sampler=sampler,
                     steps=steps, stats=stats,
                     generator=torch.Generator().manual_seed(seed + 1))  # (N, 2)
    ts = timesteps(sched, steps, stats["grid"]).tolist()  # steps + 1 times, ..., t_min, 0
    # after k sampler steps the state sits at ts[k]; the last step denoises to t = 0. Re-running
    # the sampler on the first k + 1 grid times with the same noise and seed reproduces the
    # trajectory exactly (multistep history and randomness included).
    shown = sorted({round(k) for k in torch.linspace(0, steps, COLUMNS).tolist()})
    states = []
    for k in shown:
        if k == steps:
            x = samples
        elif k == 0:
            x = sched.prior_std * noise
        else:
            x = SAMPLERS[sampler](Denoiser(model, sched, PREDICTION, noise.dtype),
                                  sched.prior_std * noise, ts[:k + 1],
                                  generator=torch.Generator().manual_seed(seed + 1))
        states.append((k, ts[k], x))
    return samples, stats, states


def _unit(sched: Any, x: torch.Tensor, t: float) -> torch.Tensor:
    """x_t / sqrt(alpha^2 + sigma^2): VE / flow states on the data's scale (VP: x_t)."""
    a, s = sched.alpha_sigma(torch.tensor(t, dtype=torch.float64))
    return x / torch.sqrt(a * a + s * s)


def _forward_row(axes: Any, sched: Any, data: torch.Tensor, eps: torch.Tensor,
                 times: list[float]) -> None:
    """The top row: the data noised by the forward process to each of ``times``."""
    n = data.shape[0]
    for ax, t in zip(axes, times):
        t_in = min(t, sched.t_max)  # a schedule is defined up to its t_max
        xt = add_noise(data, torch.full((n,), t_in, dtype=torch.float64), sched, eps)
        snr = float(torch.exp(2 * sched.log_snr(torch.tensor(t_in, dtype=torch.float64))))
        label = "t = 0: data" if t == 0 else f"t = {t_in:.3g}, SNR {snr:.2g}"
        _scatter(ax, _unit(sched, xt, t_in), label, "tab:blue")


def _figure(sched: Any, mixture: GaussianMixture, data: torch.Tensor, eps: torch.Tensor,
            states: list[tuple[int, float, Any]], title: str, sampler: str, steps: int) -> Any:
    """Two rows: forward (data noised to the trajectory's times, mirrored, so column j of the
    top row is the exact marginal the state below it in the mirrored column should resemble)
    and reverse (the sampler's states), with the mixture's contours on the samples."""
    from matplotlib.figure import Figure

    cols = len(states)  # COLUMNS, or fewer for a run of fewer steps
    fig = Figure(figsize=(2.1 * max(cols, 4), 4.9), dpi=110, layout="constrained")
    axes = fig.subplots(2, cols, squeeze=False)
    _forward_row(axes[0], sched, data, eps, [t for _, t, _ in reversed(states)])
    for ax, (k, t, x) in zip(axes[1], states):
        label = f"step {k}/{steps}, t = {t:.3g}" if k < steps else f"step {k}/{steps}: samples"
        _scatter(ax, _unit(sched, x, t), label, "tab:orange")
    _contours(axes[1][cols - 1], mixture)
    note = "" if isinstance(sched, VPSchedule) else "\n(x_t / √(α² + σ²))"
    axes[0][0].set_ylabel("forward: noising" + note, fontsize=10)
    axes[1][0].set_ylabel(f"reverse: {sampler}" + note, fontsize=10)
    fig.suptitle(title, fontsize=10)
    return fig


def run_demo(out_dir: str | Path = "demo_out", n: int = 2000, steps: int = 20,
             sampler: str = "dpmpp_2m", seed: int = 0, schedule: str = "linear",
             verbose: bool = True) -> list[Path]:
    """Write ``demo.png`` and ``demo.json`` into ``out_dir``; return their paths.

    Noises samples of a 2D spiral mixture with ``schedule`` and draws ``n`` samples back with
    ``sampler`` in ``steps`` steps, using the mixture's exact denoiser. Prints a one-line
    summary of the samples' moment errors against the true mixture.
    """
    if not isinstance(n, int) or n < 2:
        raise UserError(f"n must be an integer >= 2 (the number of samples), got {n!r}")
    sched = get_schedule(schedule)
    mixture = spiral_mixture()
    model = mixture.model(sched, PREDICTION)
    out_dir = Path(out_dir)
    noise = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed),
                        dtype=torch.float64)  # (N, 2)
    samples, stats, states = _trajectory(model, sched, sampler, steps, noise, seed)
    data, _ = mixture.sample(n, generator=torch.Generator().manual_seed(seed + 2))  # (N, 2)
    eps = torch.randn(n, 2, generator=torch.Generator().manual_seed(seed + 3),
                      dtype=torch.float64)
    errors = moment_errors(samples, mixture)
    floor = moment_errors(data, mixture)  # the same numbers for n true samples
    title = (f"omnidiff demo — {schedule} schedule, exact mixture denoiser, {sampler} with "
             f"{steps} steps ({stats['nfe']} NFE)\nmean error {errors['mean_error']:.3f}, "
             f"covariance error {errors['cov_rel_error']:.1%}")
    png = atomic_save_figure(_figure(sched, mixture, data, eps, states, title, sampler, steps),
                             out_dir / "demo.png")
    report = {
        "sampler": sampler, "steps": steps, "nfe": stats["nfe"], "grid": stats["grid"],
        "schedule": sched.config(), "n": n, "seed": seed, **errors,
        "monte_carlo_floor": floor,  # the same errors for n samples of the true mixture
        "true_mean": mixture.mean().tolist(), "true_cov": mixture.covariance().tolist(),
        "sample_mean": samples.mean(0).tolist(), "sample_cov": torch.cov(samples.T).tolist(),
        "figure": png.name,
    }
    js = atomic_write_json(report, out_dir / "demo.json")
    if verbose:
        print(f"demo: {sampler}, {steps} steps ({stats['nfe']} NFE), {n} samples: mean error "
              f"{errors['mean_error']:.3f}, covariance error {errors['cov_rel_error']:.1%}, "
              f"mode-weight error {errors['mode_weight_error']:.3f} (true samples: "
              f"{floor['mean_error']:.3f}, {floor['cov_rel_error']:.1%}, "
              f"{floor['mode_weight_error']:.3f}) -> {png}")
    return [png, js]


