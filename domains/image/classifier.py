"""The project's small digits classifier: the feature extractor behind the image metrics.

A three-stage CNN trained by omnidiff itself on the *training* split of scikit-learn's digits
(:func:`omnidiff_domains.image.data.digits_arrays`), at the image size the samples have. It
trains in a few seconds on a CPU with a fixed seed, and is cached as
``$OMNIDIFF_CACHE/digits_classifier_<H>x<W>_v<N>.pt`` (default cache ``~/.cache/omnidiff``),
written atomically and loaded with ``weights_only=True``. Its 128-d penultimate features are the
space for the Fréchet distance and precision / recall in :mod:`.metrics`.
"""

from __future__ import annotations

import threading
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from omnidiff.io import atomic_torch_save

from .data import default_cache_dir, digits_arrays

__all__ = ["DigitsClassifier", "digits_classifier", "train_digits_classifier"]

VERSION = 1
FEATURE_DIM = 128


class DigitsClassifier(nn.Module):
    """x: (B, 1, H, W) in [-1, 1] -> logits (B, 10); ``features(x)`` -> (B, 128)."""

    def __init__(self, image_size: tuple[int, int] = (8, 8)):
        super().__init__()
        self.image_size = tuple(image_size)

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(8, cout),
                                 nn.SiLU())

        self.body = nn.Sequential(block(1, 32), nn.AvgPool2d(2), block(32, 64), nn.AvgPool2d(2),
                                  block(64, FEATURE_DIM), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(FEATURE_DIM, 10)

    def _prep(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 3:  # an RGB rendering of a digit: use its luminance
            x = (x * x.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if tuple(x.shape[-2:]) != self.image_size:
            x = F.interpolate(x, size=self.image_size, mode="bilinear", antialias=True,
                              align_corners=False)
        return x.float()

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(self._prep(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _shift(x: torch.Tensor, g: torch.Generator, max_shift: int) -> torch.Tensor:
    """Random integer translations (background -1 fills the border); x: (B, 1, H, W)."""
    b, _, h, w = x.shape
    pad = F.pad(x, (max_shift,) * 4, value=-1.0)
    dy = torch.randint(0, 2 * max_shift + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * max_shift + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, :, None].expand(b, h, w)
    cols = (dx[:, None] + torch.arange(w))[:, None, :].expand(b, h, w)
    return pad[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)


def train_digits_classifier(image_size: int | tuple[int, int] = 8, epochs: int = 20,
                            seed: int = 0) -> tuple[DigitsClassifier, float]:
    """Train on the digits' training split; returns the model (eval mode) and held-out accuracy.

    Works when called under ``torch.no_grad()`` / ``torch.inference_mode()`` (e.g. from metrics).
    Runs on one intra-op thread (restored afterwards): this network is too small to gain from
    more, and extra threads are many times slower on a busy machine.
    """
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        with torch.inference_mode(False), torch.enable_grad():
            return _train(image_size, epochs, seed)
    finally:
        torch.set_num_threads(threads)


def _train(image_size: int | tuple[int, int], epochs: int, seed: int
           ) -> tuple[DigitsClassifier, float]:
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    data = digits_arrays(size)
    x, y = data["x_train"], data["y_train"]
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier(size)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    steps_per_epoch = (len(x) + 63) // 64
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3,
                                                total_steps=epochs * steps_per_epoch)
    max_shift = max(1, size[0] // 8)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x), 64):
            idx = perm[i:i + 64]
            xb = _shift(x[idx], g, max_shift)
            xb = xb + 0.05 * torch.randn(xb.shape, generator=g)  # robustness to sample noise
            loss = F.cross_entropy(model(xb), y[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        acc = (model(data["x_test"]).argmax(1) == data["y_test"]).float().mean().item()
    return model, acc


_lock = threading.Lock()
_memo: dict[tuple[int, int], DigitsClassifier] = {}


def cache_path(image_size: tuple[int, int], cache_dir: str | Path | None = None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / f"digits_classifier_{image_size[0]}x{image_size[1]}_v{VERSION}.pt"


def digits_classifier(image_size: int | tuple[int, int] = 8,
                      cache_dir: str | Path | None = None) -> DigitsClassifier:
    """The cached classifier for ``image_size`` (trained and cached on first use), eval mode."""
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    size = (int(size[0]), int(size[1]))
    with _lock:
        if cache_dir is None and size in _memo:
            return _memo[size]
        path = cache_path(size, cache_dir)
        model = None
        if path.exists():
            try:
                blob = torch.load(path, map_location="cpu", weights_only=True)
                model = DigitsClassifier(size)
                model.load_state_dict(blob["state_dict"])
            except Exception:  # a stale or foreign file: retrain and overwrite it
                model = None
        if model is None:
            print(f"omnidiff: training the digits classifier for {size[0]}x{size[1]} images that "
                  f"scores samples (once: cached in {path})", flush=True)
            model, acc = train_digits_classifier(size)
            atomic_torch_save({"state_dict": model.state_dict(), "image_size": list(size),
                               "heldout_acc": acc, "version": VERSION}, path)
        model.eval().requires_grad_(False)
        if cache_dir is None:
            _memo[size] = model
        return model
