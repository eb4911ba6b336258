"""Audio artifacts: WAV files, a spectrogram grid to look at before listening, raw tensors.

``save_artifacts(samples, out_dir, cond=None, prefix="samples", data=None)`` writes

* ``<prefix>_wav/<i>_<what>.wav`` — the first :data:`MAX_WAVS` clips, 16-bit PCM at the data's
  sample rate (``what``: the class name, ``resynth`` for a vocoder, ``sample`` otherwise);
* ``<prefix>.png`` — log-mel images of the first clips, titled with their class or prompt
  (``captions``); for a vocoder, each re-synthesis beside the spectrogram it was given;
* ``<prefix>.pt`` (``{"samples", "cond"}``) and ``<prefix>.npy`` (the samples, float32).

Everything goes through :mod:`omnidiff.io`'s atomic writers.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import torch

from omnidiff.io import atomic_save_figure, save_raw

from .files import write_wav
from .mel import MelSpec
from .metrics import _labels_of, _mel_of

__all__ = ["save_artifacts", "MAX_WAVS"]

MAX_WAVS = 64
MAX_PANELS = 16


def _file_name(text: str) -> str:
    """A prompt as part of a file name: letters, digits and '-', at most 40 characters."""
    name = "".join(c if c.isalnum() else "-" for c in text.replace("#", "sharp"))
    return "-".join(filter(None, name.split("-")))[:40] or "prompt"


def _names(n: int, cond: Any, data: Any, class_names: Any = None) -> list[str]:
    labels = _labels_of(cond)
    if labels is not None:
        classes = list(class_names or getattr(data, "classes", []) or [])
        return [classes[int(k)] if int(k) < len(classes) else f"class{int(k)}"
                for k in labels[:n]]
    return ["resynth" if _mel_of(cond) is not None else "sample"] * n


def _panels(samples: torch.Tensor, cond: Any, names: list[str], mel_spec: MelSpec
            ) -> list[tuple[str, torch.Tensor]]:
    """(title, normalised log-mel (M, F)) per panel."""
    source = _mel_of(cond)
    if source is not None:  # a vocoder: the given spectrogram, then its re-synthesis
        k = min(samples.shape[0], MAX_PANELS // 2)
        made = mel_spec(samples[:k, 0])
        out = []
        for i in range(k):
            out += [(f"#{i} given", source[i].float()), (f"#{i} re-synthesised", made[i])]
        return out
    k = min(samples.shape[0], MAX_PANELS)
    made = mel_spec(samples[:k, 0])
    return [(f"#{i} {names[i]}", made[i]) for i in range(k)]


def _gaps(known: torch.Tensor, sample_rate: int) -> list[tuple[float, float]]:
    """The filled-in spans of one waveform's mask (T,) bool, in seconds."""
    edges = torch.diff(torch.cat([known.new_ones(1), known, known.new_ones(1)]).int())
    starts = torch.nonzero(edges == -1).flatten()
    ends = torch.nonzero(edges == 1).flatten()
    return [(float(a) / sample_rate, float(b) / sample_rate) for a, b in zip(starts, ends)]


def _figure(panels: list[tuple[str, torch.Tensor]], sample_rate: int, hop: int,
            gaps: list[list[tuple[float, float]]] | None = None):
    from matplotlib.figure import Figure

    cols = 4 if len(panels) > 2 else len(panels)
    rows = -(-len(panels) // cols)
    fig = Figure(figsize=(3.0 * cols, 2.2 * rows), layout="constrained")
    for j, (title, mel) in enumerate(panels):
        ax = fig.add_subplot(rows, cols, j + 1)
        seconds = mel.shape[-1] * hop / sample_rate
        ax.imshow(mel.numpy(), origin="lower", aspect="auto", vmin=0.0, vmax=1.0,
                  cmap="magma", extent=(0.0, seconds, 0, mel.shape[0]))
        for a, b in (gaps[j] if gaps and j < len(gaps) else []):  # filled in: shaded
            ax.axvspan(a, b, color="cyan", alpha=0.3, lw=0)
        ax.set_title(textwrap.fill(title, 34), fontsize=8)
        ax.set_xlabel("s", fontsize=7)
        ax.set_ylabel("mel bin", fontsize=7)
        ax.tick_params(labelsize=6)
    return fig


def save_artifacts(samples: torch.Tensor, out_dir: str | Path, cond: Any = None,
                   prefix: str = "samples", data: Any = None,
                   captions: list[str] | None = None,
                   known: torch.Tensor | None = None,
                   class_names: list[str] | None = None) -> list[Path]:
    """Write WAVs, the spectrogram PNG and the raw tensors of ``samples: (N, 1, T)``;
    ``captions`` (one per sample) title the panels and name the WAVs, as class names
    (``class_names``, else the data's ``classes``) do for labels. ``known`` (N, 1, T)
    bool, for imputed clips: the filled-in spans are shaded on the spectrograms."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sample_rate = int(getattr(data, "sample_rate", 8000))
    mel_spec = getattr(data, "mel", None) or MelSpec(sample_rate)
    x = torch.nan_to_num(samples.detach().float().cpu(), 0.0, 0.0, 0.0).clamp(-1.0, 1.0)
    names = (list(captions) if captions is not None
             else _names(x.shape[0], cond, data, class_names))
    files: list[Path] = []
    wav_dir = out_dir / f"{prefix}_wav"
    for i in range(min(x.shape[0], MAX_WAVS)):
        stem = f"{i:03d}_{_file_name(names[i]) if captions is not None else names[i]}"
        files.append(write_wav(x[i], wav_dir / f"{stem}.wav", sample_rate))
    gaps = None if known is None else [_gaps(k[0].cpu(), sample_rate) for k in known]
    if gaps and _mel_of(cond) is not None:  # a vocoder's panels come in pairs per clip
        gaps = [g for g in gaps for _ in (0, 1)]
    fig = _figure(_panels(x, cond, names, mel_spec), sample_rate, mel_spec.hop, gaps)
    files.append(atomic_save_figure(fig, out_dir / f"{prefix}.png", dpi=100))
    return files + save_raw(x, cond, out_dir, prefix)
