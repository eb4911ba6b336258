"""Latent diffusion: the autoencoder and its file (:mod:`~.autoencoder`), its reconstruction
losses (:mod:`~.losses`), any domain seen through it (:mod:`~.domain`: ``LatentDomain``) and the
data module that serves its latents (:mod:`~.data`)."""
