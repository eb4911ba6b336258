"""Audio data: one ``LightningDataModule`` for generated tones and for folders of recordings.

Sources (``name``):

* ``tones`` (default, offline): clips of ``clip_seconds`` at ``sample_rate`` of the 12
  semitones C4..B4 (:mod:`.tones`); ``train_size`` training clips, a separate seeded stream for
  validation and the held-out reference.
* ``text_tones`` (offline, ``cond=text``): tones with a set pitch, loudness, decay and timbre,
  captioned in varied word orders, some combinations held out (:mod:`.text_data`);
* ``folder``: the WAV / FLAC / OGG files under ``root`` (SC09, LJSpeech, your own), read with
  soundfile, averaged to mono and resampled to ``sample_rate``; labelled by sub-folder name when
  every file lies in one (``root/<class>/*.wav``). A fixed ``holdout`` fraction of the files is
  held out. Files are read when an item is fetched (a speech corpus need not fit in memory).

What a sample is given (``cond``): ``label`` (class-conditional), ``none`` (unconditional),
``mel`` (a vocoder: the normalised log-mel spectrogram of :mod:`.mel`, settings ``mel``),
``label+mel``, or ``text`` (a prompt ``{"text": sequence}``: ``text_tones``, or a folder with
``metadata.jsonl`` / ``.txt`` captions; ``text``: the text encoder's settings,
:data:`omnidiff.text.prompts.TEXT_DEFAULTS`). Label and unconditional clips have a fixed
length (``clip_seconds``: a longer file is cut, a shorter one padded with silence; a folder's
run says once what it resampled, mixed down, cut or padded); vocoder clips are ``crop_frames`` frames of
``hop_length`` samples (random crops of longer files or tones; by default the whole clip).
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from omnidiff.core.conditions import LabelCond, NamedCond, NoCond, TensorCond
from omnidiff.plugins.data import (
    TensorDictDataset,
    collate_batch,
    eval_loader,
    mask_along,
    parse_numbers,
    train_loader,
)
from omnidiff.text.captions import CaptionTable, folder_captions

from .files import AudioFileError, conversion_note, find_audio, read_audio
from .mel import MelSpec
from .prior import fit_gain
from .text_data import CaptionedClips, text_tones_arrays
from .tones import NAMES, make_tones

__all__ = ["AudioData", "SOURCES", "CONDS"]

SOURCES = ("tones", "text_tones", "folder")
CONDS = ("label", "none", "mel", "label+mel", "text")
SPLIT_SEED = 0  # the held-out files of a folder never move with data.seed
_TRAIN, _VAL, _REF = 0, 1, 2  # generator streams of the tones


def _stream(seed: int, stream: int) -> torch.Generator:
    return torch.Generator().manual_seed(1_000_003 * int(seed) + stream)


def _fit(wav: torch.Tensor, length: int, start: int = 0) -> torch.Tensor:
    """(1, T) -> (1, length) from ``start``: cut, or padded with silence at the end."""
    wav = wav[:, start:start + length]
    if wav.shape[-1] < length:
        wav = torch.nn.functional.pad(wav, (0, length - wav.shape[-1]))
    return wav


def _text_settings(name: str, cond: str, text: Any) -> dict | None:
    """``data.text`` for a prompted model (None otherwise); one line for a bad combination."""
    if name == "text_tones" and cond != "text":
        raise ValueError("data.name=text_tones is captioned: set data.cond=text")
    if cond == "text" and name == "tones":
        raise ValueError("data.cond=text needs captions: use data.name=text_tones, or a folder "
                         "of recordings with captions (data.name=folder)")
    if text is not None and cond != "text":
        raise ValueError(f"data.text sets the prompt's encoder: use it with data.cond=text, not "
                         f"{cond}")
    return dict(text or {}) if cond == "text" else None


class _ReadFile:
    """Clip ``i`` of a list of files, as mono ``(1, T)`` at the sample rate."""

    def __init__(self, files: list, sample_rate: int):
        self.files, self.sample_rate = files, sample_rate

    def __len__(self) -> int:
        return len(self.files)

    def __call__(self, i: int) -> torch.Tensor:
        return read_audio(self.files[i], self.sample_rate)


class _Rows:
    """Clip ``i`` of an in-memory ``(N, 1, T)`` tensor."""

    def __init__(self, x: torch.Tensor):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __call__(self, i: int) -> torch.Tensor:
        return self.x[i]


class _Clips(Dataset):
    """Clips fetched on demand (files are read when an item is): items
    ``{"x": (1, samples), "cond": ...}``.

    ``crop``: random crops starting on a frame boundary (training a vocoder), else the first
    ``samples`` of each clip (padded when shorter).
    """

    def __init__(self, data: "AudioData", read: Any, labels: list[int] | None, crop: bool):
        self.data, self.read, self.labels, self.crop = data, read, labels, crop

    def __len__(self) -> int:
        return len(self.read)

    def clip(self, i: int, generator: torch.Generator | None = None) -> torch.Tensor:
        d = self.data
        wav = self.read(i)
        length, start = d.event_shape[-1], 0
        if self.crop and wav.shape[-1] > length:
            frames = (wav.shape[-1] - length) // d.hop_length
            start = int(torch.randint(0, frames + 1, (), generator=generator)) * d.hop_length
        return _fit(wav, length, start)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        x = torch.stack([self.clip(i) for i in idx])  # (B, 1, T)
        labels = None if self.labels is None else torch.tensor([self.labels[i] for i in idx])
        cond = self.data.make_cond(x, labels)  # one batched spectrogram
        return {"x": x} if cond is None else {"x": x, "cond": cond}

    def __getitem__(self, i: int) -> dict[str, Any]:
        from omnidiff.core.conditions import index_cond

        batch = self.__getitems__([i])
        return {k: index_cond(v, 0) for k, v in batch.items()}


class AudioData(pl.LightningDataModule):
    """Waveforms ``(B, 1, samples)`` in [-1, 1] for training and held-out reference.

    Args:
        name: ``tones`` or ``folder``.
        root: the folder of recordings (``folder``).
        sample_rate: Hz; files at another rate are resampled.
        clip_seconds: length of a clip (tones, label and unconditional models).
        cond: ``label`` | ``none`` | ``mel`` | ``label+mel``.
        mel: spectrogram settings (:class:`~.mel.MelSettings`: n_fft, hop_length, win_length,
            n_mels, f_min, f_max, ref_db, min_db).
        crop_frames: vocoder training crops in frames (``None``: the whole clip).
        train_size, val_size: tones generated for training / validation.
        batch_size, num_workers, seed: loader settings (``seed``: shuffling and the tones).
        holdout: the held-out fraction of a folder's files.
        harmonics, detune_cents, noise: the tones' make-up (:func:`~.tones.make_tones`).
        text: the text encoder's settings (``cond=text``; None: a learned encoder).
    """

    pipeline_attrs = ("sample_rate", "hop_length", "classes")  # read as pipe.<name>

    def __init__(self, name: str = "tones", root: str | None = None, sample_rate: int = 8000,
                 clip_seconds: float = 0.25, cond: str = "label", mel: dict | None = None,
                 crop_frames: int | None = None, train_size: int = 4800, val_size: int = 600,
                 batch_size: int = 32, num_workers: int = 0, seed: int = 0,
                 holdout: float = 0.1, harmonics: int = 6, detune_cents: float = 10.0,
                 noise: float = 0.01, text: dict | None = None):
        super().__init__()
        if name not in SOURCES:
            raise ValueError(f"unknown audio data {name!r}; choose one of {', '.join(SOURCES)}")
        if name == "folder" and not root:
            raise ValueError("data.name=folder needs data.root=<folder of WAV / FLAC files>")
        cond = "none" if cond in (None, False) else str(cond)
        if cond not in CONDS:
            raise ValueError(f"unknown data.cond={cond!r}; choose one of {', '.join(CONDS)}")
        self.name, self.root, self.cond = name, root, cond
        self.text = _text_settings(name, cond, text)
        self.captions: CaptionTable | None = None
        self.sample_rate = int(sample_rate)
        if self.sample_rate < 1000:
            raise ValueError(f"data.sample_rate={sample_rate} is too low; use e.g. 8000, 16000 "
                             "or 22050")
        self.clip_samples = int(round(float(clip_seconds) * self.sample_rate))
        self.mel = MelSpec(self.sample_rate, mel)
        self.hop_length = self.mel.hop
        self.crop_frames = None if crop_frames is None else int(crop_frames)
        frames = self.crop_frames or self.clip_samples // self.hop_length
        if self.uses_mel and frames < 1:
            raise ValueError(f"a clip of {self.clip_samples} samples is shorter than one hop "
                             f"({self.hop_length}); raise data.clip_seconds or set "
                             "data.crop_frames")
        self._length = frames * self.hop_length if self.uses_mel else self.clip_samples
        if self._length < 16:
            raise ValueError(f"clips of {self._length} samples are too short; raise "
                             "data.clip_seconds")
        self.train_size, self.val_size = int(train_size), int(val_size)
        self.batch_size, self.num_workers, self.seed = int(batch_size), int(num_workers), int(seed)
        self.holdout = float(holdout)
        self.tone_cfg = {"harmonics": int(harmonics), "detune_cents": float(detune_cents),
                         "noise": float(noise)}
        self._splits: dict[str, Any] | None = None
        self._folder: tuple[list, list[int] | None, list[str]] | None = None

    # ---------------------------------------------------------------- what a sample is
    @property
    def _crops(self) -> bool:
        """Vocoder crops shorter than the clip."""
        return self.uses_mel and self._length < self.clip_samples

    @property
    def uses_mel(self) -> bool:
        return "mel" in self.cond

    @property
    def uses_label(self) -> bool:
        return "label" in self.cond

    @property
    def classes(self) -> list[str]:
        if self.name != "folder":
            return list(NAMES) if self.name == "tones" else []
        return list(self._scan()[2])

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (1, self._length)

    @property
    def cond_spec(self) -> Any:
        mel = TensorCond((self.mel.n_mels, None))
        if self.cond == "none":
            return NoCond()
        if self.cond == "mel":
            return mel
        if self.cond == "text":
            self._load()
            return NamedCond({"text": self.captions.cond_spec})
        labels = LabelCond(len(self.classes))
        return labels if self.cond == "label" else NamedCond({"label": labels, "mel": mel})

    def make_cond(self, x: torch.Tensor, labels: torch.Tensor | None) -> Any:
        """The condition of clips ``x: (N, 1, T)`` with ``labels: (N,)`` (or None)."""
        if self.cond == "none":
            return None
        if self.cond == "label":
            return labels
        mel = self.spectrogram(x)
        return mel if self.cond == "mel" else {"label": labels, "mel": mel}

    # ---------------------------------------------------------------- condition hooks
    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        """Waveforms ``(n, 1, T)`` -> their normalised log-mel ``(n, n_mels, T // hop)``."""
        if x.dim() != 3 or x.shape[1] != 1:
            raise ValueError(f"takes mono waveforms (n, 1, samples); got {tuple(x.shape)}")
        return self.mel(x[:, 0])  # (n, M, F)

    def condition(self, x: torch.Tensor) -> torch.Tensor:
        """A vocoder's condition of waveforms ``(n, 1, T)``: their spectrogram."""
        if self.cond != "mel":
            raise ValueError(f"a data.cond={self.cond} model is given labels, not a condition "
                             "computed from audio" + (" alone: pass cond={'label': ..., 'mel': "
                                                      "pipe.data().spectrogram(wav)}"
                                                      if self.uses_mel else ""))
        return self.spectrogram(x)

    def event_shape_for(self, cond: Any) -> tuple[int, ...]:
        """The waveform shape a spectrogram fixes: ``(1, frames * hop)``."""
        mel = cond["mel"] if isinstance(cond, dict) else cond
        return (1, int(mel.shape[-1]) * self.hop_length)

    def read_condition(self, path: Any) -> torch.Tensor:
        """A recording -> the spectrogram ``(1, n_mels, frames)`` of the vocoder, for
        re-synthesis (``omnidiff sample cond=speech.wav``)."""
        if not self.uses_mel:
            raise AudioFileError(f"this model is conditioned on {self.cond}, not on a "
                                 "recording's spectrogram; pass cond=<label>")
        wav = read_audio(path, self.sample_rate)
        frames = wav.shape[-1] // self.hop_length
        if frames < 1:
            raise AudioFileError(f"{path} has {wav.shape[-1]} samples at {self.sample_rate} Hz, "
                                 f"fewer than one hop ({self.hop_length}); use a longer file")
        return self.spectrogram(wav[None, :, :frames * self.hop_length])

    def read_sample(self, path: Any) -> torch.Tensor:
        """A recording -> ``(1, samples)`` of this data's length (cut, or padded with silence)
        at its rate (``omnidiff sample known=clip.wav`` / ``init=``)."""
        wav = read_audio(path, self.sample_rate)  # (1, T)
        length = self.event_shape[-1]
        return torch.nn.functional.pad(wav, (0, max(0, length - wav.shape[-1])))[:, :length]

    def read_mask(self, value: Any) -> torch.Tensor:
        """Gaps in seconds, ``0.10-0.13`` (several: ``0.1-0.13,0.2-0.25``), that the model
        fills in -> ``(1, samples)`` bool, True outside them."""
        length = self.event_shape[-1]
        hidden = torch.zeros(length, dtype=torch.bool)
        for a, b in parse_numbers(value, tuple, "gaps in seconds, e.g. mask=0.10-0.13"):
            hidden[int(round(a * self.sample_rate)):int(round(b * self.sample_rate))] = True
        return mask_along((1, length), 1, torch.nonzero(~hidden).flatten().tolist())

    def model_settings(self, model: dict[str, Any]) -> dict[str, Any]:
        """Model options that follow from the data, for a vocoder: the spectrogram's settings
        and sample rate (``model.mel``), and with ``model.prior=energy`` the prior's gain
        (fitted on up to 256 training clips) and the log-mel's range."""
        if not self.uses_mel:
            return {}  # the network says what is wrong with a prior without a spectrogram
        mel = {"mel": {"sample_rate": self.sample_rate, **self.mel.s.to_dict()}}
        if model.get("prior", "none") == "none":
            return mel
        train = self._load()["train"]
        g = torch.Generator().manual_seed(SPLIT_SEED)
        idx = torch.randperm(len(train), generator=g)[:256].tolist()
        x = (torch.stack([train.clip(i, g) for i in idx]) if isinstance(train, _Clips)
             else train.x[idx])  # (n, 1, T)
        range_db = -self.mel.s.min_db
        floor = float(model.get("prior_floor") or 0.01)
        gain = fit_gain(x, self.spectrogram(x), self.hop_length, range_db, floor)
        return {**mel, "prior_gain": gain, "prior_range_db": range_db}

    def duration(self, x: torch.Tensor) -> float:
        """Seconds of audio in a batch ``(n, 1, T)`` (for the real-time factor)."""
        return x.shape[0] * x.shape[-1] / self.sample_rate

    # ---------------------------------------------------------------- sources
    def _scan(self) -> tuple[list, list[int] | None, list[str]]:
        if self._folder is None:
            files, labels, classes = find_audio(self.root)
            if self.uses_label and labels is None:
                raise AudioFileError(f"data.cond={self.cond} needs labels, but the files under "
                                     f"{self.root} are not in class sub-folders (root/<class>/"
                                     "*.wav); use data.cond=none or data.cond=mel")
            self._folder = (files, labels, classes)
            note = conversion_note(files, self.sample_rate,
                                   None if self._crops else self.clip_samples)
            if note and int(os.environ.get("RANK", "0") or 0) == 0:
                print(note, flush=True)  # once per data module, on the first process
        return self._folder

    def _tones(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        labels = (torch.arange(n) % len(NAMES))[torch.randperm(n, generator=g)]
        return make_tones(labels, self.sample_rate, self.clip_samples, g, **self.tone_cfg), labels

    def _tone_crops(self, n: int, g: torch.Generator) -> _Clips:
        """Tones of ``clip_seconds`` served as random crops of ``crop_frames`` (a vocoder)."""
        x, labels = self._tones(n, g)
        return _Clips(self, _Rows(x), labels.tolist(), crop=True)

    def _tone_split(self, n: int, g: torch.Generator) -> tuple[torch.Tensor, Any]:
        x, labels = self._tones(n, g)
        x = x[..., :self._length]
        cond = None
        if self.cond != "none":
            chunks = [self.make_cond(x[i:i + 1024], labels[i:i + 1024])
                      for i in range(0, n, 1024)]
            from omnidiff.core.conditions import cat_conds
            cond = cat_conds(chunks)
        return x, cond

    def _file_indices(self, n: int) -> tuple[list[int], list[int]]:
        """(training, held-out) file indices: a fixed ``holdout`` fraction held out."""
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(SPLIT_SEED)).tolist()
        n_test = min(max(1, round(self.holdout * n)), n - 1) if n > 1 else 0
        test, train = sorted(perm[:n_test]), sorted(perm[n_test:])
        if not test:
            warnings.warn(f"only one file under {self.root}: it is its own held-out reference",
                          stacklevel=2)
            test = train
        return train, test

    def _file_split(self) -> dict[str, Any]:
        files, labels, _ = self._scan()
        train, test = self._file_indices(len(files))

        def part(idx: list[int], crop: bool) -> _Clips:
            return _Clips(self, _ReadFile([files[i] for i in idx], self.sample_rate),
                          None if labels is None else [labels[i] for i in idx], crop)

        return {"train": part(train, self.uses_mel), "val": part(test, False),
                "ref": part(test, self.uses_mel)}

    def _captioned(self) -> dict[str, Any]:
        """Training and held-out clips with their prompts (``cond=text``)."""
        fit = lambda wav: _fit(wav, self._length)  # noqa: E731
        if self.name == "text_tones":
            a = text_tones_arrays(self.train_size, self.sample_rate, self._length,
                                  self.tone_cfg)
            self.truth = a["truth"]
            reads = (a["x_train"], a["x_test"])
            caps = (a["captions_train"], a["captions_test"])
        else:
            files, _, _ = self._scan()
            captions = folder_captions(Path(self.root).expanduser(), files)
            train, test = self._file_indices(len(files))
            reads = tuple(_ReadFile([files[i] for i in idx], self.sample_rate)
                          for idx in (train, test))
            caps = tuple([captions[i] for i in idx] for idx in (train, test))
        self.captions = CaptionTable(caps[0], caps[1], self.text)
        train, val = (CaptionedClips(r, self.captions.ids(c), self.captions, fit)
                      for r, c in zip(reads, caps))
        return {"train": train, "val": val, "ref": val}

    def captions_of(self, cond: Any) -> list[str] | None:
        """The caption of each row of a batched condition (None without captions)."""
        if self.captions is None or not isinstance(cond, dict) or "text" not in cond:
            return None
        return self.captions.captions_of(cond["text"])

    def caption_truth(self) -> dict[str, tuple[Any, str]]:
        """text_tones: each caption's ``(ToneAttrs, set name)``."""
        self._load()
        return dict(getattr(self, "truth", None) or {})

    def _load(self) -> dict[str, Any]:
        if self._splits is None:
            if self.cond == "text":
                self._splits = self._captioned()
            elif self.name == "tones" and self._crops:
                self._splits = {"train": self._tone_crops(self.train_size,
                                                          _stream(self.seed, _TRAIN)),
                                "val": self._tone_crops(self.val_size, _stream(self.seed, _VAL))}
            elif self.name == "tones":
                self._splits = {"train": TensorDictDataset(*self._tone_split(
                                    self.train_size, _stream(self.seed, _TRAIN))),
                                "val": TensorDictDataset(*self._tone_split(
                                    self.val_size, _stream(self.seed, _VAL)))}
            else:
                self._splits = self._file_split()
        return self._splits

    # ---------------------------------------------------------------- contract
    def reference(self, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, Any]:
        """Held-out clips ``(n, 1, T)`` and their conditions: fresh tones from the held-out
        stream, or ``min(n, held-out files)`` files of a folder (random crops for a vocoder,
        drawn from ``generator``)."""
        g = generator if generator is not None else _stream(self.seed, _REF)
        if self.cond == "text":
            ref = self._load()["ref"]
            batch = ref.__getitems__(torch.randperm(len(ref), generator=g)[: int(n)].tolist())
            return batch["x"], batch["cond"]
        if self.name == "tones" and not self._crops:
            return self._tone_split(int(n), g)
        ref = self._tone_crops(int(n), g) if self.name == "tones" else self._load()["ref"]
        idx = torch.randperm(len(ref), generator=g)[: int(n)].tolist()
        x = torch.stack([ref.clip(i, g) for i in idx])  # (n, 1, T)
        labels = None if ref.labels is None else torch.tensor([ref.labels[i] for i in idx])
        return x, self.make_cond(x, labels)

    # ---------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        self._load()

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._load()["train"], self.batch_size, seed=self.seed,
                            num_workers=self.num_workers, collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self._load()["val"], self.batch_size, num_workers=self.num_workers,
                           collate_fn=collate_batch)

    def __repr__(self) -> str:
        return (f"AudioData(name={self.name!r}, cond={self.cond!r}, "
                f"sample_rate={self.sample_rate}, samples={self._length})")
