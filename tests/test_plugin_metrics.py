"""omnidiff.plugins.metrics: the feature-set metrics omnidiff offers domain authors."""

from __future__ import annotations

import math

import torch

from omnidiff.plugins.metrics import frechet_distance, precision_recall


def _features(n: int, d: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


def test_frechet_distance_of_shifted_and_scaled_gaussians():
    f = _features(500)
    assert frechet_distance(f, f) < 1e-6
    assert abs(frechet_distance(f, f + 1.0) - 4.0) < 1e-6  # |mu shift|^2 = 4 * 1
    # same (zero) mean, covariance scaled by 4: tr(S + 4S - 2 * 2S) = tr(S)
    c = f - f.mean(0)
    assert abs(frechet_distance(c, 2 * c) - torch.cov(c.T.double()).trace().item()) < 1e-6
    assert frechet_distance(f[:1], f[1:2] + 3.0) >= 0  # one sample each: zero covariance


def test_precision_recall_covers_itself_and_not_a_distant_set():
    f = _features(200)
    assert precision_recall(f, f.clone()) == (1.0, 1.0)
    assert precision_recall(f, f + 100.0) == (0.0, 0.0)
    precision, recall = precision_recall(f, f[:1])  # too few fakes for a k-NN ball
    assert precision == 1.0 and math.isnan(recall)


def test_the_image_domain_re_exports_them():
    from omnidiff_domains.image import metrics

    assert metrics.frechet_distance is frechet_distance
    assert metrics.precision_recall is precision_recall
