"""Image data: one ``LightningDataModule`` for every source, batches ``{"x", "cond"}``.

Sources (``name``):

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1797 images, 10 classes; offline,
  the default). A fixed stratified held-out split (20 %, independent of ``seed``).
* ``mnist``, ``fashion_mnist``, ``cifar10``: torchvision datasets under ``root``; the official
  test split is the held-out split. ``download=False`` by default (nothing is fetched unless
  asked).
* ``folder``: your own images, as audio and video read theirs: ``root/<class>/<image>``
  (labelled by sub-folder, torchvision ``ImageFolder``'s layout) or a flat folder of images
  (unlabelled); a fixed ``holdout`` fraction is held out. ``imagefolder`` is the same, and
  insists on class sub-folders.
* ``text_digits``: two digits side by side on an ``S x 2S`` canvas with captions
  (:mod:`.text_data`), for text-to-image.

With ``text`` (``data.text``: the text encoder, :data:`omnidiff.text.prompts.TEXT_DEFAULTS`),
a folder's captions (``metadata.jsonl`` or a ``.txt`` per image) become the condition
``{"text": sequence}`` (beside ``"label"`` for an imagefolder); ``text_digits`` always has one.

Images are kept in memory as uint8 ``(N, C, H, W)`` (resized once) and scaled to [-1, 1] float32
per item. Random horizontal flips apply to natural-image sources only (cifar10, imagefolder,
folder), never to digits, MNIST or Fashion-MNIST.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset

from omnidiff.core.conditions import LabelCond, NamedCond, NoCond
from omnidiff.errors import DataError
from omnidiff.plugins.data import eval_loader, train_loader
from omnidiff.text.captions import CaptionTable, folder_captions

from .text_data import text_digits_arrays

__all__ = ["ImageData", "SOURCES", "digits_arrays", "default_cache_dir"]

SOURCES = ("digits", "mnist", "fashion_mnist", "cifar10", "imagefolder", "folder", "text_digits")
TEXT_DIGITS_TRAIN = 20_000  # canvases drawn for text_digits when train_size is not set
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "cifar10": "CIFAR10"}
_NATURAL = {"cifar10", "imagefolder", "folder"}  # sources where a horizontal flip is a valid view
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm",
                   ".pgm"}
DIGITS_SPLIT_SEED = 0  # the held-out split of the digits never moves (the classifier relies on it)
DIGITS_HOLDOUT = 0.2


def default_cache_dir() -> Path:
    """``$OMNIDIFF_CACHE`` or ``~/.cache/omnidiff``."""
    return Path(os.environ.get("OMNIDIFF_CACHE") or Path.home() / ".cache" / "omnidiff")


def _resize_uint8(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, C, *size) uint8, bilinear with antialiasing, in chunks."""
    if tuple(x.shape[-2:]) == size:
        return x
    out = []
    for chunk in x.split(4096):
        y = F.interpolate(chunk.float(), size=size, mode="bilinear", antialias=True,
                          align_corners=False)
        out.append(y.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _set_channels(x: torch.Tensor, channels: int | None, where: str) -> torch.Tensor:
    """(N, C, H, W) uint8 -> (N, channels, H, W): 1 -> 3 repeats, 3 -> 1 takes luminance."""
    if channels is None or x.shape[1] == channels:
        return x
    if channels not in (1, 3):
        raise ValueError(f"data.channels={channels} is not supported for {where}; use 1 or 3")
    if x.shape[1] == 1:
        return x.expand(-1, 3, -1, -1).contiguous()
    weights = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    return (x.float() * weights).sum(1, keepdim=True).round().clamp(0, 255).to(torch.uint8)


def _as_size(image_size: Any) -> tuple[int, int] | None:
    if image_size is None:
        return None
    if isinstance(image_size, int):
        return (image_size, image_size)
    h, w = image_size
    return (int(h), int(w))


def digits_arrays(image_size: int | None = None) -> dict[str, torch.Tensor]:
    """The scikit-learn digits at ``image_size`` (default 8) as float in [-1, 1].

    Returns ``{"x_train": (N, 1, S, S), "y_train": (N,), "x_test": (M, 1, S, S), "y_test": (M,)}``
    with the project's fixed stratified held-out split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = torch.from_numpy(d.images.astype(np.float32)).unsqueeze(1) / 16.0 * 2.0 - 1.0  # (N,1,8,8)
    y = torch.from_numpy(d.target.astype(np.int64))
    size = _as_size(image_size) or (8, 8)
    if size != (8, 8):
        x = F.interpolate(x, size=size, mode="bilinear", antialias=True,
                          align_corners=False).clamp_(-1.0, 1.0)
    idx = np.arange(len(y))
    tr, te = train_test_split(idx, test_size=DIGITS_HOLDOUT, random_state=DIGITS_SPLIT_SEED,
                              stratify=d.target)
    tr, te = torch.from_numpy(np.sort(tr)), torch.from_numpy(np.sort(te))
    return {"x_train": x[tr].contiguous(), "y_train": y[tr], "x_test": x[te].contiguous(),
            "y_test": y[te]}


class _Images(Dataset):
    """In-memory images; items ``{"x": (C, H, W) float32 in [-1, 1], "cond": long}`` (or
    ``{"label": long, "text": {...}}`` with captions: ``text`` is (caption table, caption
    index of each image))."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor | None, flip: bool,
                 text: tuple[CaptionTable, torch.Tensor] | None = None):
        self.x, self.y, self.flip = x, y, flip  # x: uint8 (N, C, H, W) or float in [-1, 1]
        self.text = text

    def __len__(self) -> int:
        return self.x.shape[0]

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        x = self.x[i]
        x = x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()
        if self.flip and torch.rand(()) < 0.5:
            x = x.flip(-1)
        item = {"x": x}
        if self.text is not None:
            table, ids = self.text
            item["cond"] = {"text": {k: v[0] for k, v in table.rows(ids[i:i + 1]).items()}}
            if self.y is not None:
                item["cond"]["label"] = self.y[i]
        elif self.y is not None:
            item["cond"] = self.y[i]
        return item


def _to_float(x: torch.Tensor) -> torch.Tensor:
    return x.float() / 127.5 - 1.0 if x.dtype == torch.uint8 else x.float()


class ImageData(pl.LightningDataModule):
    """Images for training and held-out reference (see the module docstring for sources).

    Args:
        name: one of :data:`SOURCES`.
        root: folder of the dataset (torchvision sources: where it is or goes, default
            ``$OMNIDIFF_CACHE/datasets``; ``imagefolder`` / ``folder``: required).
        download: let torchvision download a missing dataset (off by default).
        channels: 1 or 3 to convert; ``None`` keeps the source's own channels.
        image_size: resize to this (int or ``[H, W]``); ``None`` keeps the native size (a folder
            of images of different sizes needs it).
        batch_size, num_workers: DataLoader settings.
        seed: shuffling / ``train_size`` subset (never the held-out split).
        train_size: use only this many training images (``None``: all).
        holdout: held-out fraction for ``imagefolder`` and ``folder``.
        flip: random horizontal flips; ``None`` means on for natural images only.
        text: the text encoder's settings for captioned data (``None``: captions unused;
            ``text_digits`` then uses the defaults, a learned encoder).
        conditional: ``None`` uses the class labels when the data has them; ``False`` drops
            them, so labelled data trains an unconditional model (the metrics still read the
            samples with the classifier); ``True`` requires them.
    """

    def __init__(self, name: str = "digits", root: str | None = None, download: bool = False,
                 channels: int | None = None, image_size: int | list[int] | None = None,
                 batch_size: int = 128, num_workers: int = 0, seed: int = 0,
                 train_size: int | None = None, holdout: float = 0.1,
                 flip: bool | None = None, text: dict[str, Any] | None = None,
                 conditional: bool | None = None):
        super().__init__()
        if name not in SOURCES:
            raise ValueError(f"unknown image data {name!r}; choose one of {', '.join(SOURCES)}")
        if name in ("imagefolder", "folder") and not root:
            raise ValueError(f"data.name={name} needs data.root=<folder of images>")
        self.name = name
        self.root = root
        self.download = bool(download)
        self.channels = None if channels is None else int(channels)
        self.image_size = _as_size(image_size)
        self.batch_size = int(batch_size)
        self.num_workers = int(num_workers)
        self.seed = int(seed)
        self.train_size = None if train_size is None else int(train_size)
        self.holdout = float(holdout)
        self.flip = (name in _NATURAL) if flip is None else bool(flip)
        self.text = dict(text) if text is not None else ({} if name == "text_digits" else None)
        self.conditional = None if conditional is None else bool(conditional)
        if self.text is not None and name not in ("text_digits", "imagefolder", "folder"):
            raise ValueError(f"data.text needs captions: use data.name=text_digits, or a folder "
                             f"of captioned images (data.name=folder), not {name}")
        self._arrays: dict[str, Any] | None = None
        self.captions: CaptionTable | None = None

    # ------------------------------------------------------------------ loading
    def _load(self) -> dict[str, Any]:
        if self._arrays is not None:
            return self._arrays
        if self.name == "digits":
            a = digits_arrays(self.image_size)
            if self.channels not in (None, 1):
                a["x_train"] = a["x_train"].expand(-1, self.channels, -1, -1).contiguous()
                a["x_test"] = a["x_test"].expand(-1, self.channels, -1, -1).contiguous()
            a["classes"] = [str(i) for i in range(10)]
        elif self.name == "text_digits":
            a = text_digits_arrays(self.train_size or TEXT_DIGITS_TRAIN,
                                   digits_arrays(self.image_size))
        elif self.name in _TORCHVISION:
            a = self._load_torchvision()
        else:
            a = self._load_files()
        if self.train_size is not None and self.train_size < len(a["x_train"]):
            g = torch.Generator().manual_seed(self.seed)
            keep = torch.randperm(len(a["x_train"]), generator=g)[: self.train_size].sort().values
            a["x_train"] = a["x_train"][keep]
            for key in ("y_train", "captions_train"):
                if a.get(key) is not None:
                    a[key] = (a[key][keep] if key == "y_train"
                              else [a[key][i] for i in keep.tolist()])
        if self.conditional is False:
            a = a | {"y_train": None, "y_test": None, "classes": []}  # a copy: may be cached
        elif self.conditional and a["y_train"] is None:
            raise ValueError(f"data.conditional=true needs class labels, and {self.name} has "
                             "none: use data.name=folder with a sub-folder per class")
        if self.text is not None:
            self.captions = CaptionTable(a["captions_train"], a["captions_test"], self.text)
            a["c_train"] = self.captions.ids(a["captions_train"])
            a["c_test"] = self.captions.ids(a["captions_test"])
        self._arrays = a
        return a

    def _tv_root(self) -> Path:
        return Path(self.root).expanduser() if self.root else default_cache_dir() / "datasets"

    def _load_torchvision(self) -> dict[str, Any]:
        import torchvision

        cls = getattr(torchvision.datasets, _TORCHVISION[self.name])
        root = self._tv_root()
        try:
            splits = [cls(str(root), train=s, download=self.download) for s in (True, False)]
        except RuntimeError as exc:
            if self.download:
                raise RuntimeError(f"could not download {self.name} to {root}: {exc}") from exc
            raise FileNotFoundError(
                f"{self.name} not found under {root}; pass data.download=true to fetch it, or "
                "point data.root at the folder that holds it") from None
        out: dict[str, Any] = {"classes": list(splits[0].classes)}
        for key, ds in zip(("train", "test"), splits):
            data = torch.as_tensor(np.asarray(ds.data))
            x = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)  # (N, C, H, W)
            x = _set_channels(x.contiguous(), self.channels, self.name)
            if self.image_size is not None:
                x = _resize_uint8(x, self.image_size)
            out[f"x_{key}"] = x.contiguous()
            out[f"y_{key}"] = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        return out

    def _load_files(self) -> dict[str, Any]:
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise FileNotFoundError(f"data.root={root} is not a folder")
        flat = _flat_files(root)
        if self.name == "imagefolder" or not flat and _class_folders(root):
            paths, labels, classes = _imagefolder_files(root)
        else:
            paths, labels, classes = flat, None, []
        if not paths:
            raise FileNotFoundError(f"no images ({', '.join(sorted(_IMAGE_SUFFIXES))}) found in "
                                    f"{root}; point data.root at a folder of images")
        x = _read_images(root, paths, self.channels, self.image_size)
        captions = folder_captions(root, paths) if self.text is not None else None
        return _holdout_split(x, labels, classes, self.holdout, captions)

    # ------------------------------------------------------------------ contract
    @property
    def event_shape(self) -> tuple[int, ...]:
        return tuple(self._load()["x_train"].shape[1:])

    @property
    def num_classes(self) -> int:
        a = self._load()
        return 0 if a["y_train"] is None else len(a["classes"])

    @property
    def classes(self) -> list[str]:
        return list(self._load()["classes"])

    @property
    def cond_spec(self) -> Any:
        """Labels, a prompt ``{"text": sequence}`` (with ``"label"`` when labelled too), or
        nothing."""
        labels = LabelCond(self.num_classes) if self.num_classes else None  # loads the data
        if self.captions is None:
            return labels or NoCond()
        fields = {"text": self.captions.cond_spec} | ({"label": labels} if labels else {})
        return NamedCond(fields)

    def _cond(self, split: str, idx: torch.Tensor) -> Any:
        """The conditions of images ``idx`` of ``split`` (train / test), batched."""
        a = self._load()
        y = a[f"y_{split}"]
        if self.captions is None:
            return None if y is None else y[idx].clone()
        out = {"text": self.captions.rows(a[f"c_{split}"][idx])}
        return out if y is None else out | {"label": y[idx].clone()}

    def captions_of(self, cond: Any) -> list[str] | None:
        """The caption of each row of a batched condition (None without captions)."""
        if self.captions is None or not isinstance(cond, dict) or "text" not in cond:
            return None
        return self.captions.captions_of(cond["text"])

    def caption_truth(self) -> dict[str, tuple[int, int, str]]:
        """text_digits: each caption's ``(left, right, set)`` (-1: empty side)."""
        return dict(self._load().get("truth") or {})

    def reference(self, n: int, generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``min(n, held-out size)`` held-out images ``(n, C, H, W)`` in [-1, 1] and their
        labels (or None), a random subset without replacement.

        Capped at the held-out size because repeated images would corrupt the nearest-neighbour
        metrics (precision / recall); the digits hold out 360 images.
        """
        x = self._load()["x_test"]
        idx = torch.randperm(len(x), generator=generator)[: int(n)]
        return _to_float(x[idx]), self._cond("test", idx)

    # ------------------------------------------------------------------ Lightning hooks
    def read_sample(self, path: Any) -> torch.Tensor:
        """An image file -> ``(C, H, W)`` in [-1, 1] at this data's size and channels
        (``omnidiff sample known=photo.png`` / ``init=``)."""
        c, h, w = self.event_shape
        arr, _, _ = _read_image(_existing(path), _file_mode(c), (h, w))
        x = torch.from_numpy(np.array(arr))  # a writable copy
        return _to_float(x[None] if x.ndim == 2 else x.permute(2, 0, 1))

    def read_mask(self, value: Any) -> torch.Tensor:
        """A mask image, white where the model fills in (as inpainting tools draw it) ->
        ``(C, H, W)`` bool, True where the image is kept."""
        c, h, w = self.event_shape
        arr, _, _ = _read_image(_existing(value), "L", (h, w))
        return torch.from_numpy(arr < 128)[None].expand(c, h, w).contiguous()

    def prepare_data(self) -> None:
        if self.name in _TORCHVISION and self.download:
            self._load()

    def setup(self, stage: str | None = None) -> None:
        self._load()

    def train_dataloader(self) -> DataLoader:
        return train_loader(self._dataset("train", self.flip), self.batch_size, seed=self.seed,
                            num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return eval_loader(self._dataset("test", False), self.batch_size,
                           num_workers=self.num_workers)

    def _dataset(self, split: str, flip: bool) -> _Images:
        a = self._load()
        text = None if self.captions is None else (self.captions, a[f"c_{split}"])
        return _Images(a[f"x_{split}"], a[f"y_{split}"], flip=flip, text=text)

    def __repr__(self) -> str:
        return (f"ImageData(name={self.name!r}, root={self.root!r}, "
                f"image_size={self.image_size}, batch_size={self.batch_size})")


# ---------------------------------------------------------------------- image files
def _existing(path: Any) -> Path:
    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise DataError(f"{path} is not an image file; pass a PNG / JPEG path")
    return path


def _imagefolder_files(root: Path) -> tuple[list[Path], torch.Tensor, list[str]]:
    """``root/<class>/<image>``: the image paths, their labels (N,) and the class names."""
    from torchvision.datasets import ImageFolder

    try:
        ds = ImageFolder(str(root))
    except (FileNotFoundError, RuntimeError) as exc:
        raise FileNotFoundError(f"no class subfolders with images under {root} "
                                f"(a sub-folder per class: root/<class>/<image>): "
                                f"{str(exc).splitlines()[0]}") from None
    labels = torch.tensor([c for _, c in ds.samples], dtype=torch.long)
    return [Path(p) for p, _ in ds.samples], labels, list(ds.classes)


def _class_folders(root: Path) -> list[Path]:
    """The sub-folders of ``root`` that hold images (one per class)."""
    return [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")
            and any(p.suffix.lower() in _IMAGE_SUFFIXES for p in d.iterdir())]


def _flat_files(root: Path) -> list[Path]:
    """The image files directly in ``root``, sorted by name."""
    return sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES)


def _file_mode(channels: int | None) -> str | None:
    """The PIL mode to convert every file to; None keeps each file's own ("L" or "RGB")."""
    mode = {None: None, 1: "L", 3: "RGB"}.get(channels, "?")
    if mode == "?":
        raise ValueError(f"data.channels={channels} is not supported; use 1 or 3")
    return mode


def _read_image(path: Path, mode: str | None, size: tuple[int, int] | None
                ) -> tuple[np.ndarray, str, tuple[int, int]]:
    """One file as an array ``(H, W)`` or ``(H, W, 3)`` (converted to ``mode`` or its own, and
    resized to ``size`` if given), with that mode and its size ``(W, H)`` before resizing."""
    from PIL import Image

    with Image.open(path) as im:
        m = mode or _native_mode(im)  # None: keep the files' own channels (must agree)
        im = im.convert(m)
        native = im.size
        if size is not None and im.size != size[::-1]:
            im = im.resize(size[::-1], Image.Resampling.BICUBIC)
        return np.asarray(im), m, native


def _read_images(root: Path, paths: list[Path], channels: int | None,
                 size: tuple[int, int] | None) -> torch.Tensor:
    """The files as uint8 ``(N, C, H, W)``; a clear error when they disagree in channels or
    (without ``size``) in size."""
    mode = _file_mode(channels)
    images, modes, sizes = [], {}, {}
    for p in paths:
        image, m, native = _read_image(p, mode, size)
        images.append(image)
        modes.setdefault(m, []).append(p.name)
        sizes.setdefault(native, []).append(p.name)
    _check_files_agree(root, modes, sizes if size is None else {})
    x = torch.from_numpy(np.stack(images))  # (N, H, W) or (N, H, W, 3)
    x = x.permute(0, 3, 1, 2) if x.ndim == 4 else x.unsqueeze(1)
    return x.contiguous()


def _check_files_agree(root: Path, modes: dict[str, list[str]],
                       sizes: dict[tuple[int, int], list[str]]) -> None:
    """One mode and one size among the files (``{mode or size: [file names]}``) or an error."""
    if len(modes) > 1:
        counts = ", ".join(f"{'1 channel' if m == 'L' else '3 channels'}: {len(v)} files "
                           f"(e.g. {v[0]})" for m, v in sorted(modes.items()))
        raise ValueError(f"images in {root} have inconsistent channels ({counts}); pass "
                         "data.channels=1 or data.channels=3 to convert them all")
    if len(sizes) > 1:
        eg = ", ".join(f"{w}x{h} (e.g. {v[0]})" for (w, h), v in list(sizes.items())[:3])
        raise ValueError(f"images in {root} have different sizes ({eg}); pass "
                         "data.image_size=<size> to resize them all")


def _holdout_split(x: torch.Tensor, labels: torch.Tensor | None, classes: list[str],
                   holdout: float, captions: list[str] | None = None) -> dict[str, Any]:
    """A fixed ``holdout`` fraction of the images (at least one, never all; independent of
    ``data.seed``) held out; a single image is its own reference."""
    n = len(x)
    g = torch.Generator().manual_seed(DIGITS_SPLIT_SEED)
    perm = torch.randperm(n, generator=g)
    n_test = min(max(1, round(holdout * n)), n - 1) if n > 1 else 0
    te, tr = perm[:n_test].sort().values, perm[n_test:].sort().values
    if n_test == 0:  # a single image: it is its own reference
        te = tr
    out = {"x_train": x[tr], "y_train": None if labels is None else labels[tr],
           "x_test": x[te], "y_test": None if labels is None else labels[te],
           "classes": classes}
    if captions is not None:
        out["captions_train"] = [captions[i] for i in tr.tolist()]
        out["captions_test"] = [captions[i] for i in te.tolist()]
    return out


def _native_mode(im) -> str:
    """"L" for gray images (1, L, LA, I, I;16, gray palettes), else "RGB" (alpha is dropped)."""
    if im.mode in ("1", "L", "LA", "I", "I;16", "F"):
        return "L"
    if im.mode == "P":
        rgb = np.asarray((im.getpalette() or [])[: 3 * 256]).reshape(-1, 3)
        if len(rgb) and (rgb[:, 0] == rgb[:, 1]).all() and (rgb[:, 1] == rgb[:, 2]).all():
            return "L"
    return "RGB"
