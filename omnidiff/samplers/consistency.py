"""Multistep consistency sampling (Song et al. 2023, Algorithm 1)."""

from __future__ import annotations

import torch

from omnidiff.samplers.denoiser import Denoiser, coefficients, lincomb
from omnidiff.samplers.helpers import randn

__all__ = ["consistency"]


def consistency(denoise: Denoiser, x: torch.Tensor, ts: list[float], *,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Jump to a clean estimate, re-noise it to the next time with fresh noise, repeat.

    At each time t of the grid ``x0 = D(x, t)``, then ``x = alpha(t_next) x0 + sigma(t_next) z``;
    :func:`~omnidiff.samplers.sample` takes the final estimate at the last time, so ``steps``
    times cost ``steps`` evaluations. With a consistency model (``D`` its consistency
    function, :class:`~omnidiff.methods.consistency.ConsistencyModel`) one step is a sample and
    more steps refine it; with any other model it is a coarse stochastic sampler. Its default grid
    is ``logsnr_trailing`` (never re-noising to t_min, where it would add nothing); the
    intermediate times are an option as an explicit ``grid=[t_max, t_1, ...]``.
    """
    for t, t_next in zip(ts[:-1], ts[1:]):
        x0 = denoise.x0(x, t)
        a, s, _ = coefficients(denoise.schedule, t_next)
        x = lincomb((a, x0), (s, randn(x0, generator)))
    return x
