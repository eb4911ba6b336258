"""One model's identity, passed whole: :class:`ModelSpec`.

What a trained model *is* — its domain, network options, schedule, event shape, condition,
prediction, sigma_data, training data config and, for a consistency student, its
parametrisation — is built once (from a composed config in :mod:`omnidiff.tasks.train`, from a
``model.pt`` or from a Lightning checkpoint's hyper-parameters) and handed to everything that
needs it: the training module, the model file, the Pipeline and the resume check. It is also
the one place that assembles a denoiser from those facts (:meth:`ModelSpec.build_domain` wraps
a latent model's domain around its autoencoder, :meth:`ModelSpec.denoiser` makes a
:class:`~omnidiff.core.model.DiffusionModel` or a consistency student of a network).

``model.pt`` keeps the fields flat, as format 2 always did (:meth:`ModelSpec.payload_fields`);
a ``DiffusionModule`` keeps its hyper-parameters in their old layout (:meth:`ModelSpec.hparams`,
with ``prediction`` and ``sigma_data`` in its ``loss`` block), so files written before the spec
existed read back into the same spec.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Mapping

from torch import nn

from omnidiff.core.conditions import CondSpec, NoCond, as_cond_spec
from omnidiff.core.model import DiffusionModel
from omnidiff.errors import ConfigError, blamed_on
from omnidiff.methods.consistency import ConsistencyModel
from omnidiff.methods.diffusers.network import build_diffusers_net
from omnidiff.methods.distill_options import student_fields
from omnidiff.methods.latent.domain import LatentDomain
from omnidiff.plugins.registry import get_domain

__all__ = ["ModelSpec", "build_domain", "payload_cond_spec", "loss_settings"]


def build_domain(name: str, autoencoder: nn.Module | None = None) -> Any:
    """The registered domain ``name``; with a latent model's ``autoencoder``, that domain on
    its latents (:class:`~omnidiff.methods.latent.domain.LatentDomain`)."""
    domain = get_domain(name)
    return domain if autoencoder is None else LatentDomain(domain, autoencoder)


def payload_cond_spec(fields: Mapping[str, Any]) -> CondSpec:
    """The condition specification of a ``model.pt`` dict or of a DiffusionModule's
    hyper-parameters (``cond`` / ``cond_spec``; format 1 and older runs: ``num_classes``)."""
    cond = fields.get("cond", fields.get("cond_spec"))
    return as_cond_spec(cond if cond is not None else int(fields.get("num_classes") or 0))


def loss_settings(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The ``loss`` block of a DiffusionModule's hyper-parameters (runs before the blocks were
    stored whole kept its keys at the top level)."""
    if hp.get("loss") is not None:
        return dict(hp["loss"])
    return {k: hp[k] for k in ("prediction", "time_sampling", "weighting", "p_uncond",
                               "sigma_data") if k in hp}


@dataclass(frozen=True)
class ModelSpec:
    """What identifies a trained model: enough to rebuild its denoiser and sample from it.

    ``model`` are the network's options (the domain's ``build_network`` keywords), ``schedule``
    the schedule's (``get_schedule`` keywords), ``event_shape`` the shape of one sample as the
    network sees it (a latent model's: the latents'), ``cond`` the condition specification,
    ``data`` the training data's config (for reference samples and metrics) and
    ``consistency`` a consistency student's parametrisation (``{"scale": s}``; None for a
    diffusion model).
    """

    domain: str
    model: dict[str, Any]
    schedule: dict[str, Any]
    event_shape: tuple[int, ...]
    cond: CondSpec = field(default_factory=NoCond)
    prediction: str = "eps"
    sigma_data: float = 1.0
    data: dict[str, Any] = field(default_factory=dict)
    consistency: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        fix = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        fix("domain", str(self.domain))
        fix("model", dict(self.model))
        fix("schedule", dict(self.schedule))
        fix("event_shape", tuple(int(s) for s in self.event_shape))
        fix("cond", as_cond_spec(self.cond))
        fix("prediction", str(self.prediction))
        fix("sigma_data", float(self.sigma_data))
        fix("data", dict(self.data or {}))

    def replace(self, **changes: Any) -> "ModelSpec":
        return dataclasses.replace(self, **changes)

    # ---- reading and writing --------------------------------------------------------------
    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "ModelSpec":
        """The spec of a ``model.pt`` dict (format 1 or 2)."""
        consistency = payload.get("consistency")
        return cls(payload["domain"], payload["model"], payload["schedule"],
                   payload["event_shape"], payload_cond_spec(payload),
                   payload.get("prediction", "eps"), payload.get("sigma_data", 1.0),
                   payload.get("data") or {}, dict(consistency) if consistency else None)

    @classmethod
    def from_hparams(cls, hp: Mapping[str, Any]) -> "ModelSpec":
        """The spec of a DiffusionModule's (or DistillModule's) hyper-parameters, in any
        layout omnidiff has written."""
        loss = loss_settings(hp)
        student = student_fields(hp["distill"]) if hp.get("distill") else {}
        return cls(hp["domain"], hp["model_cfg"], hp["schedule_cfg"], hp["event_shape"],
                   payload_cond_spec(hp), loss.get("prediction", "eps"),
                   loss.get("sigma_data", 1.0), hp.get("data_cfg") or {},
                   student.get("consistency"))

    def payload_fields(self) -> dict[str, Any]:
        """The fields of ``model.pt`` that hold this spec (flat, as format 2 has them;
        ``num_classes`` for readers of format 1)."""
        out = {"domain": self.domain, "event_shape": list(self.event_shape),
               "cond": self.cond.to_dict(), "num_classes": self.cond.num_classes,
               "model": dict(self.model), "schedule": dict(self.schedule),
               "prediction": self.prediction, "sigma_data": self.sigma_data,
               "data": dict(self.data)}
        if self.consistency:
            out["consistency"] = dict(self.consistency)
        return out

    def hparams(self) -> dict[str, Any]:
        """The hyper-parameter keys a DiffusionModule stores for this spec (``prediction`` and
        ``sigma_data`` go in its ``loss`` block)."""
        return {"domain": self.domain, "model_cfg": dict(self.model),
                "schedule_cfg": dict(self.schedule), "event_shape": list(self.event_shape),
                "cond_spec": self.cond.to_dict(), "data_cfg": dict(self.data)}

    # ---- assembling the model -------------------------------------------------------------
    def build_domain(self, autoencoder: nn.Module | None = None) -> Any:
        """The model's domain (:func:`build_domain`)."""
        return build_domain(self.domain, autoencoder)

    def build_network(self, domain: Any) -> nn.Module:
        """The domain's network for this spec (a bad ``model`` option names the block)."""
        with blamed_on(ConfigError, "model"):
            if self.model.get("name") == "diffusers":  # a diffusers class, in any domain
                return build_diffusers_net(self.event_shape, self.cond, **self.model)
            return domain.build_network(self.event_shape, self.cond, **self.model)

    def denoiser(self, net: nn.Module) -> DiffusionModel:
        """``net`` bound to the schedule and prediction: a :class:`DiffusionModel`, or a
        :class:`~omnidiff.methods.consistency.ConsistencyModel` for a consistency student."""
        if self.consistency:
            return ConsistencyModel(net, self.schedule, self.prediction, self.sigma_data,
                                    scale=float(self.consistency["scale"]))
        return DiffusionModel(net, self.schedule, self.prediction, sigma_data=self.sigma_data)

    def build(self, domain: Any) -> DiffusionModel:
        """A fresh denoiser (random weights) of this spec on ``domain``."""
        return self.denoiser(self.build_network(domain))
