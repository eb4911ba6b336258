"""The LightningModule that trains any registered domain: a domain's network, a schedule and
``diffusion_loss``.

:class:`DiffusionModule` is built from plain typed arguments (``DictConfig`` stops at
:mod:`omnidiff.tasks`) and stores them with ``save_hyperparameters`` as plain python, so a
Lightning ``.ckpt`` loads with ``torch.load(weights_only=True)``. The run itself (folder,
Trainer, callbacks, resume) is :func:`omnidiff.tasks.train.train`.
"""

from __future__ import annotations

from typing import Any

import torch
from lightning.pytorch import LightningModule

from omnidiff._version import __version__
from omnidiff.core.conditions import CondSpec
from omnidiff.core.losses import check_loss_options, diffusion_loss
from omnidiff.errors import ConfigError, DataError
from omnidiff.methods.latent.autoencoder import Autoencoder
from omnidiff.model_file import export_payload
from omnidiff.model_spec import ModelSpec
from omnidiff.plugins.data import check_batch
from omnidiff.training.optim import adamw, optimizer_args

__all__ = ["DiffusionModule", "WeightsOnlyCheckpoints", "plain_python"]


class WeightsOnlyCheckpoints:
    """A LightningModule mix-in: checkpoints stay loadable with ``weights_only=True`` (hparams
    as plain python) and carry omnidiff's version and the global RNG, which drives noise and
    time sampling, so a resumed run continues it."""

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        for key in ("hyper_parameters", "datamodule_hyper_parameters"):
            if key in checkpoint:
                checkpoint[key] = plain_python(checkpoint[key])
        checkpoint.pop("hparams_type", None)
        checkpoint["omnidiff_version"] = __version__
        checkpoint["omnidiff_rng"] = {"torch": torch.get_rng_state()}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        rng = checkpoint.get("omnidiff_rng") or {}
        if isinstance(rng.get("torch"), torch.Tensor):
            torch.set_rng_state(rng["torch"])


class DiffusionModule(WeightsOnlyCheckpoints, LightningModule):
    """A domain's network + a schedule, trained with ``diffusion_loss``.

    ``spec`` (a :class:`~omnidiff.model_spec.ModelSpec`) says what the model is: domain,
    network options, schedule, event shape, condition, prediction, sigma_data, data config.
    The config's other blocks come whole: ``loss`` holds
    :func:`~omnidiff.core.losses.diffusion_loss`'s keyword arguments (``time_sampling``,
    ``weighting``, ``p_uncond``, ``min_snr_gamma``, ...; its ``prediction`` and ``sigma_data``
    are the spec's), ``optim`` :func:`~omnidiff.training.optim.adamw`'s (plus the EMA's keys,
    read by the callback). Batches are dicts ``{"x": (B, *event), "cond": ...}`` (``cond`` of
    the kind ``spec.cond`` declares: labels, a tensor, a dict; only for conditional data).
    Logs ``train/loss`` every step and ``val/loss`` per validation. With ``autoencoder`` (an
    :class:`~omnidiff.methods.latent.autoencoder.Autoencoder` or its ``config()``) it is a
    latent model: ``spec.event_shape`` is the latents', batches hold latents, and the frozen
    autoencoder is a submodule (in every checkpoint) that decodes its samples.

    The hyper-parameters keep the layout of every earlier version (``model_cfg``,
    ``schedule_cfg``, ``event_shape``, ``cond_spec``, ``data_cfg``, ``loss``, ``optim``,
    ``autoencoder``), so old checkpoints resume and read back into the same spec.
    """

    _batch_checked = False  # the first training batch is checked (plugins.data.check_batch)

    def __init__(self, spec: ModelSpec, *, loss: dict[str, Any] | None = None,
                 optim: dict[str, Any] | None = None, autoencoder: Any = None):
        super().__init__()
        ae = _autoencoder(autoencoder)
        loss = check_loss_options(_loss_of(spec, dict(loss or {})))
        optim = dict(optim or {})
        optimizer_args(optim)  # unknown keys fail here, not at the first step
        self.save_hyperparameters({**spec.hparams(), "loss": loss, "optim": optim,
                                   "autoencoder": None if ae is None else ae.config()})
        self.spec = spec
        if ae is not None:  # latent diffusion: the frozen autoencoder rides along
            # frozen; left in train mode with the module (it has no dropout or batch norm)
            self.autoencoder = ae.requires_grad_(False).train()
        self.domain = spec.build_domain(None if ae is None else self.autoencoder)
        self.model = spec.build(self.domain)
        self.schedule = self.model.schedule
        self._aux = aux_loss_of(self.domain, loss.get("aux"), spec.data)

    @property
    def cond_spec(self) -> CondSpec:
        return self.spec.cond

    # ---- steps ---------------------------------------------------------------------------
    def _batch_cond(self, batch: dict[str, Any]) -> Any:
        """The batch's condition (None for an unconditional model)."""
        if not self.cond_spec.conditional:
            return None
        cond = batch.get("cond")
        if cond is None:
            raise DataError(f"the model is conditioned on {self.cond_spec.describe()} but "
                            "a training batch has no 'cond'; the data module must yield "
                            "{'x': ..., 'cond': ...}")
        return cond

    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
              ) -> torch.Tensor:
        x, cond = batch["x"], self._batch_cond(batch)  # x: (B, *event) data
        loss, _ = diffusion_loss(self.model, self.model.to_prior(x, cond),
                                 schedule=self.schedule, cond=cond, generator=generator,
                                 **{**self.hparams.loss, "aux": self._aux_on(x)})
        return loss

    def _aux_on(self, x: torch.Tensor) -> Any:
        """The domain's auxiliary loss (``loss.aux``) as ``diffusion_loss`` calls it, on data:
        the estimate of the diffused variable is taken back through the prior first."""
        if self._aux is None:
            return None
        return lambda z_hat, z0, cond: self._aux(self.model.from_prior(z_hat, cond), x, cond)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if not self._batch_checked:  # the first batch, with the domain contract's wording
            check_batch(batch, self.spec.event_shape, self.cond_spec,
                        self.model.net_dtype or torch.float32)
            self._batch_checked = True
        loss = self._loss(batch)
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=batch["x"].shape[0])
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        # fixed noise and times per batch, so successive validations are comparable
        g = torch.Generator(device=batch["x"].device).manual_seed(10_007 + batch_idx)
        loss = self._loss(batch, generator=g)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=batch["x"].shape[0], sync_dist=True)
        return loss

    def configure_optimizers(self):
        return adamw(self.parameters(), **optimizer_args(dict(self.hparams.optim)))

    def export_payload(self, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
        """The payload (the ``model.pt`` dict) of the current weights."""
        return export_payload(self, ema=ema, global_step=global_step)


def _loss_of(spec: ModelSpec, loss: dict[str, Any]) -> dict[str, Any]:
    """The ``loss`` block with the spec's ``prediction`` and ``sigma_data`` (a block that names
    others contradicts the model: one line says so)."""
    for key in ("prediction", "sigma_data"):
        if key in loss and loss[key] != getattr(spec, key):
            raise ConfigError(f"loss.{key}={loss[key]!r} contradicts the model's {key} "
                              f"({getattr(spec, key)!r}); set one value for both")
    return {**loss, "prediction": spec.prediction, "sigma_data": spec.sigma_data}


def aux_loss_of(domain: Any, name: Any, data: dict[str, Any] | None) -> Any:
    """The domain's auxiliary loss named ``name`` (``loss.aux``; None: none), a function
    ``(x0_hat, x0, cond) -> (B,)`` on data; one line when the domain has no such loss."""
    if not name:
        return None
    if getattr(domain, "aux_loss", None) is None:
        raise ConfigError(f"loss.aux={name!r}: the {getattr(domain, 'name', '?')} domain has "
                          "no auxiliary losses; drop loss.aux")
    return domain.aux_loss(str(name), dict(data or {}))


def _autoencoder(autoencoder: Any) -> Any:
    """An Autoencoder, one rebuilt from its ``config()`` (a Lightning checkpoint's
    hyper-parameters; the weights come with the state dict), or None."""
    if autoencoder is None or isinstance(autoencoder, torch.nn.Module):
        return autoencoder

    return Autoencoder.from_config(autoencoder)


def plain_python(obj: Any) -> Any:
    """Recursively turn configs, paths and other objects into plain python for weights_only."""
    try:
        from omegaconf import OmegaConf
        if OmegaConf.is_config(obj):
            obj = OmegaConf.to_container(obj, resolve=True)
    except ImportError:  # pragma: no cover
        pass
    if isinstance(obj, dict):
        return {str(k): plain_python(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain_python(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, float, str, torch.Tensor)):
        return obj
    return str(obj)



