"""Video metrics: lower is better unless the name says otherwise (``*_acc``, ``*_conf``).

Every frame is read by the project's digits classifier (the image domain's, 8x8) through a
window of the digit's size centred on the frame's centre of mass of ink (:func:`digit_crops`),
so a digit is recognised wherever it has moved. Over generated clips (no frame given):

* ``class_acc`` / ``class_conf`` (class-conditional): the share of frames classified as the
  asked digit, and the classifier's mean probability of it;
* ``identity_acc``: the share of frames showing the clip's majority digit (it keeps its
  identity);
* ``ink_cv``: the coefficient of variation of a clip's ink mass over its frames (the reference
  clips' own value beside it, ``ref_ink_cv``);
* ``com_accel``: the median magnitude of the centre of mass's acceleration (pixels per frame
  squared; a constant velocity is 0, bounces are outliers the median ignores while they are
  rare), on a scale whose two ends are printed beside it: ``ref_com_accel``, the reference
  clips' own value (the data's motion, bounces included), and ``random_com_accel``, the value
  of clips whose every frame comes from another reference clip (no coherent motion at all);
* ``fd``: the Fréchet distance between the classifier's features of sampled and reference
  frames.

Over continuations (the samples whose condition gives the first frames of the reference clip
it is paired with): ``cont_com_err`` (mean distance in pixels between the centres of mass of
the continued and the true frames after the given ones), ``hold_com_err`` (the same for
holding the last given frame still), ``cont_vs_hold`` (below 1: better than holding still),
and ``cont_mse`` / ``hold_mse`` (pixels).

Prompted clips (a data module with captions, ``data.captions_of``): ``digit_acc_<set>`` and
``direction_acc_<set>`` per evaluation set, see :mod:`.text_metrics`.

Clips of two digits are scored through the same window: the metrics are meant for one-digit
clips (the default).
"""

from __future__ import annotations

from typing import Any

import torch

from omnidiff.plugins.metrics import frechet_distance

from .frames import centre_of_mass, digit_crops, frame_scores
from .text_metrics import text_video_metrics

__all__ = ["video_metrics", "digit_crops", "centre_of_mass", "frame_scores"]


def _accel(com: torch.Tensor) -> float:
    if com.shape[1] < 3:
        return 0.0
    a = com[:, 2:] - 2 * com[:, 1:-1] + com[:, :-2]  # (N, T - 2, 2)
    return float(a.norm(dim=-1).median(dim=1).values.mean())


def _random_frames(com: torch.Tensor) -> torch.Tensor:
    """Trajectories ``(N, T, 2)`` whose every frame is taken from a random clip (an
    independent permutation of the clips at each frame)."""
    g = torch.Generator().manual_seed(0)
    n, t = com.shape[:2]
    pick = torch.stack([torch.randperm(n, generator=g) for _ in range(t)], dim=1)  # (N, T)
    return com[pick, torch.arange(t)[None]]  # (N, T, 2)


def _ink_cv(mass: torch.Tensor) -> float:
    return float((mass.std(1) / mass.mean(1).clamp_min(1e-6)).mean()) if mass.shape[1] > 1 \
        else 0.0


def _generation(x: torch.Tensor, ref: torch.Tensor, labels: torch.Tensor | None,
                digit_size: int) -> dict[str, float]:
    probs, feats = frame_scores(x, digit_size)  # (N, T, 10), (N, T, D)
    _, ref_feats = frame_scores(ref, digit_size)
    pred = probs.argmax(-1)  # (N, T)
    majority = pred.mode(dim=1).values  # (N,)
    com, mass = centre_of_mass(x)
    ref_com, ref_mass = centre_of_mass(ref)
    out = {"identity_acc": float((pred == majority[:, None]).float().mean()),
           "ink_cv": _ink_cv(mass), "ref_ink_cv": _ink_cv(ref_mass),
           "com_accel": _accel(com), "ref_com_accel": _accel(ref_com),
           "random_com_accel": _accel(_random_frames(ref_com)),
           "fd": frechet_distance(feats.flatten(0, 1), ref_feats.flatten(0, 1))}
    if labels is not None:
        lab = labels.long().view(-1, 1)
        out["class_acc"] = float((pred == lab).float().mean())
        out["class_conf"] = float(probs.gather(-1, lab[:, :, None].expand(-1, x.shape[1], 1))
                                  .mean())
    return out


def _continuation(x: torch.Tensor, truth: torch.Tensor, k: int) -> dict[str, float]:
    com, _ = centre_of_mass(x[:, k:])
    true_com, _ = centre_of_mass(truth[:, k:])
    held = truth[:, k - 1:k].expand_as(truth[:, k:])  # (N, T - k, C, H, W)
    hold_com, _ = centre_of_mass(held)
    cont = float((com - true_com).norm(dim=-1).mean())
    hold = float((hold_com - true_com).norm(dim=-1).mean())
    return {"cont_com_err": cont, "hold_com_err": hold, "cont_vs_hold": cont / max(hold, 1e-9),
            "cont_mse": float((x[:, k:] - truth[:, k:]).pow(2).mean()),
            "hold_mse": float((held - truth[:, k:]).pow(2).mean())}


def _split(cond: Any) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """(labels, masks) of a batched condition of any of the domain's kinds."""
    if isinstance(cond, dict):
        return cond.get("label"), cond.get("mask")
    if isinstance(cond, torch.Tensor) and cond.dim() == 1:
        return cond, None
    return None, None


def _paired(cond: Any, ref_cond: Any, idx: torch.Tensor) -> bool:
    if not isinstance(cond, dict) or not isinstance(ref_cond, dict):
        return False
    r = ref_cond["frames"]
    return len(idx) > 0 and r.shape[0] > int(idx.max()) and torch.equal(
        cond["frames"][idx].float(), r[idx].float())


def video_metrics(samples: torch.Tensor, reference: torch.Tensor, cond: Any = None,
                  ref_cond: Any = None, data: Any = None) -> dict[str, float]:
    """samples ``(N, T, C, H, W)``, reference ``(M, T, C, H, W)``, their conditions."""
    if samples.dim() != 5 or samples.shape[1:] != reference.shape[1:]:
        raise ValueError(f"video metrics need samples and reference of one shape "
                         f"(N, T, C, H, W), got {tuple(samples.shape)} and "
                         f"{tuple(reference.shape)}")
    digit_size = getattr(data, "digit_size", 12)
    x = torch.nan_to_num(samples.detach().float().cpu(), 0.0, 0.0, 0.0).clamp(-1.0, 1.0)
    ref = reference.detach().float().cpu()
    labels, masks = _split(cond)
    given = torch.zeros(len(x)) if masks is None else masks.float().sum(1)  # (N,)
    out: dict[str, float] = {"finite_frac": float(torch.isfinite(samples.reshape(
        len(samples), -1)).all(1).float().mean())}
    gen = (given == 0).nonzero().flatten()
    if len(gen):
        out.update(_generation(x[gen], ref, None if labels is None else labels[gen],
                               digit_size))
    cont = (given > 0).nonzero().flatten()
    if len(cont) and _paired(cond, ref_cond, cont):
        m = masks[cont]
        k = int(m[0].sum())
        if torch.equal(m, m[:1].expand_as(m)) and torch.equal(m[0, :k], torch.ones(k)):
            out.update(_continuation(x[cont], ref[cont], k))
    return out | _prompted(x, cond, data, gen, cont, digit_size)


def _prompted(x: torch.Tensor, cond: Any, data: Any, gen: torch.Tensor, cont: torch.Tensor,
              digit_size: int) -> dict[str, float]:
    """Captioned clips judged against their prompts (:mod:`.text_metrics`): generated ones
    per evaluation set, continued ones as ``cont_digit_acc`` / ``cont_direction_acc``."""
    captions_of = getattr(data, "captions_of", None)
    captions = None if captions_of is None else captions_of(cond)
    if not captions:
        return {}
    truth, out = data.caption_truth(), {}
    if len(gen):
        out |= text_video_metrics(x[gen], [captions[i] for i in gen.tolist()], truth, digit_size)
    if len(cont):
        scores = text_video_metrics(x[cont], [captions[i] for i in cont.tolist()], truth,
                                    digit_size)
        out |= {f"cont_{k}": scores[k] for k in ("digit_acc", "direction_acc") if k in scores}
    return out
