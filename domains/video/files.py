"""Reading clips from files: animated GIFs and folders of frame images (Pillow), video files
through PyAV (the optional ``av`` extra). Every reader returns ``(T, C, H, W)`` float in
[-1, 1] at the asked size and channel count, cut or padded (last frame repeated) to the asked
number of frames. Bad files raise :class:`VideoFileError`, one line naming the file and fix.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnidiff.errors import DataError

__all__ = ["VideoFileError", "read_clip", "find_clips", "IMAGE_EXTS", "VIDEO_EXTS"]

IMAGE_EXTS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}
VIDEO_EXTS = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


class VideoFileError(DataError):
    """A clip file or folder that cannot be used (one line for the user)."""


def _gif_frames(path: Path) -> list[np.ndarray]:
    from PIL import Image, ImageSequence

    with Image.open(path) as im:
        return [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(im)]


def _folder_frames(path: Path) -> list[np.ndarray]:
    from PIL import Image

    files = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise VideoFileError(f"{path}: a clip folder without frame images "
                             f"({', '.join(sorted(IMAGE_EXTS))}); remove it or add frames")
    out = []
    for p in files:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB")))
    return out


def _video_frames(path: Path) -> list[np.ndarray]:
    try:
        import av
    except ImportError:
        raise VideoFileError(f"{path}: reading {path.suffix} files needs PyAV: pip install "
                             f"'omnidiff[video]' (or convert the clips to GIFs or frame "
                             f"folders)") from None
    with av.open(str(path)) as container:
        return [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]


def _to_tensor(frames: list[np.ndarray], path: Path) -> torch.Tensor:
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise VideoFileError(f"{path}: frames of different sizes {sorted(shapes)}; "
                             f"resize them to one size")
    x = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # (T, 3, H, W) uint8
    return x.float() / 127.5 - 1.0


def read_clip(path: str | Path, frames: int, size: int | tuple[int, int],
              channels: int = 1) -> torch.Tensor:
    """A clip file or frame folder -> ``(frames, channels, H, W)`` in [-1, 1]."""
    path = Path(path)
    try:
        if path.is_dir():
            raw = _folder_frames(path)
        elif path.suffix.lower() == ".gif":
            raw = _gif_frames(path)
        elif path.suffix.lower() in VIDEO_EXTS:
            raw = _video_frames(path)
        else:
            raise VideoFileError(f"{path}: not a clip (GIF, a frame folder or "
                                 f"{', '.join(sorted(VIDEO_EXTS))})")
    except VideoFileError:
        raise
    except Exception as e:  # Pillow / PyAV: a truncated or corrupt file
        raise VideoFileError(f"{path}: cannot be read ({type(e).__name__}: {e}); re-encode "
                             f"or remove it") from None
    if not raw:
        raise VideoFileError(f"{path}: holds no frames; remove it")
    x = _to_tensor(raw, path)[:frames]  # (<= T, 3, H, W)
    if x.shape[0] < frames:  # a short clip holds its last frame
        x = torch.cat([x, x[-1:].expand(frames - x.shape[0], -1, -1, -1)])
    hw = (size, size) if isinstance(size, int) else tuple(size)
    if tuple(x.shape[-2:]) != hw:
        x = F.interpolate(x, size=hw, mode="bilinear", antialias=True, align_corners=False)
    x = x.mean(1, keepdim=True) if channels == 1 else x
    return x.clamp(-1.0, 1.0).contiguous()  # (T, C, H, W)


def find_clips(root: str | Path) -> tuple[list[Path], list[str] | None]:
    """The clips under ``root`` (files and frame folders) and their class names when the clips
    sit in one sub-folder per class (else None)."""
    root = Path(root)
    if not root.is_dir():
        raise VideoFileError(f"data.root={root} is not a folder; give the folder of clips")

    def is_clip(p: Path) -> bool:
        if p.is_dir():
            return any(c.suffix.lower() in IMAGE_EXTS for c in p.iterdir())
        return p.suffix.lower() in VIDEO_EXTS | {".gif"}

    direct = sorted(p for p in root.iterdir() if is_clip(p))
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not is_clip(p))
    labelled = [(d.name, sorted(p for p in d.iterdir() if is_clip(p))) for d in subdirs]
    labelled = [(n, c) for n, c in labelled if c]
    if labelled and not direct:
        return [p for _, cs in labelled for p in cs], [n for n, cs in labelled for _ in cs]
    clips = direct + [p for _, cs in labelled for p in cs]
    if not clips:
        raise VideoFileError(f"data.root={root} holds no clips (GIFs, frame folders or "
                             f"{', '.join(sorted(VIDEO_EXTS))}); check the path")
    return clips, None
