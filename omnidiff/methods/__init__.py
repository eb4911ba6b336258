"""Methods built on the core and the plugin contract: latent diffusion
(:mod:`~omnidiff.methods.latent`), consistency models (:mod:`~omnidiff.methods.consistency`),
reflow (:mod:`~omnidiff.methods.reflow`) and the distillation options
(:mod:`~omnidiff.methods.distill_options`). No Lightning, no DictConfig."""
