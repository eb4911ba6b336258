"""Metrics over feature sets, for domain authors: compare generated samples with held-out
reference data in the feature space of any network (a classifier's penultimate layer, an
embedding, pooled pixels).

* :func:`frechet_distance`: the Fréchet distance between Gaussians fitted to two feature sets
  (the statistic behind FID; lower is better).
* :func:`precision_recall`: improved precision and recall (Kynkäänniemi et al., 2019; higher is
  better).

Pure torch: features are ``(N, D)`` tensors on any device, compared in float64.
"""

from __future__ import annotations

import torch

__all__ = ["frechet_distance", "precision_recall"]


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to features a: (N, D) and b: (M, D).

    ``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^{1/2})`` in float64; the trace of the matrix
    square root is computed from the eigenvalues of ``S_a^{1/2} S_b S_a^{1/2}`` (symmetric PSD).
    """
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a = torch.cov(a.T) if len(a) > 1 else torch.zeros(a.shape[1], a.shape[1], dtype=a.dtype)
    cov_b = torch.cov(b.T) if len(b) > 1 else torch.zeros(b.shape[1], b.shape[1], dtype=b.dtype)
    cov_a, cov_b = cov_a.reshape(a.shape[1], -1), cov_b.reshape(b.shape[1], -1)
    ev, vec = torch.linalg.eigh(cov_a)
    sqrt_a = (vec * ev.clamp_min(0).sqrt()) @ vec.T
    m = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((m + m.T) / 2).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt
    return float(fd.clamp_min(0))


def precision_recall(real: torch.Tensor, fake: torch.Tensor, k: int = 3) -> tuple[float, float]:
    """Improved precision / recall (Kynkäänniemi et al., 2019) of feature sets (N, D), (M, D).

    precision: fraction of fake features inside some real k-NN ball (radius = distance to the
    k-th nearest other real point); recall: the same with the roles swapped.
    """
    real, fake = real.double(), fake.double()

    def radii(x: torch.Tensor) -> torch.Tensor:  # (N,) distance to the k-th nearest neighbour
        d = torch.cdist(x, x)
        kk = min(k, len(x) - 1)
        return d.kthvalue(kk + 1, dim=1).values  # +1 skips the zero self-distance

    def coverage(ref: torch.Tensor, query: torch.Tensor) -> float:
        if len(ref) < 2 or len(query) == 0:
            return float("nan")
        r = radii(ref)
        inside = torch.cdist(query, ref) <= r[None]  # (M, N)
        return inside.any(1).double().mean().item()

    return coverage(real, fake), coverage(fake, real)
