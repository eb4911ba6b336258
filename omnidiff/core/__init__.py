"""The domain-agnostic diffusion core: schedules (:mod:`~omnidiff.core.schedules`), the forward
process (:mod:`~omnidiff.core.forward`), predictions and their conversions
(:mod:`~omnidiff.core.predictions`), conditions (:mod:`~omnidiff.core.conditions`), the
denoiser model (:mod:`~omnidiff.core.model`), losses (:mod:`~omnidiff.core.losses`),
classifier-free guidance (:mod:`~omnidiff.core.guidance`) and an exact Gaussian-mixture oracle
(:mod:`~omnidiff.core.gaussian_mixture`). It knows nothing of images or audio."""
