"""Samplers: pure functions over a denoiser, chosen by name through :func:`sample`.

The public surface of the sampling layer: :func:`sample` and the table of samplers
(:mod:`~omnidiff.samplers.sampling`), time grids (:mod:`~omnidiff.samplers.grids`), calibrated
grids (:func:`calibrate_grid`), exact likelihoods (:mod:`~omnidiff.samplers.likelihood`) and
the batched generation loop (:func:`generate_samples`). The solvers themselves are in
:mod:`~omnidiff.samplers.exponential`, :mod:`~omnidiff.samplers.ode` and
:mod:`~omnidiff.samplers.consistency`.
"""

from omnidiff.samplers.calibrate import calibrate_grid
from omnidiff.samplers.denoiser import Denoiser
from omnidiff.samplers.generate import generate_samples
from omnidiff.samplers.grids import GRIDS, timesteps
from omnidiff.samplers.likelihood import LogLikelihood, log_likelihood
from omnidiff.samplers.sampling import (
                                        DEFAULT_STEPS,
                                        SAMPLERS,
                                        STOCHASTIC,
                                        check_sampler_options,
                                        default_grid,
                                        register_sampler,
                                        resolve_grid,
                                        sample,
                                        sampler_option_names,
)

__all__ = ["SAMPLERS", "STOCHASTIC", "GRIDS", "DEFAULT_STEPS", "register_sampler", "sample",
           "timesteps", "resolve_grid", "default_grid", "check_sampler_options",
           "sampler_option_names", "calibrate_grid", "Denoiser", "generate_samples",
           "log_likelihood", "LogLikelihood"]
