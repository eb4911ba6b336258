"""Sample quality of time series against held-out reference series (lower is better).

* ``psd_dist``: mean absolute difference of the log10 average power spectra (per channel,
  ``torch.fft.rfft`` over the length), i.e. how far the frequency content is off.
* ``acf_err``: mean absolute difference of the average autocorrelation functions for lags
  1 .. L/4 (per series normalised, so it measures shape, not scale).
* ``sliced_w2``: sliced 2-Wasserstein distance (Bonneel et al. 2015) between the flattened
  series, by sorting random 1D projections (equal counts are compared exactly, unequal by
  matching quantiles).
* ``finite_frac``: fraction of samples without NaN / inf (higher is better); the others are
  computed over finite samples only.
"""

from __future__ import annotations

import torch

__all__ = ["power_spectrum", "autocorrelation", "sliced_w2", "compute_metrics"]


def power_spectrum(x: torch.Tensor) -> torch.Tensor:
    """Average power spectrum ``(C, L // 2 + 1)`` of ``x: (n, C, L)``."""
    x = x.double() - x.double().mean(-1, keepdim=True)
    return torch.fft.rfft(x, dim=-1).abs().pow(2).mean(0)


def autocorrelation(x: torch.Tensor, max_lag: int) -> torch.Tensor:
    """Average normalised autocorrelation ``(C, max_lag)`` for lags 1..max_lag of ``(n, C, L)``."""
    x = x.double() - x.double().mean(-1, keepdim=True)
    var = x.pow(2).mean(-1).clamp_min(1e-12)  # (n, C)
    acf = [(x[..., k:] * x[..., :-k]).mean(-1) / var for k in range(1, max_lag + 1)]
    return torch.stack(acf, -1).mean(0)


def sliced_w2(x: torch.Tensor, y: torch.Tensor, num_projections: int = 256, seed: int = 0) -> float:
    """Sliced W2 between ``x: (n, d...)`` and ``y: (m, d...)`` (flattened)."""
    x, y = x.double().flatten(1), y.double().flatten(1)
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(num_projections, x.shape[1], generator=g, dtype=torch.float64)
    dirs = dirs / dirs.norm(dim=1, keepdim=True)  # (P, d)
    px, py = (x @ dirs.T).sort(0).values, (y @ dirs.T).sort(0).values  # (n, P), (m, P)
    if len(px) != len(py):
        k = max(len(px), len(py))
        q = (torch.arange(k, dtype=torch.float64) + 0.5) / k
        px = torch.quantile(px, q, dim=0)
        py = torch.quantile(py, q, dim=0)
    return float((px - py).pow(2).mean().sqrt())


def compute_metrics(samples: torch.Tensor, reference: torch.Tensor, cond: torch.Tensor | None = None,
                    ref_cond: torch.Tensor | None = None) -> dict[str, float]:
    """``samples: (n, C, L)``, ``reference: (m, C, L)`` -> plain floats."""
    if samples.dim() != 3 or reference.shape[1:] != samples.shape[1:]:
        raise ValueError(f"timeseries metrics take (n, C, L) samples and reference of the same "
                         f"event shape; got {tuple(samples.shape)} and {tuple(reference.shape)}")
    samples, reference = samples.detach().cpu(), reference.detach().cpu()
    ok = torch.isfinite(samples).flatten(1).all(1)
    out = {"finite_frac": float(ok.double().mean())}
    s = samples[ok]
    if len(s) < 2:
        return {**out, "psd_dist": float("inf"), "acf_err": float("inf"),
                "sliced_w2": float("inf")}
    eps = 1e-8
    out["psd_dist"] = float((torch.log10(power_spectrum(s) + eps)
                             - torch.log10(power_spectrum(reference) + eps)).abs().mean())
    lags = max(1, samples.shape[-1] // 4)
    out["acf_err"] = float((autocorrelation(s, lags) - autocorrelation(reference, lags))
                           .abs().mean())
    out["sliced_w2"] = sliced_w2(s, reference)
    return out
