"""Audio files: reading (soundfile + torchaudio resampling), writing WAV atomically, finding them.

* :func:`read_audio` returns mono float32 ``(1, samples)`` at the asked rate: several channels
  are averaged, another sample rate is resampled (``torchaudio.functional.resample``); an
  unreadable or empty file fails with one line naming it.
* :func:`write_wav` writes ``(1, samples)`` or ``(samples,)`` in [-1, 1] as 16-bit PCM (values
  clamped), through :func:`omnidiff.io.atomic_path`, so no half-written file is left.
* :func:`find_audio` lists the WAV / FLAC / OGG files of a folder, labelled by sub-folder when
  every file lies in one.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from omnidiff.errors import DataError
from omnidiff.io import atomic_path

__all__ = ["AUDIO_SUFFIXES", "AudioFileError", "read_audio", "write_wav", "find_audio"]

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


class AudioFileError(DataError):
    """An audio file or folder that cannot be used (one line, naming the fix)."""


def read_audio(path: str | os.PathLike, sample_rate: int) -> torch.Tensor:
    """``path`` -> mono float32 ``(1, samples)`` at ``sample_rate``."""
    import soundfile

    path = Path(path)
    if not path.is_file():
        raise AudioFileError(f"{path} is not a file")
    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, ch)
    except Exception as exc:  # soundfile raises its own LibsndfileError / RuntimeError
        raise AudioFileError(f"cannot read {path} as audio ({exc}); use WAV, FLAC or OGG "
                             "files") from None
    if data.shape[0] == 0:
        raise AudioFileError(f"{path} holds no samples")
    wav = torch.from_numpy(np.ascontiguousarray(data.mean(axis=1)))[None]  # (1, T), mono
    if rate != sample_rate:
        import torchaudio

        wav = torchaudio.functional.resample(wav, int(rate), int(sample_rate))
    return wav.contiguous()


def write_wav(wav: torch.Tensor, path: str | os.PathLike, sample_rate: int) -> Path:
    """Write one waveform ``(1, samples)`` / ``(samples,)`` as 16-bit PCM WAV, atomically."""
    import soundfile

    data = wav.detach().float().cpu().reshape(-1).clamp(-1.0, 1.0).numpy()
    path = Path(path)
    with atomic_path(path) as tmp:
        soundfile.write(str(tmp), data, int(sample_rate), subtype="PCM_16", format="WAV")
    return path


def conversion_note(files: list[Path], sample_rate: int, clip_samples: int | None,
                    limit: int = 2000) -> str | None:
    """One line saying what reading ``files`` at ``sample_rate`` changes (resampled, mixed
    down to mono, cut or padded to ``clip_samples``; None: crops, no fixed length) and how
    to keep it; None when nothing changes. Reads the headers of at most ``limit`` files."""
    import soundfile

    heads = [soundfile.info(str(f)) for f in files[:limit]]
    rates = sorted({int(h.samplerate) for h in heads})
    channels = max(int(h.channels) for h in heads)
    lengths = [h.frames / h.samplerate for h in heads]
    did = []
    if rates != [int(sample_rate)]:
        did.append(f"resampled from {' / '.join(f'{r} Hz' for r in rates)} to {sample_rate} Hz"
                   " (data.sample_rate)")
    if channels > 1:
        did.append(f"mixed down from {channels} channels to mono")
    if clip_samples is not None:
        clip = clip_samples / sample_rate
        longer = sum(x > clip + 1e-6 for x in lengths)
        shorter = sum(x < clip - 1e-6 for x in lengths)
        if longer:
            did.append(f"{longer} cut to their first {clip:g} s (data.clip_seconds)")
        if shorter:
            did.append(f"{shorter} padded with silence to {clip:g} s")
    if not did:
        return None
    span = f"{min(lengths):.2g}-{max(lengths):.2g} s" if lengths else "?"
    return (f"omnidiff: {len(files)} audio files ({span}): " + "; ".join(did)
            + ". Set those options to keep more of them")


def find_audio(root: str | os.PathLike) -> tuple[list[Path], list[int] | None, list[str]]:
    """Audio files under ``root`` (recursively, sorted), their labels and class names.

    Labels come from the first-level sub-folder names when every file lies in a sub-folder
    (``root/<class>/...``, as SC09's digit folders); otherwise ``None`` and no classes.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise AudioFileError(f"data.root={root} is not a folder; point it at a folder of "
                             f"{' / '.join(s[1:].upper() for s in AUDIO_SUFFIXES)} files")
    files = sorted(p for p in root.rglob("*")
                   if p.is_file() and p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise AudioFileError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root}; "
                             "point data.root at a folder of recordings")
    parts = [p.relative_to(root).parts for p in files]
    if all(len(q) > 1 for q in parts):
        classes = sorted({q[0] for q in parts})
        index = {c: i for i, c in enumerate(classes)}
        return files, [index[q[0]] for q in parts], classes
    return files, None, []
