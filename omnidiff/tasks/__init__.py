"""The jobs omnidiff runs from a composed config: config composition and validation
(:mod:`~omnidiff.tasks.config`), training (:mod:`~omnidiff.tasks.train`), distillation
(:mod:`~omnidiff.tasks.distill`), sweeps (:mod:`~omnidiff.tasks.sweeps`), comparisons
(:mod:`~omnidiff.tasks.compare`) and the demo (:mod:`~omnidiff.tasks.demo`). The only code that
reads a ``DictConfig``."""
