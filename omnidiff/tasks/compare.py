"""Comparing runs: one table and one figure over run folders, sweeps and sampler sweeps.

``omnidiff compare PATH... [out=DIR] [metric=NAME]`` (and the end of every sweep) writes::

    summary.csv   a row per job or run: its parameters, status, steps, training seconds,
                  first and last loss, and final metrics (sampling runs: NFE and seconds)
    summary.md    the same as a Markdown table, the best value of the main metric in bold
    summary.png   training runs: the loss curves overlaid and the main metric per run;
                  sampling runs: the main metric against NFE, a line per sampler

A PATH is a run folder (``metrics.json``: ``omnidiff train``, or ``omnidiff sample
metrics=true``), a sweep folder (``sweep.json``), or a folder holding either (``runs/points2d``
compares every run of the recipe). A sweep's jobs are described by their swept overrides;
other runs by the settings in which their configs differ. The main metric is ``metric=``, else
the domain's ``main_metric`` (an optional attribute of a domain plugin), else the first metric.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from omnidiff.errors import UsageError
from omnidiff.io import atomic_save_figure, atomic_write_text, read_json
from omnidiff.plots import read_csv_log, smooth
from omnidiff.plugins.contract import main_metric_names
from omnidiff.plugins.registry import get_domain
from omnidiff.training.run_folder import read_manifest

__all__ = ["Entry", "collect", "main_metric", "higher_is_better", "best_of", "table", "markdown",
           "summary_figure", "write_comparison"]

# bookkeeping columns: (column, the key in metrics.json)
_BOOK = (("train_steps", "global_step"), ("train_s", "train_seconds"), ("eval_s", "eval_seconds"),
         ("loss_first", "loss_first"),
         ("loss_last", "loss_last"), ("nfe", "nfe"), ("network_evals", "network_evals"),
         ("sample_s", "sample_seconds"))
_NOT_MAIN = ("step", "sample_seconds", "rtf", "finite_frac", "recon_seconds")
_NOT_SETTINGS = ("out", "resume", "overwrite")
_MAX_DIFFERENCES = 12  # settings shown for runs compared outside a sweep


@dataclass
class Entry:
    """One compared run: its name, folder, parameters, status and ``metrics.json``."""

    name: str
    path: Path
    params: dict[str, Any] = field(default_factory=dict)
    status: str = "done"
    summary: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    swept: bool = False  # params are a sweep's overrides (else: settings that differ)
    command: str | None = None  # a sweep's: train | sample

    @property
    def kind(self) -> str:
        """``train`` (a run of omnidiff train) or ``sample`` (omnidiff sample metrics=true)."""
        if self.command in ("train", "sample"):
            return self.command
        return "sample" if "metrics" in self.summary and "final" not in self.summary else "train"

    @property
    def metrics(self) -> dict[str, float]:
        values = self.summary.get("metrics" if self.kind == "sample" else "final") or {}
        return {k: float(v) for k, v in values.items()
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool)}

    @property
    def label(self) -> str:
        """A sweep's job by its overrides; another run by its folder's name, as the table's
        first column names it (the settings that differ are the table's other columns)."""
        text = (", ".join(f"{k}={v}" for k, v in self.params.items()) if self.swept
                else "") or self.name
        return text if len(text) <= 40 else text[:39] + "…"


def _sweep_entries(folder: Path, manifest: dict[str, Any]) -> list[Entry]:
    out = []
    for job in manifest.get("jobs", []):
        path = folder / str(job.get("name"))
        summary = read_json(path / "metrics.json") or {}
        status = str(job.get("status") or "pending")
        if summary and status in ("pending", "stopped", "running", "submitted"):
            status = "done"
        params = dict(o.partition("=")[::2] for o in job.get("overrides", []))
        out.append(Entry(str(job.get("name")), path, params, status, summary, job.get("error"),
                         swept=True, command=manifest.get("command")))
    return out


def collect(paths: Sequence[str | Path]) -> list[Entry]:
    """The entries of run folders, sweep folders and folders of either (see the module)."""
    entries: list[Entry] = []
    for p in map(Path, paths):
        manifest = read_manifest(p)
        if manifest is not None:
            entries += _sweep_entries(p, manifest)
        elif (p / "metrics.json").is_file():
            entries.append(Entry(p.name, p, summary=read_json(p / "metrics.json") or {}))
        elif p.is_dir() and (inner := sorted(q for q in p.iterdir() if q.is_dir() and (
                (q / "metrics.json").is_file() or read_manifest(q) is not None))):
            entries += collect(inner)
        else:
            raise UsageError(f"{p} is not a run folder (metrics.json), a sweep folder "
                             "(sweep.json) or a folder holding them; pass the folders that "
                             "omnidiff train / omnidiff sample metrics=true wrote")
    _unique_names(entries)
    _describe_by_differences([e for e in entries if not e.swept])
    return entries


def _unique_names(entries: list[Entry]) -> None:
    names = [e.name for e in entries]
    for e in entries:
        if names.count(e.name) > 1:
            e.name = f"{e.path.parent.name}/{e.path.name}"


def _flat(obj: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(obj, dict):
        out: dict[str, Any] = {}
        for k, v in obj.items():
            out.update(_flat(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: obj}


def _settings(e: Entry) -> dict[str, Any]:
    """A run's settings: its config.yaml (training) or its sampling record."""
    import yaml

    if e.kind == "sample":
        return {k: e.summary.get(k) for k in ("checkpoint", "sampler", "steps", "grid",
                                              "guidance", "seed", "n")}
    try:
        cfg = yaml.safe_load((e.path / "config.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        cfg = {}
    return {k: v for k, v in _flat(cfg).items() if k.partition(".")[0] not in _NOT_SETTINGS}


def _describe_by_differences(entries: list[Entry]) -> None:
    """Give runs compared outside a sweep the settings in which they differ (recipe first)."""
    if len(entries) < 2:
        return
    settings = [_settings(e) for e in entries]
    keys = sorted({k for s in settings for k in s}, key=lambda k: (k != "recipe", k))
    differ = [k for k in keys if len({json.dumps(s.get(k), sort_keys=True, default=str)
                                      for s in settings}) > 1][:_MAX_DIFFERENCES]
    for e, s in zip(entries, settings):
        e.params = {k: s.get(k) for k in differ}


# ---- the main metric ----------------------------------------------------------------------

def higher_is_better(name: str) -> bool:
    """Metrics are lower-is-better unless the name says otherwise (accuracies, coverage,
    precision, recall, fractions, PSNR, confidences)."""
    return bool(re.search(r"(^|_)(acc|coverage|precision|recall|frac|psnr|conf)(_|$)", name))


def best_of(values: Sequence[float], metric: str) -> float | None:
    """The best of ``values`` of ``metric`` (None when there are none)."""
    return ((max if higher_is_better(metric) else min)(values)) if values else None


def _metric_label(metric: str) -> str:
    return f"{metric} ({'higher' if higher_is_better(metric) else 'lower'} is better)"


def _domain_preference(domain: str | None) -> list[str]:
    if not domain:
        return []
    try:
        return main_metric_names(get_domain(domain))
    except Exception:  # an uninstalled or broken plugin: fall back to the first metric
        return []


def main_metric(entries: Sequence[Entry], metric: str | None = None) -> str | None:
    """``metric`` (it must be among the entries' metrics), else the first of the domain's
    ``main_metric`` names present, else the first metric that is not bookkeeping."""
    present = list(dict.fromkeys(k for e in entries for k in e.metrics))
    if metric:
        if metric not in present:
            raise UsageError(f"metric={metric!r} is not among these runs' metrics: "
                             f"{', '.join(present) or 'none'}")
        return metric
    for e in entries:
        for name in _domain_preference(e.summary.get("domain")):
            if name in present:
                return name
    return next((k for k in present if k not in _NOT_MAIN), present[0] if present else None)


# ---- the table ----------------------------------------------------------------------------

def table(entries: Sequence[Entry], metric: str | None) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)``: name, parameters, status, bookkeeping, then metrics (main first)."""
    params = list(dict.fromkeys(k for e in entries for k in e.params))
    book = [(col, key) for col, key in _BOOK if any(key in e.summary for e in entries)]
    metrics = list(dict.fromkeys(([metric] if metric else [])
                                 + [k for e in entries for k in e.metrics]))
    header = ["name", *params, "status", *(c for c, _ in book), *metrics]
    rows = []
    for e in entries:
        status = e.status if not e.error else f"{e.status}: {e.error}"
        rows.append([e.name, *(e.params.get(k) for k in params), status,
                     *(e.summary.get(key) for _, key in book),
                     *(e.metrics.get(k) for k in metrics)])
    return header, rows


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown(header: list[str], rows: list[list[Any]], metric: str | None = None) -> str:
    """A Markdown table; the best value of ``metric`` is in bold."""
    j = header.index(metric) if metric in header else None
    best = None if j is None else best_of(
        [r[j] for r in rows if isinstance(r[j], (int, float))], str(metric))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        cells = [_cell(v) for v in r]
        if best is not None and r[j] == best:
            cells[j] = f"**{cells[j]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_text(header: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


# ---- the figure ---------------------------------------------------------------------------

def _wide(values: Sequence[float]) -> bool:
    """Whether the values are positive and span more than 10x (a log axis shows them)."""
    return bool(values) and min(values) > 0 and max(values) / min(values) > 10


def _log_scale_if_wide(ax: Any, values: Sequence[float], axis: str) -> None:
    if _wide(values):
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _loss_panel(ax: Any, entries: Sequence[Entry]) -> None:
    drawn: list[float] = []
    for e in entries:
        log = e.path / "logs" / "metrics.csv"
        steps, losses = read_csv_log(log, "train/loss") if log.is_file() else ([], [])
        if losses:
            curve = smooth(losses, max(5, len(losses) // 20))
            ax.plot(steps, curve, lw=1.4, label=e.label)
            drawn += curve
    _log_scale_if_wide(ax, drawn, "y")
    ax.set(xlabel="step", ylabel="train/loss (smoothed)", title="loss")
    ax.grid(alpha=0.3)
    if ax.lines:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)


def _metric_panel(ax: Any, entries: Sequence[Entry], metric: str) -> None:
    """Horizontal bars of the final ``metric`` per run, the best in green; a run without it
    (failed, still pending) shows its status."""
    values = [e.metrics.get(metric) for e in entries]
    found = [v for v in values if v is not None]
    best = best_of(found, metric)
    left = min(found) / 2 if _wide(found) else 0.0  # bars start here (a log axis has no 0)
    for y, (v, e) in enumerate(zip(values, entries)):
        if v is None:  # red for a failed run only; a finished one just lacks this metric
            why = e.status if e.status != "done" else f"no {metric}"
            ax.text(left, y, f" {why}", va="center", fontsize=7,
                    color="tab:red" if e.status == "failed" else "tab:gray")
            continue
        ax.barh(y, v - left, left=left, color="tab:green" if v == best else "tab:blue")
        ax.text(v, y, f" {v:.4g}", va="center", fontsize=7)
    _log_scale_if_wide(ax, found, "x")
    ax.set_yticks(range(len(entries)), [e.label for e in entries], fontsize=7)
    ax.set_ylim(len(entries) - 0.5, -0.5)  # the first run on top
    ax.set(xlabel=_metric_label(metric), title=f"final {metric}")
    ax.grid(alpha=0.3, axis="x")


def _nfe_panel(ax: Any, entries: Sequence[Entry], metric: str, title: str) -> None:
    series: dict[str, list[tuple[float, float]]] = {}
    for e in entries:
        v, nfe = e.metrics.get(metric), e.summary.get("nfe")
        if v is None or nfe is None:
            continue
        label = ", ".join(f"{k}={p}" for k, p in e.params.items()
                          if k not in ("steps", "guidance")) or str(e.summary.get("sampler"))
        series.setdefault(label, []).append((float(nfe), v))
    for label, points in series.items():
        points.sort()
        ax.plot(*zip(*points), "o-", lw=1.4, ms=4, label=label)
    _log_scale_if_wide(ax, [v for pts in series.values() for _, v in pts], "y")
    ax.set(xlabel="NFE (denoiser calls per sample)", ylabel=_metric_label(metric), title=title)
    ax.grid(alpha=0.3)
    if series:
        ax.legend(fontsize=7, loc="best", framealpha=0.8)


def summary_figure(entries: Sequence[Entry], metric: str | None) -> Any:
    """A ``Figure``: training runs' loss curves and final ``metric``; sampling runs' ``metric``
    against NFE (a panel per guidance scale when it varies). None when there is nothing to
    draw."""
    from matplotlib.figure import Figure

    train = [e for e in entries if e.kind == "train"]
    sample = [e for e in entries if e.kind == "sample" and e.summary.get("nfe") is not None]
    panels: list[Any] = []
    if train:
        panels.append(lambda ax: _loss_panel(ax, train))
        if metric:
            panels.append(lambda ax: _metric_panel(ax, train, metric))
    n_nfe = 0
    if sample and metric:
        scales = list(dict.fromkeys(e.summary.get("guidance") for e in sample))
        for g in scales:
            group = [e for e in sample if e.summary.get("guidance") == g]
            title = f"{metric} against NFE" + (f", guidance={g}" if len(scales) > 1 else "")
            panels.append(lambda ax, group=group, title=title: _nfe_panel(ax, group, metric,
                                                                          title))
        n_nfe = len(scales)
    if not panels:
        return None
    fig = Figure(figsize=(5.6 * len(panels), 4.2), dpi=110)
    axes = [fig.add_subplot(1, len(panels), i) for i in range(1, len(panels) + 1)]
    for draw, ax in zip(panels, axes):
        draw(ax)
    nfe_axes = axes[len(axes) - n_nfe:] if n_nfe > 1 else []
    if nfe_axes:  # one metric scale across the guidance panels
        lows, highs = zip(*(ax.get_ylim() for ax in nfe_axes))
        for ax in nfe_axes:
            ax.set_ylim(min(lows), max(highs))
    fig.tight_layout()
    return fig


def write_comparison(paths: Sequence[str | Path], out: str | Path,
                     metric: str | None = None) -> tuple[str, list[Path]]:
    """Write ``summary.csv``, ``summary.md`` and ``summary.png`` of ``paths`` into ``out``
    (atomically); returns the Markdown table and the files written."""
    entries = collect(paths)
    if not entries:
        raise UsageError(f"nothing to compare in {', '.join(map(str, paths))}")
    metric = main_metric(entries, metric)
    header, rows = table(entries, metric)
    out = Path(out)
    text = markdown(header, rows, metric)
    files = [atomic_write_text(_csv_text(header, rows), out / "summary.csv"),
             atomic_write_text(text, out / "summary.md")]
    fig = summary_figure(entries, metric)
    if fig is not None:
        files.append(atomic_save_figure(fig, out / "summary.png"))
    return text, files
