"""Atomic file writing: nothing half-written is ever left behind.

Every writer goes through :func:`atomic_path`: it yields a temporary path in the destination's
folder, and only a complete file is renamed onto the destination (``os.replace`` is atomic on
POSIX and Windows). On any error the temporary file is removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any, Iterator

import torch

from omnidiff._util import map_cond
from omnidiff.errors import CheckpointError

__all__ = ["atomic_path", "atomic_torch_save", "atomic_write_text", "atomic_write_json",
           "atomic_save_figure", "atomic_save_npy", "save_raw", "read_json", "read_torch_file",
           "state_digest", "FILE_FORMAT"]

FILE_FORMAT = "omnidiff"  # the "format" field of every file omnidiff writes for itself


@contextlib.contextmanager
def atomic_path(dest: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling of ``dest``; move it onto ``dest`` when the block succeeds."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp" + dest.suffix,
                               dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as fh:  # make the bytes durable before the rename
            os.fchmod(fh.fileno(), _plain_write_mode(dest))
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _plain_write_mode(dest: Path) -> int:
    """The permissions a plain ``open(dest, "w")`` would give: an existing file keeps its
    own, a new one gets 0666 less the umask (``mkstemp`` makes 0600 files, which nobody else
    could read)."""
    try:
        return dest.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process's umask: from ``/proc`` where Linux shows it, else by setting it and
    putting it back (the portable way, not safe against another thread creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_torch_save(obj: Any, dest: str | os.PathLike) -> Path:
    with atomic_path(dest) as tmp:
        torch.save(obj, tmp)
    return Path(dest)


def atomic_write_text(text: str, dest: str | os.PathLike) -> Path:
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return Path(dest)


def atomic_write_json(obj: Any, dest: str | os.PathLike) -> Path:
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", dest)


def read_json(path: str | os.PathLike) -> Any:
    """The JSON in ``path``, or None when it is missing or cannot be read (a file being
    written by another process, cut short by a kill)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def atomic_save_npy(arr: Any, dest: str | os.PathLike) -> Path:
    """Save an array (numpy or a CPU tensor) as ``.npy`` atomically (to a file handle:
    ``np.save`` on a path would append ".npy" to the temporary name)."""
    import numpy as np

    with atomic_path(dest) as tmp, open(tmp, "wb") as fh:
        np.save(fh, arr.numpy() if isinstance(arr, torch.Tensor) else np.asarray(arr))
    return Path(dest)


def atomic_save_figure(fig: Any, dest: str | os.PathLike, **kwargs: Any) -> Path:
    """Save a ``matplotlib.figure.Figure`` atomically (format from ``dest``'s suffix)."""
    dest = Path(dest)
    fmt = kwargs.pop("format", dest.suffix.lstrip(".") or "png")
    with atomic_path(dest) as tmp:
        fig.savefig(tmp, format=fmt, **kwargs)
    return dest


def save_raw(samples: torch.Tensor, cond: Any, out_dir: str | os.PathLike,
             prefix: str = "samples") -> list[Path]:
    """The raw tensors an artifact writer keeps beside its pictures, atomically:
    ``<prefix>.pt`` (``{"samples", "cond"}``, on the CPU) and ``<prefix>.npy`` (the samples as
    float32)."""
    out_dir = Path(out_dir)
    raw = samples.detach().float().cpu()
    cond = map_cond(lambda c: c.detach().cpu(), cond)
    return [atomic_torch_save({"samples": raw, "cond": cond}, out_dir / f"{prefix}.pt"),
            atomic_save_npy(raw, out_dir / f"{prefix}.npy")]


def state_digest(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over a state dict: names, dtypes, shapes and bytes, in name order."""
    h = hashlib.sha256()
    for name, value in sorted(state.items()):
        t = value.detach().to("cpu").contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def read_torch_file(path: Path, hint: str) -> Any:
    """``torch.load(path, weights_only=True)``; one :class:`CheckpointError` ending in ``hint``
    for a missing file, a file that is not a PyTorch one, or one holding unsafe objects."""
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found; {hint}")
    if not zipfile.is_zipfile(path):
        raise CheckpointError(f"{path} is not an omnidiff checkpoint (not a PyTorch file); {hint}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        unsafe = "weights_only" in str(exc) or "Unsupported global" in str(exc)
        why = ("it holds objects that cannot be loaded safely with weights_only=True"
               if unsafe else f"torch.load failed: {type(exc).__name__}")
        raise CheckpointError(f"{path} is not an omnidiff checkpoint ({why}); {hint}") from None


def _a(word: str) -> str:
    return f"{'an' if word[:1] in 'aeiou' else 'a'} {word}"


def read_payload(path: str | os.PathLike, kind: str, version: int, hint: str) -> dict[str, Any]:
    """The ``model.pt`` dict of ``kind`` (``autoencoder``, ``classifier``) in ``path`` (the
    file or its run folder), read as :func:`read_torch_file`; one :class:`CheckpointError`
    ending in ``hint`` for another kind of file or one written by a newer omnidiff."""
    path = Path(path)
    if path.is_dir():
        path = path / "model.pt"
    obj = read_torch_file(path, hint)
    if not isinstance(obj, dict) or obj.get("kind") != kind:
        other = obj.get("kind") if isinstance(obj, dict) else None
        what = (_a(f"{other}'s") if other else "a diffusion model's"
                if isinstance(obj, dict) and "schedule" in obj else f"not {_a(kind)}'s")
        raise CheckpointError(f"{path} is {what} checkpoint, not {_a(kind)}; {hint}")
    if int(obj.get("format_version", 1)) > version:
        raise CheckpointError(f"{path} was written by a newer omnidiff "
                              f"({obj.get('omnidiff_version')}); upgrade omnidiff to read it")
    return obj
