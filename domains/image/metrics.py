"""Offline image metrics: samples ``(N, C, H, W)`` in [-1, 1] vs held-out reference images.

What is computed depends on what the data is:

* **Digits** (the reference images are scikit-learn digits, recognised by content at any
  ``image_size``): features of the project's digits classifier (:mod:`.classifier`) give
  ``fd`` (Fréchet distance of penultimate features, the project's small-scale stand-in for FID;
  lower is better), ``precision`` and ``recall`` (Kynkäänniemi et al. 2019, k=3; higher is
  better) and, when ``cond`` is given, ``class_acc`` (fraction of samples the classifier labels
  as the class they were generated for; higher is better); without ``cond``,
  ``class_share_min``: the smallest ratio over classes of a class's share of the samples to its
  share of the reference, both as the classifier reads them (1 when every class keeps its
  share; a mode dropped gives 0).
* **Any images**: ``pixel_fd`` (Fréchet distance of the images average-pooled to at most 8x8
  per channel, a crude but model-free statistic; lower is better), ``pixel_mean_gap`` and
  ``pixel_std_gap`` (absolute differences of the pixel mean / std; lower is better).
* ``fid`` (Inception FID through torchmetrics) only when asked for (``inception=True`` or
  ``OMNIDIFF_INCEPTION_FID=1``), torchmetrics + torch-fidelity are importable and the Inception
  weights are already on disk; nothing is downloaded by omnidiff.
"""

from __future__ import annotations

import functools
import math
import os
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from omnidiff.plugins.metrics import frechet_distance, precision_recall

from .classifier import digits_classifier
from .data import digits_arrays
from .text_metrics import caption_scores

# frechet_distance and precision_recall live in omnidiff.plugins.metrics; re-exported here
__all__ = ["frechet_distance", "precision_recall", "image_metrics", "is_digits",
           "pixel_features", "inception_fid", "caption_metrics"]


def pixel_features(x: torch.Tensor, max_side: int = 8) -> torch.Tensor:
    """(N, C, H, W) -> (N, C*h*w) after average pooling to at most ``max_side`` per side."""
    h, w = x.shape[-2:]
    if h > max_side or w > max_side:
        x = F.adaptive_avg_pool2d(x.float(), (min(h, max_side), min(w, max_side)))
    return x.flatten(1).float()


@functools.lru_cache(maxsize=8)
def _digits_bank(size: tuple[int, int]) -> torch.Tensor:
    d = digits_arrays(size)
    return torch.cat([d["x_train"], d["x_test"]]).flatten(1)  # (1797, H*W)


def caption_metrics(samples: torch.Tensor, captions: Sequence[str] | None,
                    truth: dict[str, tuple[int, int, str]]) -> dict[str, float]:
    """Two-digit canvases judged against their captions, per evaluation set of
    :func:`.captions.eval_prompts`: ``joint_acc_<set>`` (both sides right; a side the caption
    leaves out must be empty), ``joint_acc`` over every two-digit caption and ``empty_ok``
    (one-digit captions whose other side is empty)."""
    if not captions or not truth or any(c not in truth for c in captions):
        return {}
    left, right, sets = zip(*(truth[c] for c in captions))
    left, right = torch.tensor(left), torch.tensor(right)
    out: dict[str, float] = {}
    for name in dict.fromkeys(sets):
        rows = torch.tensor([s == name for s in sets])
        scores = caption_scores(samples[rows], left[rows], right[rows])
        out[f"joint_acc_{name}"] = scores["joint_acc"]
        if not math.isnan(scores["empty_ok"]):
            out["empty_ok"] = scores["empty_ok"]
    both = (left >= 0) & (right >= 0)
    if bool(both.any()):
        out["joint_acc"] = caption_scores(samples[both], left[both], right[both])["joint_acc"]
    return out


def is_digits(reference: torch.Tensor, atol: float = 1e-3) -> bool:
    """True when every reference image (N, C, H, W) is one of scikit-learn's digits at this
    size."""
    if reference.ndim != 4 or reference.shape[1] != 1 or len(reference) == 0:
        return False
    size = (int(reference.shape[-2]), int(reference.shape[-1]))
    if min(size) < 4 or max(size) > 64:
        return False
    bank = _digits_bank(size)
    ref = reference.detach().float().cpu().flatten(1)
    for chunk in ref.split(1024):
        d = torch.cdist(chunk, bank, p=float("inf"))  # (n, 1797)
        if not bool((d.min(1).values <= atol).all()):
            return False
    return True


def inception_fid(samples: torch.Tensor, reference: torch.Tensor) -> float | None:
    """FID with torchmetrics' Inception-v3 (needs torchmetrics, torch-fidelity and weights already
    on disk); None when unavailable. Images in [-1, 1], 1 or 3 channels."""
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
    except Exception:
        return None
    try:
        fid = FrechetInceptionDistance(feature=2048, normalize=True)
    except Exception:  # no torch-fidelity, or the weights are not cached locally
        return None

    def prep(x: torch.Tensor) -> torch.Tensor:
        x = ((x.float().clamp(-1, 1) + 1) / 2).cpu()
        return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x

    for chunk in prep(reference).split(256):
        fid.update(chunk, real=True)
    for chunk in prep(samples).split(256):
        fid.update(chunk, real=False)
    return float(fid.compute())


@torch.no_grad()
def _read(classifier: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The classifier's features of ``x`` and its predicted classes, in chunks."""
    feats, preds = [], []
    for chunk in x.split(512):
        f = classifier.features(chunk)
        feats.append(f)
        logits = classifier.head(f) if hasattr(classifier, "head") else classifier(chunk)
        preds.append(logits.argmax(1))
    return torch.cat(feats), torch.cat(preds)


def class_share_min(pred: torch.Tensor, pred_ref: torch.Tensor) -> float:
    """min over the reference's classes of (share in ``pred``) / (share in ``pred_ref``)."""
    k = int(max(pred.max(), pred_ref.max())) + 1
    share = torch.bincount(pred, minlength=k).float() / len(pred)
    ref = torch.bincount(pred_ref, minlength=k).float() / len(pred_ref)
    seen = ref > 0
    return float((share[seen] / ref[seen]).min())


@torch.no_grad()
def image_metrics(samples: torch.Tensor, reference: torch.Tensor,
                  cond: torch.Tensor | None = None, ref_cond: torch.Tensor | None = None, *,
                  classifier: torch.nn.Module | None = None, inception: bool | None = None,
                  data: Any = None) -> dict[str, float]:
    """All metrics that apply (see the module docstring); samples, reference: (N, C, H, W).

    ``classifier``: a module with ``features(x)`` and ``forward(x) -> logits`` to use instead of
    the built-in digits classifier (e.g. one trained on your own data); its labels must match
    ``cond``. With ``data`` holding caption truth (text_digits), the canvases are judged
    against their captions (:func:`caption_metrics`).
    """
    if samples.ndim != 4 or reference.ndim != 4 or samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"image metrics need samples and reference of one shape (N, C, H, W), "
                         f"got {tuple(samples.shape)} and {tuple(reference.shape)}")
    samples = samples.detach().float().cpu().clamp(-1, 1)
    reference = reference.detach().float().cpu()
    out: dict[str, float] = {
        "pixel_fd": frechet_distance(pixel_features(samples), pixel_features(reference)),
        "pixel_mean_gap": abs(samples.mean().item() - reference.mean().item()),
        "pixel_std_gap": abs(samples.std().item() - reference.std().item()),
    }
    if classifier is None and is_digits(reference):
        classifier = digits_classifier(tuple(reference.shape[-2:]))
    if classifier is not None:
        f_s, pred = _read(classifier, samples)
        f_r, pred_r = _read(classifier, reference)
        out["fd"] = frechet_distance(f_s, f_r)
        out["precision"], out["recall"] = precision_recall(f_r, f_s, k=3)
        labels = cond.get("label") if isinstance(cond, dict) else cond
        if labels is not None:
            out["class_acc"] = (pred == labels.cpu().long()).float().mean().item()
        else:
            out["class_share_min"] = class_share_min(pred, pred_r)
    if data is not None and getattr(data, "captions_of", None) is not None:
        out |= caption_metrics(samples, data.captions_of(cond), data.caption_truth())
    if inception is None:
        inception = os.environ.get("OMNIDIFF_INCEPTION_FID", "") not in ("", "0")
    if inception:
        fid = inception_fid(samples, reference)
        if fid is not None:
            out["fid"] = fid
    return out
