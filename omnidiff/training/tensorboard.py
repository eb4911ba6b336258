"""TensorBoard (``logger=tensorboard``): Lightning's TensorBoardLogger, offline, with the
domain's samples at every evaluation.

It writes ``<run>/logs/tensorboard/events.out.tfevents.*`` (``tensorboard --logdir runs``
shows every run): the scalars the run logs (``train/loss``, ``val/loss``,
``sample/<metric>`` per evaluation, ``final/<metric>``) and the samples. The samples are the
files the domain's ``save_artifacts`` writes, so a domain plugin gets this without code of its
own: ``.png`` as images, ``.wav`` as audio and ``.gif`` as animated images (TensorBoard's
image dashboard plays them), at most :data:`MAX_MEDIA` of each kind per evaluation. Each file
is tagged by its name without the evaluation's prefix (``samples``, ``samples/normalised``,
``samples/wav/000_a4``), so the evaluations of a run line up on one tag's step slider.
The CSV log is kept beside it: ``loss.png`` and ``omnidiff compare`` read it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any, Iterable, Sequence

__all__ = ["MAX_MEDIA", "available", "tensorboard_logger", "media_tag", "log_artifacts"]

MAX_MEDIA = 4  # files of each kind (image, audio, gif) logged per evaluation
_KINDS = {".png": "image", ".jpg": "image", ".jpeg": "image", ".wav": "audio", ".gif": "gif"}


def available() -> bool:
    """Whether the ``tensorboard`` package is installed (``pip install omnidiff[tensorboard]``)."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_logger(run_dir: Path) -> Any:
    """Lightning's TensorBoardLogger writing into ``<run>/logs/tensorboard`` (a resumed run
    appends a new event file there)."""
    from lightning.pytorch.loggers import TensorBoardLogger

    return TensorBoardLogger(save_dir=str(run_dir), name="logs", version="tensorboard",
                             default_hp_metric=False)


def media_tag(path: Path, prefix: str) -> str:
    """``samples`` plus the file's name (or its folder's) without the evaluation's ``prefix``:
    ``step0000100.png`` -> ``samples``, ``samples_wav/000_a4.wav`` -> ``samples/wav/000_a4``."""
    folder = path.parent.name  # the evaluation's own subfolder (<prefix>_wav) or the run's
    if folder.startswith(prefix + "_"):
        parts = [folder[len(prefix) + 1:], path.stem]
    else:
        own = path.stem == prefix or path.stem.startswith(prefix + "_")
        parts = [path.stem[len(prefix):].lstrip("_") if own else path.stem]
    return "/".join(["samples", *(p for p in parts if p)])


def log_artifacts(loggers: Iterable[Any], files: Sequence[Path], step: int,
                  prefix: str) -> None:
    """Log an evaluation's artifact ``files`` (written with ``prefix``) to every TensorBoard
    logger among ``loggers``; other loggers are left alone."""
    from lightning.pytorch.loggers import TensorBoardLogger

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            write_media(logger.experiment, files, step, prefix)


def write_media(writer: Any, files: Sequence[Path], step: int, prefix: str) -> None:
    """Images, audio and GIFs among ``files`` into a ``SummaryWriter``."""
    writers = {"image": _image, "audio": _audio, "gif": _gif}
    counts: dict[str, int] = {}
    for f in map(Path, files):
        kind = _KINDS.get(f.suffix.lower())
        if kind is None or counts.get(kind, 0) >= MAX_MEDIA or not f.is_file():
            continue
        counts[kind] = counts.get(kind, 0) + 1
        writers[kind](writer, media_tag(f, prefix), f, step)
    writer.flush()


def _image(writer: Any, tag: str, path: Path, step: int) -> None:
    import numpy as np
    from PIL import Image

    with Image.open(path) as im:
        pixels = np.asarray(im.convert("RGB"))  # (H, W, 3) uint8
    writer.add_image(tag, pixels, step, dataformats="HWC")


def _audio(writer: Any, tag: str, path: Path, step: int) -> None:
    import soundfile
    import torch

    wave, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, channels)
    mono = torch.from_numpy(wave).mean(dim=1, keepdim=True).T  # (1, T)
    writer.add_audio(tag, mono, step, sample_rate=int(rate))


def _gif(writer: Any, tag: str, path: Path, step: int) -> None:
    """The GIF's own bytes as an encoded image (what ``add_video`` writes, without moviepy)."""
    from PIL import Image
    from tensorboard.compat.proto.summary_pb2 import Summary

    with Image.open(path) as im:
        width, height = im.size
    image = Summary.Image(height=height, width=width, colorspace=4,
                          encoded_image_string=path.read_bytes())
    writer._get_file_writer().add_summary(Summary(value=[Summary.Value(tag=tag, image=image)]),
                                          step)
