"""Training with Lightning: the LightningModules (diffusion, autoencoder, distillation), their
callbacks, Lightning checkpoints, the optimizer, run folders and loggers. Nothing here reads a
``DictConfig``; :mod:`omnidiff.tasks.train` builds these from a composed config."""
