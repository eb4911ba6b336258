"""Sample quality of the points domain, against held-out reference data.

Densities (samples ``(n, 2)``):

* ``sliced_w2``: sliced 2-Wasserstein distance (Rabin et al. 2011; Bonneel et al. 2015):
  the root mean square over random unit directions of the exact 1D W2 between projections,
  computed by sorting; unequal sample counts are matched by interpolating quantile functions.
* ``mmd_rbf``: unbiased squared MMD (Gretton et al. 2012) with a sum of RBF kernels whose
  bandwidths are multiples of the reference's median pairwise distance (median heuristic).
* ``class_acc`` (when ``cond`` and ``ref_cond`` are given): k-NN classification of each sample
  by the labelled reference points, compared with the label it was generated for.
* for the ``mixture`` density, whose law is known exactly (:func:`mixture_metrics`):
  ``mode_weight_err``, the largest gap between a mode's share of the samples (each assigned to
  its most likely mode) and its true weight; ``mode_width``, the RMS of the samples' coordinates
  whitened by their mode's covariance (1 for exact samples; 2 when modes come out twice as
  wide, or points land between modes).

Clouds (samples ``(n, N, 2)``), with the Chamfer distance (CD) as in Achlioptas et al. 2018 and
Yang et al. 2019 (PointFlow), mean of squared nearest-neighbour distances both ways:

* ``mmd_cd``: mean over reference clouds of the CD to the closest generated cloud.
* ``coverage_cd``: fraction of reference clouds that are the nearest neighbour of at least one
  generated cloud (higher is better).
* ``nna_cd``: 1-nearest-neighbour accuracy of the two-sample leave-one-out test (ideal 0.5).
* ``class_acc`` (labelled data): k-NN under CD against the labelled reference clouds.

All distances are batched with :func:`torch.cdist`; everything returns plain floats.
"""

from __future__ import annotations

from typing import Any

import torch

from omnidiff.core.gaussian_mixture import GaussianMixture

from .affine import cloud_properties, split_cond, undo_affine

__all__ = ["sliced_wasserstein", "mmd_rbf", "chamfer_matrix", "knn_classify", "cloud_metrics",
           "density_metrics", "mixture_metrics", "affine_metrics", "compute_metrics"]

Tensor = torch.Tensor


def _quantiles(sorted_x: Tensor, q: Tensor) -> Tensor:
    """Linear interpolation of empirical quantile functions.

    sorted_x: (L, n) ascending along dim 1; q: (K,) levels in (0, 1). Returns (L, K).
    """
    n = sorted_x.shape[1]
    pos = (q * n - 0.5).clamp(0, n - 1)  # sample i sits at level (i + 0.5) / n
    lo = pos.floor().long()
    hi = (lo + 1).clamp(max=n - 1)
    w = (pos - lo)[None]
    return sorted_x[:, lo] * (1 - w) + sorted_x[:, hi] * w


def sliced_wasserstein(x: Tensor, y: Tensor, num_projections: int = 512,
                       generator: torch.Generator | None = None) -> float:
    """Sliced W2 between point sets ``x: (n, d)`` and ``y: (m, d)`` (n may differ from m)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    dirs = torch.randn(num_projections, x.shape[1], generator=g, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=1, keepdim=True)).to(x.device)  # (L, d)
    px = (dirs @ x.T).sort(dim=1).values  # (L, n)
    py = (dirs @ y.T).sort(dim=1).values  # (L, m)
    if px.shape[1] != py.shape[1]:
        k = max(px.shape[1], py.shape[1])
        q = (torch.arange(k, dtype=torch.float64, device=x.device) + 0.5) / k
        px, py = _quantiles(px, q), _quantiles(py, q)
    return float((px - py).pow(2).mean().sqrt())


def mmd_rbf(x: Tensor, y: Tensor, scales: tuple[float, ...] = (0.5, 1.0, 2.0),
            bandwidth: float | None = None) -> float:
    """Unbiased squared MMD with a sum of RBF kernels ``exp(-d^2 / (2 (s h)^2))``.

    ``x: (n, d)``, ``y: (m, d)`` (the reference); ``h`` is ``bandwidth`` or the median
    pairwise distance within ``y`` (at most 1000 points of it). Can be slightly negative
    when the two distributions agree (it is unbiased).
    """
    x, y = x.float().flatten(1), y.float().flatten(1)
    if bandwidth is None:
        sub = y[:1000]
        d = torch.cdist(sub, sub)
        bandwidth = float(d[tuple(torch.triu_indices(len(sub), len(sub), 1))].median())
        bandwidth = max(bandwidth, 1e-8)
    gammas = [1.0 / (2 * (s * bandwidth) ** 2) for s in scales]

    def mean_kernel(a: Tensor, b: Tensor, same: bool) -> float:
        d2 = torch.cdist(a, b).pow_(2)  # (len(a), len(b))
        total = sum(float(torch.exp(-gm * d2).sum(dtype=torch.float64)) for gm in gammas)
        if same:  # leave out the diagonal, where every kernel is 1
            return (total - len(gammas) * len(a)) / (len(a) * (len(a) - 1))
        return total / (len(a) * len(b))

    return mean_kernel(x, x, True) + mean_kernel(y, y, True) - 2 * mean_kernel(x, y, False)


def chamfer_matrix(a: Tensor, b: Tensor, max_elements: int = 2 ** 24) -> Tensor:
    """Pairwise Chamfer distances between clouds ``a: (n, N, d)`` and ``b: (m, M, d)``.

    ``CD(X, Y) = mean_x min_y |x - y|^2 + mean_y min_x |x - y|^2``. Returns ``(n, m)``,
    computed in row chunks of at most ``max_elements`` point-pair distances.
    """
    a, b = a.float(), b.float()
    n, m, pn, pm = len(a), len(b), a.shape[1], b.shape[1]
    flat_b = b.reshape(m * pm, -1)  # (m * M, d)
    out = torch.empty(n, m, dtype=torch.float32, device=a.device)
    rows = max(1, max_elements // max(1, m * pn * pm))
    for i in range(0, n, rows):
        chunk = a[i:i + rows]  # (r, N, d)
        r = len(chunk)
        d2 = torch.cdist(chunk.reshape(r * pn, -1), flat_b).pow_(2).view(r, pn, m, pm)
        out[i:i + r] = d2.amin(3).mean(1) + d2.amin(1).mean(2)  # (r, m)
    return out


def knn_classify(dist: Tensor, ref_labels: Tensor, k: int = 1) -> Tensor:
    """Majority label among the ``k`` nearest references. ``dist: (n, m)`` -> ``(n,) long``.

    Ties go to the label of the nearest neighbour among the tied ones.
    """
    k = min(k, dist.shape[1])
    idx = dist.topk(k, dim=1, largest=False).indices  # (n, k), nearest first
    labels = ref_labels.to(dist.device)[idx]  # (n, k)
    num = int(ref_labels.max()) + 1
    votes = torch.zeros(len(dist), num, device=dist.device)
    # nearest neighbours get a tiny extra weight so that ties resolve towards them
    weight = 1.0 + 1e-3 * torch.arange(k, 0, -1, device=dist.device, dtype=torch.float32) / k
    votes.scatter_add_(1, labels, weight.expand_as(labels).contiguous())
    return votes.argmax(1)


def _nna(d_xy: Tensor, d_xx: Tensor, d_yy: Tensor) -> float:
    """1-NN two-sample accuracy (Lopez-Paz & Oquab 2017) from the three distance matrices."""
    inf = torch.tensor(float("inf"), device=d_xx.device)
    d_xx = d_xx.clone().fill_diagonal_(inf)
    d_yy = d_yy.clone().fill_diagonal_(inf)
    # x is classified right when its nearest neighbour (leaving itself out) is another x
    x_right = d_xx.min(1).values < d_xy.min(1).values
    y_right = d_yy.min(1).values < d_xy.min(0).values
    return float(torch.cat([x_right, y_right]).float().mean())


def _check_pair(samples: Tensor, reference: Tensor) -> None:
    if samples.dim() != reference.dim() or samples.shape[-1] != reference.shape[-1]:
        raise ValueError(f"samples {tuple(samples.shape)} and reference "
                         f"{tuple(reference.shape)} must both be (n, 2) points or both "
                         "(n, N, 2) clouds")
    if len(samples) < 2 or len(reference) < 2:
        raise ValueError("metrics need at least 2 samples and 2 reference samples")


def _finite(samples: Tensor) -> Tensor:
    return torch.isfinite(samples.flatten(1)).all(1)


def density_metrics(samples: Tensor, reference: Tensor, cond: Tensor | None = None,
                    ref_cond: Tensor | None = None, *, num_projections: int = 512,
                    max_points: int = 2000, k: int = 5) -> dict[str, float]:
    """``sliced_w2``, ``mmd_rbf`` (and ``class_acc``) of points ``(n, 2)`` vs ``(m, 2)``."""
    _check_pair(samples, reference)
    samples, reference = samples.detach().cpu(), reference.detach().cpu()
    out = {"sliced_w2": sliced_wasserstein(samples, reference, num_projections),
           "mmd_rbf": mmd_rbf(samples[:max_points], reference[:max_points])}
    if cond is not None and ref_cond is not None:
        ref = reference[:max_points]
        d = torch.cdist(samples.double(), ref.double())
        pred = knn_classify(d, ref_cond.cpu()[:max_points].long(), k)
        out["class_acc"] = float((pred == cond.cpu().long()).float().mean())
    return out


def mixture_metrics(samples: Tensor, law: GaussianMixture) -> dict[str, float]:
    """``mode_weight_err`` and ``mode_width`` of points ``(n, D)`` against a mixture's exact
    law (see the module docstring)."""
    x = samples.detach().cpu().double()
    log_joint, dist2 = law.clean_components(x)  # (n, K) each
    mode = log_joint.argmax(-1)  # (n,)
    share = torch.bincount(mode, minlength=len(law.weights)).double() / len(x)
    # whitened by its mode, a sample's squared length is D on average for exact samples
    own = dist2.gather(1, mode[:, None]).squeeze(1)  # (n,)
    return {"mode_weight_err": float((share - law.weights).abs().max()),
            "mode_width": float((own.mean() / x.shape[1]).sqrt())}


def cloud_metrics(samples: Tensor, reference: Tensor, cond: Tensor | None = None,
                  ref_cond: Tensor | None = None, *, k: int = 5) -> dict[str, float]:
    """``mmd_cd``, ``coverage_cd``, ``nna_cd`` (and ``class_acc``) of clouds ``(n, N, 2)``."""
    _check_pair(samples, reference)
    samples, reference = samples.detach(), reference.detach().to(samples.device)
    d_xy = chamfer_matrix(samples, reference)  # (n, m)
    d_xx = chamfer_matrix(samples, samples)
    d_yy = chamfer_matrix(reference, reference)
    out = {"mmd_cd": float(d_xy.min(0).values.mean()),
           "coverage_cd": float(d_xy.argmin(1).unique().numel() / len(reference)),
           "nna_cd": _nna(d_xy, d_xx, d_yy)}
    if cond is not None and ref_cond is not None:
        pred = knn_classify(d_xy, ref_cond.long(), k)
        out["class_acc"] = float((pred.cpu() == cond.cpu().long()).float().mean())
    return out


def affine_metrics(samples: Tensor, affine: Tensor) -> dict[str, float]:
    """How closely clouds follow their affine condition: RMS error of the centroid
    (``affine_shift_err``) and of the log RMS radius (``affine_scale_err``)."""
    err = cloud_properties(samples.double()) - affine.double().to(samples.device)  # (n, 3)
    return {"affine_shift_err": float(err[:, :2].pow(2).sum(1).mean().sqrt()),
            "affine_scale_err": float(err[:, 2].pow(2).mean().sqrt())}


def compute_metrics(samples: Tensor, reference: Tensor, cond: Any = None,
                    ref_cond: Any = None, data: Any = None) -> dict[str, float]:
    """Dispatch on rank: ``(n, 2)`` points -> :func:`density_metrics`, ``(n, N, 2)`` clouds ->
    :func:`cloud_metrics`. Non-finite samples count in ``finite_frac`` (higher is better) and
    are left out of the other metrics.

    With affine conditions (``data.affine=true``) samples and reference are first mapped back
    by their own conditions, so the usual metrics measure the shape given the condition (a
    model that ignored its condition scores badly); clouds add :func:`affine_metrics`.
    ``data`` (the data module): where it knows its exact ``law`` (the ``mixture`` density),
    :func:`mixture_metrics` too.
    """
    if samples.dim() not in (2, 3):
        raise ValueError(f"points metrics take (n, 2) points or (n, N, 2) clouds; got samples "
                         f"of shape {tuple(samples.shape)}")
    labels, affine = split_cond(cond)
    ref_labels, ref_affine = split_cond(ref_cond)
    ok = _finite(samples)
    frac = float(ok.float().mean())
    if not bool(ok.all()):
        samples = samples[ok]
        labels = labels[ok.to(labels.device)] if labels is not None else None
        affine = affine[ok.to(affine.device)] if affine is not None else None
    if len(samples) < 2:
        return {"finite_frac": frac}
    out = {}
    if affine is not None and ref_affine is not None:
        if samples.dim() == 3:
            out = affine_metrics(samples, affine)
        samples = undo_affine(samples.double(), affine.double()).float()
        reference = undo_affine(reference.double(), ref_affine.double()).float()
    fn = density_metrics if samples.dim() == 2 else cloud_metrics
    law = getattr(data, "law", None)
    if law is not None and affine is None:
        out.update(mixture_metrics(samples, law))
    return {**fn(samples, reference, labels, ref_labels), **out, "finite_frac": frac}
