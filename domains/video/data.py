"""Video data: clips ``(B, T, C, H, W)`` in [-1, 1] and their conditions.

Sources: ``moving_digits`` (generated offline, :mod:`.moving`), ``text_moving_digits`` (one
digit moving left, right, up or down, with captions: :mod:`.text_data`) or ``folder`` (GIFs,
frame folders or video files, :mod:`.files`; labels from sub-folder names, captions with
``data.text`` from ``metadata.jsonl`` or a ``.txt`` beside each clip). Conditions
(``data.cond``): ``label``, ``none``, ``frames`` (given frames and their mask),
``label+frames``, ``text`` (a prompt: ``{"text": sequence}``) or ``text+frames`` (a prompt and
given frames: ``{"text", "frames", "mask"}``, "continue this clip so that the digit moves
up"). ``data.text`` holds the text encoder's settings
(:data:`omnidiff.text.prompts.TEXT_DEFAULTS`; ``text_moving_digits`` defaults to a learned
encoder). Training batches of a frame-conditional model carry random masks — no frame
given, the first ``k`` frames (continuation), or a random subset (filling in) — so one model
learns all three; the held-out reference alternates generation (no frame given, even
indices) and continuation from the first ``eval_given`` frames (odd indices), which the
metrics score apart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset

from omnidiff.core.conditions import LabelCond, NamedCond, NoCond, TensorCond
from omnidiff.errors import DataError
from omnidiff.plugins.data import (
    collate_batch,
    eval_loader,
    mask_along,
    parse_numbers,
    train_loader,
)
from omnidiff.text.captions import CaptionTable, folder_captions

from . import _image_domain
from .captions import digit_part, direction_part
from .files import find_clips, read_clip
from .text_data import text_clips_arrays

__all__ = ["VideoData", "random_masks", "first_frames", "CONDS", "SOURCES"]

SOURCES = ("moving_digits", "text_moving_digits", "folder")
CONDS = ("label", "none", "frames", "label+frames", "text", "text+frames")
TEXT_CONDS = ("text", "text+frames")
DIGIT_NAMES = [str(i) for i in range(10)]


def random_masks(b: int, frames: int, p_none: float = 0.25, p_fill: float = 0.25,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``(b, frames)`` float masks, 1 where a frame is given: none given (``p_none``), a random
    subset (``p_fill``; never every frame), else the first ``k ~ U{1, frames - 1}`` frames."""
    u = torch.rand(b, generator=generator)
    k = torch.randint(1, max(frames, 2), (b,), generator=generator)
    first = (torch.arange(frames)[None] < k[:, None]).float()  # (b, T)
    subset = (torch.rand(b, frames, generator=generator) < 0.5).float()
    subset[subset.all(1), -1] = 0.0  # a subset leaves at least one frame to generate
    mask = torch.where((u < p_none + p_fill)[:, None], subset, first)
    return torch.where((u < p_none)[:, None], torch.zeros_like(mask), mask)


def first_frames(b: int, frames: int, k: int) -> torch.Tensor:
    """``(b, frames)`` masks giving the first ``k`` frames."""
    return (torch.arange(frames)[None] < int(k)).float().expand(b, -1).clone()


class _Clips(Dataset):
    """In-memory clips; ``__getitems__`` builds a batch and its condition (random masks).
    ``c``: each clip's caption index into the data module's caption table (None without)."""

    def __init__(self, data: "VideoData", x: torch.Tensor, y: torch.Tensor | None,
                 c: torch.Tensor | None = None):
        self.data, self.x, self.y, self.c = data, x, y, c

    def __len__(self) -> int:
        return len(self.x)

    def __getitems__(self, idx: list[int]) -> dict[str, Any]:
        x = self.x[idx]  # (B, T, C, H, W)
        y = None if self.y is None else self.y[idx]
        mask = random_masks(len(idx), x.shape[1], self.data.p_none, self.data.p_fill)
        c = None if self.c is None else self.c[idx]
        cond = self.data.make_cond(x, y, mask, c)
        return {"x": x} if cond is None else {"x": x, "cond": cond}

    def __getitem__(self, i: int) -> dict[str, Any]:
        from omnidiff.core.conditions import index_cond

        return {k: index_cond(v, 0) for k, v in self.__getitems__([i]).items()}


class VideoData(pl.LightningDataModule):
    """Clips for training and a held-out reference.

    Args:
        name: ``moving_digits``, ``text_moving_digits`` or ``folder`` (``root``: GIFs, frame
            folders, videos).
        frames, size, channels: the clip's shape ``(frames, channels, size, size)``.
        digit_size, max_digits, p_two, max_speed: the moving digits' make-up
            (``text_moving_digits``: one digit, the fastest speed up to ``max_speed`` that
            crosses the canvas without bouncing).
        cond: ``label`` | ``none`` | ``frames`` | ``label+frames`` | ``text`` |
            ``text+frames``.
        text: the text encoder's settings for captioned clips (``None``: no captions;
            ``text_moving_digits`` then uses the defaults, a learned encoder).
        p_none, p_fill: training masks (see :func:`random_masks`); ``eval_given``: frames
            given to the continuations of the reference.
        train_size, val_size: generated clips; ``holdout``: held-out fraction of a folder.
        part_captions: ``text_moving_digits``: the shares of training captions that name one
            part alone, ``{digit: s, direction: s}`` ("a 7", "moving left"), so the model
            knows each part's own condition and composed guidance (``sampler.compose: {digit:
            w}``, :meth:`caption_parts`) can push it.
    """

    pipeline_attrs = ("classes",)

    def __init__(self, name: str = "moving_digits", root: str | None = None, frames: int = 8,
                 size: int = 32, channels: int = 1, digit_size: int = 12, max_digits: int = 1,
                 p_two: float = 0.5, max_speed: int = 3, cond: str = "label",
                 p_none: float = 0.25, p_fill: float = 0.25, eval_given: int = 2,
                 train_size: int = 6000, val_size: int = 600, batch_size: int = 32,
                 num_workers: int = 0, seed: int = 0, holdout: float = 0.1,
                 text: dict[str, Any] | None = None,
                 part_captions: dict[str, float] | None = None):
        super().__init__()
        if name not in SOURCES:
            raise ValueError(f"data.name={name!r} is not one of {', '.join(SOURCES)}")
        if cond not in CONDS:
            raise ValueError(f"data.cond={cond!r} is not one of {', '.join(CONDS)}")
        if name == "folder" and not root:
            raise ValueError("data.name=folder needs data.root=<folder of clips>")
        if int(frames) < 1 or int(size) < 1 or int(channels) not in (1, 3):
            raise ValueError(f"data.frames={frames} and data.size={size} must be positive and "
                             f"data.channels={channels} 1 or 3")
        if int(max_digits) not in (1, 2):
            raise ValueError(f"data.max_digits={max_digits} must be 1 or 2")
        if not 0 <= int(eval_given) < int(frames):
            raise ValueError(f"data.eval_given={eval_given} must lie in 0..{int(frames) - 1}")
        self.name, self.root, self.cond = name, root, cond
        self.frames, self.size, self.channels = int(frames), int(size), int(channels)
        self.digit_size, self.max_digits = int(digit_size), int(max_digits)
        self.p_two, self.max_speed = float(p_two), int(max_speed)
        self.p_none, self.p_fill, self.eval_given = float(p_none), float(p_fill), int(eval_given)
        self.train_size, self.val_size = int(train_size), int(val_size)
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.seed, self.holdout = int(seed), float(holdout)
        self.text = (dict(text) if text is not None
                     else ({} if name == "text_moving_digits" else None))
        _check_text(name, cond, self.text)
        self.part_captions = _check_parts(name, part_captions)
        self._arrays: dict[str, Any] | None = None
        self.captions: CaptionTable | None = None

    # ------------------------------------------------------------------ loading
    def _load(self) -> dict[str, Any]:
        if self._arrays is None:
            load = {"moving_digits": self._generate, "text_moving_digits": self._text_clips,
                    "folder": self._files}[self.name]
            a = load()
            if self.text is not None:
                self.captions = CaptionTable(a["captions_train"], a["captions_test"], self.text)
                a["c_train"] = self.captions.ids(a["captions_train"])
                a["c_test"] = self.captions.ids(a["captions_test"])
            self._arrays = a
        return self._arrays

    def _text_clips(self) -> dict[str, Any]:
        if self.channels != 1:
            raise ValueError("data.name=text_moving_digits is grey: set data.channels=1")
        digits = _image_domain().digits_arrays(self.digit_size)
        return text_clips_arrays(self.train_size, digits, frames=self.frames, size=self.size,
                                 max_speed=self.max_speed, part_captions=self.part_captions)

    def _generate(self) -> dict[str, Any]:
        from .moving import moving_digits

        if self.channels != 1:
            raise ValueError("data.name=moving_digits is grey: set data.channels=1")
        digits = _image_domain().digits_arrays(self.digit_size)
        kw = dict(frames=self.frames, size=self.size, max_digits=self.max_digits,
                  p_two=self.p_two, max_speed=self.max_speed)
        g = torch.Generator().manual_seed(self.seed)
        xtr, ytr, _ = moving_digits(digits["x_train"], digits["y_train"], self.train_size, g,
                                    **kw)
        g = torch.Generator().manual_seed(self.seed + 10_007)  # held out: the test digits
        xte, yte, _ = moving_digits(digits["x_test"], digits["y_test"], self.val_size, g,
                                    **kw)
        return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte,
                "classes": DIGIT_NAMES}

    def _files(self) -> dict[str, Any]:
        paths, names = find_clips(self.root)
        x = torch.stack([read_clip(p, self.frames, self.size, self.channels) for p in paths])
        classes = sorted(set(names)) if names else []
        y = torch.tensor([classes.index(n) for n in names]) if names else None
        if self.cond in ("label", "label+frames") and y is None:
            raise ValueError(f"data.cond={self.cond} needs labels: put the clips of "
                             f"{self.root} in one sub-folder per class, or use data.cond=none "
                             f"or frames")
        perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed))
        n_te = max(1, round(self.holdout * len(x))) if len(x) > 1 else 0
        te, tr = perm[:n_te], perm[n_te:]
        te = te if n_te else tr
        sub = (lambda v, i: None if v is None else v[i])  # noqa: E731
        out = {"x_train": x[tr], "y_train": sub(y, tr), "x_test": x[te], "y_test": sub(y, te),
               "classes": classes}
        if self.text is not None:
            captions = folder_captions(Path(self.root), paths)
            out["captions_train"] = [captions[i] for i in tr.tolist()]
            out["captions_test"] = [captions[i] for i in te.tolist()]
        return out

    # ------------------------------------------------------------------ contract
    channel_axis = 1  # samples are (T, C, H, W): an autoencoder convolves over (T, H, W)

    @property
    def event_shape(self) -> tuple[int, ...]:
        return (self.frames, self.channels, self.size, self.size)

    def read_sample(self, path: Any) -> torch.Tensor:
        """A GIF, video file or frame folder -> ``(frames, C, H, W)`` in [-1, 1] at this data's
        size (``omnidiff sample known=clip.gif`` / ``init=``)."""
        return read_clip(path, self.frames, self.size, self.channels)

    def read_mask(self, value: Any) -> torch.Tensor:
        """The given frames, ``0,1,6,7`` -> ``(frames, C, H, W)`` bool, True on them (the model
        generates the others: in-between frames, a continuation, a beginning)."""
        idx = parse_numbers(value, int, "the given frames, e.g. mask=0,1,6,7 (of 0.."
                            f"{self.frames - 1})")
        if any(not 0 <= i < self.frames for i in idx):
            raise DataError(f"mask={value!r}: frames run from 0 to {self.frames - 1}")
        return mask_along(self.event_shape, 0, idx)

    @property
    def classes(self) -> list[str]:
        return list(self._load()["classes"])

    @property
    def uses_frames(self) -> bool:
        return self.cond in ("frames", "label+frames", "text+frames")

    @property
    def cond_spec(self) -> Any:
        if self.cond == "none":
            return NoCond()
        if self.cond == "label":
            return LabelCond(max(len(self.classes), 1))
        if self.text is not None:
            self._load()  # the caption table
        text = {"text": self.captions.cond_spec} if self.captions is not None else {}
        if self.cond == "text":
            return NamedCond(text)
        # both optional: left out, no frame is given (the null condition)
        fields = {"frames": TensorCond(self.event_shape, fill=0.0),
                  "mask": TensorCond((self.frames,), fill=0.0)}
        if self.cond == "label+frames":
            fields = {"label": LabelCond(max(len(self.classes), 1))} | fields
        return NamedCond(text | fields)

    def make_cond(self, x: torch.Tensor, labels: torch.Tensor | None,
                  mask: torch.Tensor | None = None, captions: torch.Tensor | None = None
                  ) -> Any:
        """The condition of clips ``x: (N, T, C, H, W)`` (labels ``(N,)``, masks ``(N, T)``,
        caption indices ``(N,)`` into the caption table)."""
        if self.cond == "none":
            return None
        if self.cond == "label":
            return labels
        text = {} if captions is None else {"text": self.captions.rows(captions)}
        if self.cond == "text":
            return text
        mask = torch.zeros(x.shape[:2]) if mask is None else mask.float()
        out = {"frames": x * mask[:, :, None, None, None], "mask": mask}
        return ({"label": labels} if self.cond == "label+frames" else {}) | text | out

    def captions_of(self, cond: Any) -> list[str] | None:
        """The caption of each row of a batched condition (None without captions)."""
        if self.captions is None or not isinstance(cond, dict) or "text" not in cond:
            return None
        return self.captions.captions_of(cond["text"])

    def caption_truth(self) -> dict[str, tuple[int, int, str]]:
        """text_moving_digits: each caption's ``(digit, direction, set)`` (direction: an index
        of :data:`.captions.DIRECTIONS`; set: ``train``, ``held_in`` or ``held_out``)."""
        return dict(self._load().get("truth") or {})

    def caption_parts(self, captions: list[str]) -> dict[str, list[str]]:
        """text_moving_digits: the words of each caption that name one attribute, by attribute
        (``{"digit": ["a 7", ...], "direction": ["moving left", ...]}``), for composed
        guidance; one clear error for a caption this data set did not write."""
        if self.name != "text_moving_digits":
            raise ValueError(f"data.name={self.name} names no parts of its captions: drop "
                             f"sampler.compose")
        truth = self.caption_truth()
        unknown = [c for c in captions if c not in truth]
        if unknown:
            raise ValueError(f"caption {unknown[0]!r} is not one of text_moving_digits' "
                             f"full captions: its parts are unknown")
        return {"digit": [digit_part(c, truth[c][0]) for c in captions],
                "direction": [direction_part(c, truth[c][1]) for c in captions]}

    def continuation(self, clips: torch.Tensor, k: int, labels: Any = None,
                     prompts: Any = None) -> Any:
        """The condition that continues ``clips (n, >= k, C, H, W)`` from their first ``k``
        frames (with ``labels`` for a class-conditional model; with ``prompts``, one text or
        one per clip, for a ``text+frames`` model, else the prompt is left for
        ``generate(prompt=...)``)."""
        if not self.uses_frames:
            raise ValueError(f"a data.cond={self.cond} model is not frame-conditional; train "
                             f"with data.cond=frames, label+frames or text+frames")
        n, t = clips.shape[0], self.frames
        if not 1 <= k < t or clips.shape[1] < k or tuple(clips.shape[2:]) != self.event_shape[1:]:
            raise ValueError(f"continuation needs clips (n, >= {k}, "
                             f"{', '.join(map(str, self.event_shape[1:]))}) and 1 <= k < {t}; "
                             f"got {tuple(clips.shape)}, k={k}")
        full = torch.zeros(n, *self.event_shape)
        full[:, :k] = clips[:, :k]
        if self.cond == "label+frames":
            if labels is None:
                raise ValueError("this model is class-conditional (data.cond=label+frames): "
                                 "pass labels= (one class index, or one per clip)")
            labels, _ = self.cond_spec.field_specs["label"].check(labels, n)  # (n,) long
        cond = self.make_cond(full, labels, first_frames(n, t, k))
        if prompts is None:
            return cond
        if self.cond != "text+frames":
            raise ValueError(f"a data.cond={self.cond} model takes no prompt; train with "
                             f"data.cond=text+frames")
        prompts = [prompts] * n if isinstance(prompts, str) else list(prompts)
        return {"text": prompts} | cond

    def reference(self, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, Any]:
        """``min(n, held-out size)`` held-out clips and their conditions (for a frame-
        conditional model: no frame given at even indices, the first ``eval_given`` at odd
        ones)."""
        a = self._load()
        idx = torch.randperm(len(a["x_test"]), generator=generator)[: int(n)]
        x, y = a["x_test"][idx].clone(), None if a["y_test"] is None else a["y_test"][idx]
        mask = None
        if self.uses_frames:
            mask = first_frames(len(x), self.frames, self.eval_given)
            mask[::2] = 0.0
        return x, self.make_cond(x, y, mask, a["c_test"][idx] if "c_test" in a else None)

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        self._load()

    def train_dataloader(self) -> DataLoader:
        a = self._load()
        return train_loader(_Clips(self, a["x_train"], a["y_train"], a.get("c_train")),
                            self.batch_size,
                            seed=self.seed, num_workers=self.num_workers,
                            collate_fn=collate_batch)

    def val_dataloader(self) -> DataLoader:
        a = self._load()
        return eval_loader(_Clips(self, a["x_test"], a["y_test"], a.get("c_test")),
                           self.batch_size,
                           num_workers=self.num_workers, collate_fn=collate_batch)

    def __repr__(self) -> str:
        return (f"VideoData(name={self.name!r}, frames={self.frames}, size={self.size}, "
                f"cond={self.cond!r}, batch_size={self.batch_size})")


def _check_text(name: str, cond: str, text: dict[str, Any] | None) -> None:
    """One-line errors for captions and conditions that do not go together."""
    if text is not None and name == "moving_digits":
        raise ValueError("data.text needs captions: use data.name=text_moving_digits, or a "
                         "folder of captioned clips (data.name=folder)")
    if (text is not None) != (cond in TEXT_CONDS):
        what = "captions (data.text)" if text is not None else f"data.cond={cond}"
        fix = ("set data.cond=text or text+frames" if text is not None
               else "set data.text={} (a learned encoder) with captioned clips")
        raise ValueError(f"{what} needs a prompt condition and captions together: {fix}")


def _check_parts(name: str, shares: Any) -> dict[str, float]:
    """``data.part_captions``: ``{digit: s, direction: s}``, shares >= 0 summing below 1, and
    only for text_moving_digits."""
    shares = dict(shares or {})
    unknown = sorted(set(shares) - {"digit", "direction"})
    if unknown:
        raise ValueError(f"data.part_captions names {unknown}; its parts are digit and direction")
    shares = {k: float(v) for k, v in shares.items()}
    if any(v < 0 for v in shares.values()) or sum(shares.values()) >= 1:
        raise ValueError(f"data.part_captions={shares}: shares must be >= 0 and sum below 1")
    if any(shares.values()) and name != "text_moving_digits":
        raise ValueError(f"data.part_captions is for data.name=text_moving_digits, not {name}")
    return shares
