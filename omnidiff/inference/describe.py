"""What a model is, in words and in one picture: ``omnidiff info checkpoint=...``.

:func:`describe` lists a loaded :class:`~omnidiff.inference.pipeline.Pipeline`'s facts (domain,
shapes, size, condition and class names, schedule, prediction, default sampler and its times,
calibrated grids, training); :func:`schedule_figure` draws its noise schedule — alpha(t) and
sigma(t), and the log-SNR with the times a sampler steps through marked on it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["describe", "schedule_figure"]


def _schedule_text(pipe: Any) -> str:
    sched = pipe.model.schedule
    t_lo, t_hi = float(sched.t_min), float(sched.t_max)
    lam = sched.log_snr(torch.tensor([t_lo, t_hi], dtype=torch.float64)).tolist()
    return (f"{sched!r}; t in [{t_lo:g}, {t_hi:g}], log-SNR {lam[0]:.2f} .. {lam[1]:.2f}, "
            f"starting noise std {sched.prior_std:.3g}")


def _times_text(ts: torch.Tensor) -> str:
    shown = [f"{t:.3f}" for t in ts.tolist()]
    return ", ".join(shown if len(shown) <= 12 else shown[:6] + ["..."] + shown[-3:])


def describe(pipe: Any) -> list[tuple[str, str]]:
    """``(fact, value)`` rows describing the model, in reading order."""
    info, spec = pipe.info, pipe.cond_spec
    params = sum(p.numel() for p in pipe.model.parameters())
    rows = [("domain", pipe.domain_name),
            ("samples", " x ".join(map(str, pipe.sample_shape))
             + ("" if tuple(pipe.sample_shape) == tuple(pipe.event_shape) else
                f" (decoded from latents {' x '.join(map(str, pipe.event_shape))})")),
            ("network", f"{type(pipe.model.net).__name__}, {params / 1e6:.3g}M parameters"),
            ("condition", spec.describe() if spec.conditional else "none (unconditional)")]
    if pipe.class_names:
        rows.append(("classes", ", ".join(pipe.class_names)))
    rows += [("schedule", _schedule_text(pipe)), ("prediction", str(pipe.model.prediction))]
    sampler = pipe.default_sampler
    ts, label = pipe.sampling_times()
    rows.append(("sampler", f"{sampler['name']}, {len(ts) - 1} steps on the {label} grid "
                            f"(t = {_times_text(ts)})"))
    for key, entry in sorted((info.get("grids") or {}).items()):
        rows.append(("calibrated grid", f"{key}: t = {_times_text(torch.tensor(entry['times']))}"))
    if info.get("consistency"):
        c = info["consistency"]
        rows.append(("distilled", f"consistency student ({c.get('method', 'cd')}), "
                                  f"{c.get('levels', '?')} noise levels"))
    trained = [f"{info['global_step']} steps" if info.get("global_step") is not None else None,
               "EMA weights" if info.get("ema") else None,
               f"omnidiff {info['omnidiff_version']}" if info.get("omnidiff_version") else None]
    rows.append(("trained", ", ".join(t for t in trained if t) or "unknown"))
    data = info.get("data") or {}
    if data.get("name"):
        rows.append(("data", ", ".join(f"{k}={data[k]}" for k in ("name", "root", "path")
                                       if data.get(k) is not None)))
    return rows


def schedule_figure(pipe: Any, sampler: str | None = None, steps: int | None = None,
                    **options: Any) -> Any:
    """A ``Figure``: alpha(t) and sigma(t) (log scale) on the left; the log-SNR on the right
    with the times ``generate(sampler=, steps=, **options)`` steps through marked on it."""
    from matplotlib.figure import Figure

    sched = pipe.model.schedule
    t = torch.linspace(float(sched.t_min), float(sched.t_max), 400, dtype=torch.float64)
    a, s = sched.alpha_sigma(t)
    lam = sched.log_snr(t)
    ts, label = pipe.sampling_times(sampler, steps, **options)
    inner = ts[:-1]  # the final 0 is clean data, off the log-SNR axis
    fig = Figure(figsize=(10, 4), dpi=120)
    left, right = fig.subplots(1, 2)
    left.plot(t, a, label="alpha(t)", color="tab:blue")
    left.plot(t, s, label="sigma(t)", color="tab:orange")
    left.set_yscale("log")
    left.set_xlabel("t")
    left.set_title(f"{sched!r}")
    left.legend(loc="best", fontsize=8)
    left.grid(alpha=0.3, which="both")
    right.plot(t, lam, color="tab:green", label="log-SNR = log(alpha / sigma)")
    right.plot(inner, sched.log_snr(inner), "o", color="black", ms=4,
               label=f"{sampler or pipe.default_sampler['name']}: {len(ts) - 1} steps, "
                     f"{label} grid")
    for x in inner.tolist():
        right.axvline(x, color="black", alpha=0.15, lw=0.8)
    right.set_xlabel("t")
    right.set_ylabel("log-SNR")
    right.set_title(f"{pipe.domain_name} model, {pipe.model.prediction} prediction")
    right.legend(loc="upper right", fontsize=8)
    right.grid(alpha=0.3)
    fig.tight_layout()
    return fig
