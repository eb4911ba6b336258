"""Sampling from trained models: :func:`~omnidiff.inference.pipeline.load` and the
:class:`~omnidiff.inference.pipeline.Pipeline` (generate, calibrate, likelihood, save,
metrics), and conditions read from files (:mod:`~omnidiff.inference.condition_files`). Runs
without Lightning."""
