"""A Gaussian mixture with a closed-form denoiser: the ground truth the core is tested against.

For data x0 ~ sum_k w_k N(mu_k, S_k) and x_t = alpha x0 + sigma eps, the noisy marginal is the
mixture of N(alpha mu_k, alpha^2 S_k + sigma^2 I), and the exact posterior mean is

    E[x0 | x_t] = sum_k r_k(x_t) (mu_k + alpha S_k (alpha^2 S_k + sigma^2 I)^{-1} (x_t - alpha
    mu_k))

with responsibilities r_k. So every sampler, loss and likelihood can be checked against exact
answers with no training at all.
"""

from __future__ import annotations

import math
from typing import Callable

import torch

from omnidiff._util import append_dims
from omnidiff.core.predictions import target
from omnidiff.core.schedules import Schedule, get_schedule
from omnidiff.errors import UserError

__all__ = ["GaussianMixture", "eight_gaussians", "random_mixture"]


class GaussianMixture:
    """weights: (K,), means: (K, D), covs: (K, D, D) (or (K,) isotropic variances)."""

    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)  # (K, D)
        k, d = self.means.shape
        covs = torch.as_tensor(covs, dtype=torch.float64)
        if covs.ndim == 1:
            covs = covs[:, None, None] * torch.eye(d, dtype=torch.float64)
        self.covs = covs  # (K, D, D)
        self.dim = d

    # ---- moments of the data -------------------------------------------------------------
    def mean(self) -> torch.Tensor:
        return self.weights @ self.means

    def covariance(self) -> torch.Tensor:
        m = self.mean()
        dev = self.means - m  # (K, D)
        return (self.weights[:, None, None] * (self.covs + dev[:, :, None] * dev[:, None, :])
                ).sum(0)

    def sample(self, n: int, generator: torch.Generator | None = None, *,
               stratified: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """(x: (n, D) float64, component index: (n,)). ``stratified``: each component gets
        its share of the n samples exactly (up to rounding), in random order, instead of a
        multinomial draw: a reference set whose weights carry no sampling noise."""
        if stratified:
            comp = _stratified_components(self.weights, n, generator)
        else:
            comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        chol = torch.linalg.cholesky(self.covs)  # (K, D, D)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        return self.means[comp] + (chol[comp] @ z[:, :, None])[..., 0], comp

    def conditional(self, observed: torch.Tensor, y: torch.Tensor) -> "GaussianMixture":
        """The exact law of the other coordinates given ``x[observed] = y`` (a mixture again:
        each component's Gaussian conditional, weights times the component's density of
        ``y``). observed: (D,) bool, y: (n_observed,)."""
        o = torch.as_tensor(observed, dtype=torch.bool)
        h, y = ~o, torch.as_tensor(y, dtype=torch.float64)
        s_oo = self.covs[:, o][:, :, o]  # (K, O, O)
        s_ho = self.covs[:, h][:, :, o]  # (K, H, O)
        s_hh = self.covs[:, h][:, :, h]  # (K, H, H)
        gain = s_ho @ torch.linalg.inv(s_oo)  # (K, H, O)
        dev = y - self.means[:, o]  # (K, O)
        means = self.means[:, h] + (gain @ dev[:, :, None])[..., 0]  # (K, H)
        covs = s_hh - gain @ s_ho.transpose(1, 2)
        log_w = torch.log(self.weights) + torch.distributions.MultivariateNormal(
            self.means[:, o], s_oo).log_prob(y)
        return GaussianMixture(log_w.softmax(0), means, 0.5 * (covs + covs.transpose(1, 2)))

    # ---- noisy marginals -----------------------------------------------------------------
    # With S_k = U_k diag(d_k) U_k^T, the noisy covariance alpha^2 S_k + sigma^2 I shares U_k,
    # so solves and log-determinants are elementwise (no batched LAPACK calls in a sampler).
    def _eig(self):
        if not hasattr(self, "_evals"):
            self._evals, self._evecs = torch.linalg.eigh(self.covs)  # (K, D), (K, D, D)
        return self._evals, self._evecs

    def _rotated(self, x: torch.Tensor, t: torch.Tensor, schedule: Schedule):
        """Per component: z = U^T (x - alpha mu) (B, K, D), noisy variances (B, K, D), alpha."""
        d, u = self._eig()
        a, s = schedule.alpha_sigma(t)  # (B,)
        diff = x[:, None, :] - a[:, None, None] * self.means  # (B, K, D)
        z = torch.einsum("kji,bkj->bki", u, diff)
        var = a[:, None, None] ** 2 * d + s[:, None, None] ** 2  # (B, K, D)
        return z, var, a

    def _log_gauss(self, z: torch.Tensor, var: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log(w_k N_k), squared Mahalanobis distance), each (B, K), of rotated points z and
        variances var (B, K, D) from :meth:`_rotated`."""
        m2 = (z * z / var).sum(-1)
        return (torch.log(self.weights) - 0.5 * m2 - 0.5 * torch.log(var).sum(-1)
                - 0.5 * self.dim * math.log(2 * math.pi)), m2

    def _log_joint(self, x, t, schedule):
        return self._log_gauss(*self._rotated(x, t, schedule)[:2])[0]

    def clean_components(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """For clean points x: (B, D): (log(w_k N(x; mu_k, S_k)), the squared Mahalanobis
        distance to each mode), each (B, K), float64. (Any schedule is clean at t = 0.)"""
        x = x.double()
        t = torch.zeros(x.shape[0], dtype=torch.float64)
        return self._log_gauss(*self._rotated(x, t, get_schedule("flow"))[:2])

    def responsibilities(self, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule
                         ) -> torch.Tensor:
        """Posterior component probabilities r_k(x_t): (B, K)."""
        return self._log_joint(x_t.double(), t.double(), schedule).softmax(-1)

    def log_prob(self, x: torch.Tensor, t: torch.Tensor | float = 0.0,
                 schedule: Schedule | str = "flow") -> torch.Tensor:
        """log p_t(x): (B,). At t = 0 this is the data's log-density (any schedule)."""
        schedule = get_schedule(schedule)
        x = x.double()
        t = torch.as_tensor(t, dtype=torch.float64).expand(x.shape[0])
        return torch.logsumexp(self._log_joint(x, t, schedule), -1)

    def posterior_mean(self, x_t: torch.Tensor, t: torch.Tensor, schedule: Schedule
                       ) -> torch.Tensor:
        """E[x0 | x_t]: (B, D), float64. x_t: (B, D), t: (B,)."""
        x, t = x_t.double(), t.double()
        d, u = self._eig()
        z, var, a = self._rotated(x, t, schedule)
        r = self._log_gauss(z, var)[0].softmax(-1)  # (B, K)
        gain = a[:, None, None] * d * z / var  # (B, K, D) in each component's eigenbasis
        comp_mean = self.means + torch.einsum("kij,bkj->bki", u, gain)
        return (r[..., None] * comp_mean).sum(1)

    def model(self, schedule: Schedule | str, prediction: str = "eps"
              ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """An exact ``model(x_t, t) -> prediction`` for the samplers (any prediction type)."""
        schedule = get_schedule(schedule)

        def fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t64 = t.double()
            x0 = self.posterior_mean(x_t, t64, schedule)
            a, s = schedule.alpha_sigma(t64)
            eps = (x_t.double() - append_dims(a, 2) * x0) / append_dims(s, 2)
            return target(prediction, x0, eps, t64, schedule).to(x_t.dtype)
        return fn


def _stratified_components(weights: torch.Tensor, n: int,
                           generator: torch.Generator | None) -> torch.Tensor:
    """(n,) component indices, ``floor(w_k n)`` of each and the rest to the largest
    remainders, shuffled."""
    share = weights * n  # (K,)
    counts = share.floor().long()
    rest = n - int(counts.sum())
    counts[torch.argsort(share - counts, descending=True)[:rest]] += 1
    comp = torch.repeat_interleave(torch.arange(len(weights)), counts)  # (n,)
    return comp[torch.randperm(n, generator=generator)]


def eight_gaussians(radius: float = 2.0, std: float = 0.2) -> GaussianMixture:
    """Eight isotropic Gaussians on a circle: the classic 2D toy density."""
    ang = torch.arange(8, dtype=torch.float64) * (2 * math.pi / 8)
    means = radius * torch.stack([torch.cos(ang), torch.sin(ang)], -1)
    return GaussianMixture(torch.ones(8), means, torch.full((8,), std ** 2))


def random_mixture(dim: int, *, components: int = 8, width: str = "narrow",
                   seed: int = 0) -> GaussianMixture:
    """A random mixture in ``dim`` dimensions with unit-scale means and anisotropic modes.

    Means ~ N(0, I) (the data's scale is about 1 per coordinate); each mode's covariance has a
    random orientation and standard deviations drawn log-uniformly from [0.02, 0.1]
    (``narrow``: well-separated modes, the ODE's hard case) or [0.2, 0.8] (``wide``:
    overlapping modes); weights ~ Dirichlet(2) (a sum of two exponentials each,
    normalised)."""
    widths = {"narrow": (0.02, 0.1), "wide": (0.2, 0.8)}
    if width not in widths:
        raise UserError(f"unknown width {width!r}; choose one of: {', '.join(widths)}")
    g = torch.Generator().manual_seed(int(seed))
    lo, hi = widths[width]
    k, f64 = components, torch.float64
    means = torch.randn(k, dim, generator=g, dtype=f64)  # (K, D)
    stds = lo * (hi / lo) ** torch.rand(k, dim, generator=g, dtype=f64)  # (K, D)
    rot, _ = torch.linalg.qr(torch.randn(k, dim, dim, generator=g, dtype=f64))  # (K, D, D)
    covs = rot @ torch.diag_embed(stds ** 2) @ rot.transpose(1, 2)  # (K, D, D)
    weights = -torch.log(torch.rand(k, 2, generator=g, dtype=f64)).sum(1)  # (K,)
    return GaussianMixture(weights, means, covs)
