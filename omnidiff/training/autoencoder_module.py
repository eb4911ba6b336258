"""Training an autoencoder with Lightning: ``omnidiff train stage=autoencoder`` (or a recipe
that sets it). Same run folder, checkpoints, resume and logs as a diffusion run; its
``model.pt`` is the autoencoder's (:mod:`omnidiff.methods.latent.autoencoder`), which a latent
diffusion run then takes as ``autoencoder=<model.pt>``.

Loss per sample: ``recon(x_hat, x) + kl_weight * KL(q(z|x) || N(0, I)) / numel(x)`` for a VAE
(the reconstruction a mean over the sample's values, the KL a sum over its latents: LDM's
``kl_weight`` with both terms divided by the sample's size), ``recon`` alone for ``kind=ae``.
When training ends, the latent shift and scale are fitted on training data; the evaluation
(:class:`ReconstructionCallback`) reconstructs held-out data and scores the reconstructions
with the domain's own metrics against the originals and their conditions, so a digits
autoencoder reports the class accuracy of its reconstructions, a tones one their pitch
accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Sequence

import torch
from lightning.pytorch import LightningModule

from omnidiff.core.conditions import index_cond
from omnidiff.errors import ConfigError, blamed_on
from omnidiff.methods.latent.autoencoder import Autoencoder, autoencoder_payload, check_ae_options
from omnidiff.methods.latent.losses import reconstruction_loss
from omnidiff.plugins.contract import data_kwargs
from omnidiff.plugins.registry import get_domain
from omnidiff.training.callbacks import Evaluation
from omnidiff.training.diffusion_module import WeightsOnlyCheckpoints
from omnidiff.training.optim import adamw, optimizer_args

__all__ = ["AutoencoderModule", "ReconstructionCallback", "STATS_BATCHES"]

STATS_BATCHES = 64  # training batches the latent statistics are fitted on


class AutoencoderModule(WeightsOnlyCheckpoints, LightningModule):
    """A domain's samples ``(B, *event)`` through an :class:`Autoencoder` (``ae`` block, whole).
    Logs ``train/loss``, ``train/recon``, ``train/kl`` every step and ``val/loss`` (the
    reconstruction of the posterior mean) per validation."""

    def __init__(self, domain: str, ae: dict[str, Any], *, event_shape: Sequence[int],
                 optim: dict[str, Any] | None = None, data_cfg: dict[str, Any] | None = None):
        super().__init__()
        ae = check_ae_options(dict(ae))
        optim = dict(optim or {})
        optimizer_args(optim)
        self.save_hyperparameters({
            "domain": str(domain), "stage": "autoencoder", "ae": ae,
            "event_shape": [int(s) for s in event_shape], "optim": optim,
            "data_cfg": dict(data_cfg or {})})
        self.domain = get_domain(domain)
        with blamed_on(ConfigError, "ae"):
            self.autoencoder = Autoencoder(tuple(event_shape), **ae)
        self.recon = reconstruction_loss(self.autoencoder.options["recon"])
        self.latent_stats: dict[str, float] = {}

    def _loss(self, x: torch.Tensor, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean reconstruction loss, mean KL per value of x) of a batch x: (B, *event)."""
        mean, logvar = self.autoencoder.moments(x)  # (B, *latent) each
        if logvar is None:
            z, kl = mean, mean.new_zeros(())
        else:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device,
                                dtype=mean.dtype)
            z = mean + (0.5 * logvar).exp() * noise  # (B, *latent)
            kl = 0.5 * (mean.square() + logvar.exp() - 1.0 - logvar).flatten(1).sum(1)  # (B,)
            kl = kl.mean() / x[0].numel()
        x_hat = self.autoencoder.decode_raw(z)  # (B, *event)
        return self.recon(x_hat.float(), x.float()).mean(), kl

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        rec, kl = self._loss(batch["x"])
        loss = rec + self.autoencoder.options["kl_weight"] * kl
        bs = batch["x"].shape[0]
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True, batch_size=bs)
        self.log_dict({"train/recon": rec, "train/kl": kl}, on_step=True, on_epoch=False,
                      batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x = batch["x"]
        loss = self.recon(self.autoencoder.reconstruct(x).float(), x.float()).mean()
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=x.shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self):
        return adamw(self.parameters(), **optimizer_args(dict(self.hparams.optim)))

    def on_train_end(self) -> None:
        """Fit the latent normalisation on training data (after EMA copied its average in)."""
        loader = self.trainer.datamodule.train_dataloader()
        batches = (b["x"] for _, b in zip(range(STATS_BATCHES), loader))
        self.latent_stats = self.autoencoder.fit_latent_stats(batches)

    def export_payload(self, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
        """The autoencoder's ``model.pt`` dict."""
        hp = self.hparams
        return autoencoder_payload(self.autoencoder, domain=hp.domain, data_cfg=hp.data_cfg,
                                   global_step=global_step,
                                   metrics={**self.latent_stats, "ema": bool(ema)})


class ReconstructionCallback(Evaluation):
    """Every ``every_n_steps`` steps (0: never) and when fitting ends: reconstruct ``n_ref``
    held-out samples, write the domain's artifacts of the first ``n`` originals and their
    reconstructions (``<run>/samples``) and log the domain's metrics of the reconstructions
    against the originals (with the originals' conditions), plus ``recon_l1`` / ``recon_mse``
    and ``psnr`` (for data in [-1, 1])."""

    log_prefix = "recon"
    final_prefix = "reconstructions"

    def __init__(self, run_dir: str | Path, *, every_n_steps: int = 0, n: int = 64,
                 n_ref: int = 512, seed: int = 0):
        """``n`` originals and reconstructions are written; ``n_ref`` are scored."""
        super().__init__(every_n_steps)
        self.run_dir = Path(run_dir)
        self.n, self.n_ref, self.seed = int(n), int(n_ref), int(seed)
        self._reference: tuple[torch.Tensor, Any] | None = None

    @torch.no_grad()
    def _run(self, trainer: Any, module: AutoencoderModule, prefix: str) -> dict[str, Any]:
        dm, domain, ae = trainer.datamodule, module.domain, module.autoencoder
        if self._reference is None:
            self._reference = dm.reference(self.n_ref, torch.Generator().manual_seed(self.seed))
        ref, ref_cond = self._reference
        t0 = time.perf_counter()
        was_training = ae.training
        ae.eval()
        device = next(ae.parameters()).device
        recon = torch.cat([ae.reconstruct(c.to(device)).float().cpu()
                           for c in ref.split(256)])  # (n_ref, *event)
        ae.train(was_training)
        seconds = time.perf_counter() - t0
        k = min(self.n, ref.shape[0])
        for what, x in (("originals", ref[:k]), (prefix, recon[:k])):
            # the reconstructions' files are what TensorBoard shows
            self.files = domain.save_artifacts(x, self.run_dir / "samples",
                                               cond=index_cond(ref_cond, slice(0, k)),
                                               prefix=what,
                                               **data_kwargs(domain.save_artifacts, dm))
        metrics = {k_: float(v) for k_, v in domain.metrics(
            recon, ref, cond=ref_cond, ref_cond=ref_cond,
            **data_kwargs(domain.metrics, dm)).items()}
        err = (recon - ref.float()).flatten(1)
        mse = float(err.square().mean())
        metrics.update(recon_l1=float(err.abs().mean()), recon_mse=mse,
                       psnr=float(10 * torch.log10(torch.tensor(4.0 / max(mse, 1e-12)))),
                       recon_seconds=round(seconds, 3))
        return metrics

    def _final_extras(self, pl_module: Any) -> dict[str, Any]:
        return dict(pl_module.latent_stats)
