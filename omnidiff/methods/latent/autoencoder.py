"""The autoencoder of latent diffusion (Rombach et al. 2022), for any domain whose samples are
grids ``(C, *grid)``: 1D signals, 2D images, 3D volumes.

:class:`Autoencoder` encodes a sample into a smaller grid of latents and decodes it back.
``kind="vae"`` adds a KL term towards N(0, I) with a small weight (``ae.kl_weight``, LDM's
KL-f4 uses 1e-6) and encodes to the posterior mean; ``kind="ae"`` is deterministic. Either way
the latents are then normalised with statistics computed from training data after it is
trained (:meth:`Autoencoder.fit_latent_stats`: a shift and a scale, LDM's ``scale_factor``
computed rather than hand-set), so that the diffusion model sees unit-variance latents:
``encode(x) = (mean(x) - shift) * scale`` and ``decode(z) = dec(z / scale + shift)``.

It is trained by ``omnidiff train stage=autoencoder`` (:mod:`omnidiff.training.autoencoder_module`)
and written to its own ``model.pt`` (format below); :func:`load_autoencoder` reads it back with
one clear line for a damaged or mismatched file. A latent diffusion model embeds the
autoencoder in its own ``model.pt`` (:mod:`omnidiff.methods.latent.domain`), so it is served
without it.

The autoencoder's ``model.pt`` (``torch.load(weights_only=True)``)::

    format: "omnidiff", kind: "autoencoder", format_version: 1, omnidiff_version: str,
    domain: str, data_shape: [int], latent_shape: [int], ae: dict (the constructor's options),
    data: dict (the training data's config), global_step: int, metrics: dict,
    weights_sha256: str, state_dict: {name: Tensor}   (includes the latent shift and scale)
"""

from __future__ import annotations

import inspect
import math
import os
from typing import Any, Sequence

import torch
from torch import nn

from omnidiff._version import __version__
from omnidiff.errors import CheckpointError, ConfigError
from omnidiff.io import FILE_FORMAT, read_payload, state_digest
from omnidiff.methods.latent.losses import RECON_LOSSES
from omnidiff.nn.autoencoder import ConvDecoder, ConvEncoder

__all__ = ["Autoencoder", "AE_KEYS", "check_ae_options", "load_autoencoder",
           "autoencoder_payload", "read_autoencoder", "AE_KIND", "ENCODE_BATCH", "encode_batches"]

AE_KIND = "autoencoder"
AE_FORMAT_VERSION = 1
KINDS = ("vae", "ae")


class Autoencoder(nn.Module):
    """Encoder and decoder for samples of ``data_shape = (C, *grid)``.

    ``channels``: width per level (each level after the first halves every grid axis);
    ``latent_channels``: channels of the latent grid; ``blocks``: residual blocks per level;
    ``kind``: ``vae`` | ``ae``; ``channel_axis``: where the channels are in ``data_shape`` (0
    for ``(C, *grid)``, 1 for a clip ``(T, C, H, W)``: the latents keep the data's layout, with
    ``latent_channels`` on that axis). Options the training reads (``kl_weight``, ``recon``)
    are kept with the others so that the checkpoint says how it was trained.
    """

    def __init__(self, data_shape: Sequence[int], *, channels: Sequence[int] = (32, 64, 64),
                 latent_channels: int = 4, blocks: int = 1, kind: str = "vae",
                 kl_weight: float = 1e-6, recon: str = "l1", channel_axis: int = 0):
        super().__init__()

        self.data_shape = tuple(int(s) for s in data_shape)
        self.options = {"channels": [int(c) for c in channels],
                        "latent_channels": int(latent_channels), "blocks": int(blocks),
                        "kind": str(kind), "kl_weight": float(kl_weight), "recon": str(recon),
                        "channel_axis": int(channel_axis)}
        self.axis = int(channel_axis) + 1  # in a batch (B, *data)
        if not 0 <= int(channel_axis) < len(self.data_shape):
            raise ConfigError(f"channel_axis={channel_axis} is not an axis of samples "
                              f"{self.data_shape}")
        grid = self.data_shape[:channel_axis] + self.data_shape[channel_axis + 1:]
        _check_shape(self.data_shape, grid, self.options["channels"], self.options["kind"])
        dims, c_in = len(grid), self.data_shape[channel_axis]
        moments = 2 if kind == "vae" else 1
        self.encoder = ConvEncoder(dims, c_in, moments * int(latent_channels), channels, blocks)
        self.decoder = ConvDecoder(dims, int(latent_channels), c_in, channels, blocks)
        # latent normalisation, fitted after training (fit_latent_stats); stored in state_dict
        self.register_buffer("shift", torch.zeros(()))
        self.register_buffer("scale", torch.ones(()))

    def config(self) -> dict[str, Any]:
        """Everything that rebuilds this network (:meth:`from_config`); not its weights."""
        return {"data_shape": list(self.data_shape), **self.options}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> "Autoencoder":
        cfg = dict(config)
        return cls(cfg.pop("data_shape"), **cfg)

    @property
    def factor(self) -> int:
        """How much every grid axis shrinks."""
        return 2 ** (len(self.options["channels"]) - 1)

    @property
    def latent_shape(self) -> tuple[int, ...]:
        """The data's layout, every grid axis divided by :attr:`factor`, ``latent_channels``
        on the channel axis."""
        shape = [s // self.factor for s in self.data_shape]
        shape[self.axis - 1] = self.options["latent_channels"]
        return tuple(shape)

    def _dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def moments(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Posterior mean and log-variance (None for ``kind=ae``), unnormalised.
        x: (B, *data) -> (B, *latent) each."""
        h = self.encoder(x.to(self._dtype()).movedim(self.axis, 1))  # (B, m * Cz, *grid / f)
        h = h.movedim(1, self.axis)  # (B, *latent) with m * Cz channels
        if self.options["kind"] == "ae":
            return h, None
        mean, logvar = h.chunk(2, dim=self.axis)  # (B, *latent) each
        return mean, logvar.clamp(-30.0, 20.0)

    def decode_raw(self, z: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents (B, *latent) -> data (B, *data)."""
        x = self.decoder(z.to(self._dtype()).movedim(self.axis, 1))  # (B, C, *grid)
        return x.movedim(1, self.axis)  # (B, *data)

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, *data) through the posterior mean and back (no normalisation involved)."""
        return self.decode_raw(self.moments(x)[0])

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Data (B, *data) -> normalised latents (B, *latent) (the posterior mean)."""
        return (self.moments(x)[0] - self.shift) * self.scale

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Normalised latents (B, *latent) -> data (B, *data)."""
        return self.decode_raw(z.to(self._dtype()) / self.scale + self.shift)

    @torch.no_grad()
    def fit_latent_stats(self, batches: Any) -> dict[str, float]:
        """Set ``shift`` and ``scale`` so that the latents of ``batches`` (an iterable of data
        tensors ``(b, *data)``) have mean 0 and standard deviation 1 (over every value)."""
        total, total_sq, count = 0.0, 0.0, 0
        for x in batches:
            m = self.moments(x.to(self.shift.device))[0].double()  # (b, *latent)
            total += float(m.sum())
            total_sq += float(m.square().sum())
            count += m.numel()
        if count == 0:
            raise ConfigError("no data to fit the latent statistics on")
        mean = total / count
        std = math.sqrt(max(total_sq / count - mean * mean, 1e-12))
        self.shift.fill_(mean)
        self.scale.fill_(1.0 / std)
        return {"latent_shift": mean, "latent_scale": 1.0 / std}

    def extra_repr(self) -> str:
        return f"data_shape={self.data_shape}, latent_shape={self.latent_shape}, {self.options}"


AE_KEYS = tuple(p for p in inspect.signature(Autoencoder.__init__).parameters
                if p not in ("self", "data_shape"))


def check_ae_options(options: dict[str, Any]) -> dict[str, Any]:
    """The ``ae:`` block: known keys, a known kind and reconstruction loss, positive sizes."""
    unknown = sorted(set(options) - set(AE_KEYS))
    if unknown:
        raise ConfigError(f"ae.{unknown[0]} is not an autoencoder option; choose from: "
                          f"{', '.join(AE_KEYS)}")
    if options.get("kind", "vae") not in KINDS:
        raise ConfigError(f"ae.kind={options['kind']!r}: choose vae or ae")
    if options.get("recon", "l1") not in RECON_LOSSES:
        raise ConfigError(f"ae.recon={options['recon']!r}: choose one of "
                          f"{', '.join(RECON_LOSSES)}")
    channels = options.get("channels", [1])
    if not channels or any(int(c) < 1 for c in channels):
        raise ConfigError(f"ae.channels={channels!r}: give a list of positive widths, one per "
                          "level")
    for key in ("latent_channels", "blocks"):
        if key in options and int(options[key]) < (1 if key == "latent_channels" else 0):
            raise ConfigError(f"ae.{key}={options[key]!r} is too small")
    return options


def _check_shape(data_shape: tuple[int, ...], grid: tuple[int, ...], channels: list[int],
                 kind: str) -> None:
    """A 1-, 2- or 3-D grid whose every axis divides by the autoencoder's factor."""
    if kind not in KINDS:
        raise ConfigError(f"ae.kind={kind!r}: choose vae or ae")
    if not 1 <= len(grid) <= 3:
        raise ConfigError(f"the autoencoder takes samples with channels and a 1-, 2- or 3-D "
                          f"grid; this data's samples are {data_shape}")
    f = 2 ** (len(channels) - 1)
    bad = [s for s in grid if s % f]
    if bad:
        raise ConfigError(f"samples {data_shape} do not divide by the autoencoder's factor {f} "
                          f"({len(channels)} levels in ae.channels): use fewer levels or a size "
                          f"that divides by {f}")


# ---- its checkpoint -----------------------------------------------------------------------


def autoencoder_payload(ae: Autoencoder, *, domain: str, data_cfg: dict[str, Any],
                        global_step: int = 0, metrics: dict[str, Any] | None = None
                        ) -> dict[str, Any]:
    """The ``model.pt`` dict of a trained autoencoder (weights on CPU)."""
    state = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in ae.state_dict().items()}
    return {"format": FILE_FORMAT, "kind": AE_KIND, "format_version": AE_FORMAT_VERSION,
            "omnidiff_version": __version__, "domain": str(domain),
            "data_shape": list(ae.data_shape), "latent_shape": list(ae.latent_shape),
            "ae": dict(ae.options), "data": dict(data_cfg), "global_step": int(global_step),
            "metrics": dict(metrics or {}), "state_dict": state,
            "weights_sha256": state_digest(state)}


def read_autoencoder(payload: dict[str, Any], where: str = "the autoencoder") -> Autoencoder:
    """An :class:`Autoencoder` from its payload (checked weights, in eval mode, frozen)."""
    missing = [k for k in ("domain", "data_shape", "ae", "state_dict") if k not in payload]
    if missing:
        raise CheckpointError(f"{where} is damaged or hand-made: it lacks {', '.join(missing)}; "
                              "train it again (omnidiff train stage=autoencoder ...)")
    state = payload["state_dict"]
    expected = payload.get("weights_sha256")
    if expected is not None and state_digest(state) != expected:
        raise CheckpointError(f"{where}: its weights do not match the checksum stored with them "
                              "(the file was altered or damaged); use the model.pt its run wrote")
    ae = Autoencoder(payload["data_shape"], **payload["ae"])
    try:
        ae.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{where}: its weights do not fit the autoencoder its options "
                              f"describe ({payload['ae']}); it was written by another version "
                              "or edited") from None
    if not all(bool(torch.isfinite(v).all()) for v in state.values() if v.is_floating_point()):
        raise CheckpointError(f"{where} holds NaN or inf weights: its training diverged; train "
                              "it again with a lower optim.lr")
    return ae.eval().requires_grad_(False)


def load_autoencoder(path: str | os.PathLike, *, domain: str | None = None
                     ) -> tuple[Autoencoder, dict]:
    """The autoencoder in ``path`` (its ``model.pt`` or run folder) and its payload, checked
    against the ``domain`` it is to be used with (the data's shape is checked when the latent
    data module is set up, :class:`~omnidiff.methods.latent.data.LatentData`)."""
    hint = "pass autoencoder=<the model.pt of an `omnidiff train stage=autoencoder` run>"
    obj = read_payload(path, AE_KIND, AE_FORMAT_VERSION, hint)
    if domain is not None and obj.get("domain", domain) != domain:  # before building it
        raise CheckpointError(f"{path} is an autoencoder of the {obj['domain']!r} domain, not "
                              f"of {domain!r}; train one on this domain's data first")
    return read_autoencoder(obj, str(path)), obj


ENCODE_BATCH = 256


@torch.no_grad()
def encode_batches(ae: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Data (B, *data) -> latents (B, *latent) float32 on x's device, in batches."""
    out = [ae.encode(chunk.to(module_device(ae))).float().to(x.device)
           for chunk in x.split(ENCODE_BATCH)]
    return torch.cat(out)  # (B, *latent)


def module_device(ae: torch.nn.Module) -> torch.device:
    return next(ae.parameters()).device
