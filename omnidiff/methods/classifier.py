"""Noise-aware classifiers for classifier guidance (Dhariwal & Nichol 2021, sec. 4).

:class:`NoisyClassifier` reads ``p(y | x_t)`` for samples of one domain noised by one schedule:
``omnidiff train stage=classifier`` trains it on the labelled data of any recipe (cross-entropy
on ``x_t = alpha x0 + sigma eps`` at times drawn uniformly in ``[t_min, t_max]``), and
``Pipeline.generate(classifier=..., label=...)`` guides a diffusion model of the same domain
and schedule with it (:func:`omnidiff.core.steering.guided_by_xt`). Its network is the
domain's ``build_classifier(num_classes, **options)`` where the domain offers one, else
:class:`~omnidiff.nn.classifier.NoisyClassifierNet` over the flattened sample.

Its ``model.pt`` (``torch.load(weights_only=True)``)::

    format: "omnidiff", kind: "classifier", format_version: 1, omnidiff_version: str,
    domain: str, event_shape: [int], num_classes: int, classes: [str] | None,
    schedule: dict, classifier: dict (the network's options), data: dict, global_step: int,
    metrics: dict, weights_sha256: str, state_dict: {name: Tensor}
"""

from __future__ import annotations

import os
from typing import Any, Sequence

import torch
from torch import nn

from omnidiff._util import append_dims
from omnidiff._version import __version__
from omnidiff.core.schedules import Schedule, get_schedule
from omnidiff.errors import CheckpointError, ConfigError
from omnidiff.io import FILE_FORMAT, read_payload, state_digest
from omnidiff.nn.classifier import NoisyClassifierNet
from omnidiff.plugins.registry import get_domain

__all__ = ["NoisyClassifier", "CLASSIFIER_KIND", "CLASSIFIER_KEYS", "check_classifier_options",
           "classifier_payload", "read_classifier", "load_classifier"]

CLASSIFIER_KIND = "classifier"
CLASSIFIER_FORMAT_VERSION = 1
CLASSIFIER_KEYS = ("width", "depth")  # the default network's options


def check_classifier_options(options: dict[str, Any], domain: Any = None) -> dict[str, Any]:
    """The ``classifier:`` block, checked for the default network (a domain's own builder
    checks its own); one :class:`ConfigError` naming a bad key or value."""
    options = dict(options)
    if domain is not None and hasattr(domain, "build_classifier"):
        return options
    for key, value in options.items():
        if key not in CLASSIFIER_KEYS:
            raise ConfigError(f"classifier.{key}: unknown option; the classifier takes "
                              f"{', '.join(CLASSIFIER_KEYS)}")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"classifier.{key}={value!r}: give an integer >= 1")
    return options


def build_net(domain: Any, event_shape: Sequence[int], num_classes: int,
              options: dict[str, Any]) -> nn.Module:
    """The domain's classifier network, or the default one."""
    if hasattr(domain, "build_classifier"):
        return domain.build_classifier(int(num_classes), event_shape=tuple(event_shape),
                                       **options)
    return NoisyClassifierNet(event_shape, int(num_classes), **options)


class NoisyClassifier(nn.Module):
    """``forward(x_t, t) -> logits (B, num_classes)`` for ``x_t: (B, *event)`` at times
    ``t: (B,)`` of ``schedule``; the input is scaled to unit variance as the diffusion model's
    is (``1 / sqrt(alpha^2 + sigma^2)``, for unit-variance data)."""

    def __init__(self, net: nn.Module, schedule: Schedule | str | dict, num_classes: int):
        super().__init__()
        self.net = net
        self.schedule = get_schedule(**schedule) if isinstance(schedule, dict) else \
            get_schedule(schedule)
        self.num_classes = int(num_classes)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        a, s = self.schedule.alpha_sigma(t.detach().double())
        c_in = append_dims(torch.rsqrt(a * a + s * s), x_t.ndim)
        dtype = next(self.net.parameters()).dtype
        return self.net((x_t * c_in.to(x_t.dtype)).to(dtype), t.to(torch.float32))

    def log_prob(self, x_t: torch.Tensor, t: torch.Tensor, labels: torch.Tensor
                 ) -> torch.Tensor:
        """log p(label | x_t): (B,)."""
        logits = self(x_t, t).float().log_softmax(-1)  # (B, num_classes)
        return logits.gather(1, labels.long().view(-1, 1))[:, 0]


def classifier_payload(model: NoisyClassifier, *, domain: str, event_shape: Sequence[int],
                       options: dict[str, Any], data_cfg: dict[str, Any],
                       classes: Sequence[str] | None = None, global_step: int = 0,
                       metrics: dict[str, Any] | None = None) -> dict[str, Any]:
    """The ``model.pt`` dict of a trained classifier (weights on CPU)."""
    state = {k: v.detach().to("cpu", copy=True).contiguous()
             for k, v in model.state_dict().items()}
    return {"format": FILE_FORMAT, "kind": CLASSIFIER_KIND,
            "format_version": CLASSIFIER_FORMAT_VERSION, "omnidiff_version": __version__,
            "domain": str(domain), "event_shape": [int(s) for s in event_shape],
            "num_classes": model.num_classes, "classes": list(classes) if classes else None,
            "schedule": model.schedule.config(), "classifier": dict(options),
            "data": dict(data_cfg), "global_step": int(global_step),
            "metrics": dict(metrics or {}), "state_dict": state,
            "weights_sha256": state_digest(state)}


def read_classifier(payload: dict[str, Any], where: str = "the classifier"
                    ) -> NoisyClassifier:
    """A :class:`NoisyClassifier` from its payload (checked weights, eval mode, frozen)."""
    missing = [k for k in ("domain", "event_shape", "num_classes", "schedule", "state_dict")
               if k not in payload]
    if missing:
        raise CheckpointError(f"{where} is damaged or hand-made: it lacks {', '.join(missing)}; "
                              "train it again (omnidiff train stage=classifier ...)")
    state = payload["state_dict"]
    if payload.get("weights_sha256") not in (None, state_digest(state)):
        raise CheckpointError(f"{where}: its weights do not match the checksum stored with them "
                              "(the file was altered or damaged); use the model.pt its run wrote")
    net = build_net(get_domain(payload["domain"]), payload["event_shape"],
                    payload["num_classes"], dict(payload.get("classifier") or {}))
    model = NoisyClassifier(net, payload["schedule"], payload["num_classes"])
    try:
        model.load_state_dict(state)
    except RuntimeError:
        raise CheckpointError(f"{where}: its weights do not fit the network its options "
                              "describe; it was written by another version or edited") from None
    return model.eval().requires_grad_(False)


def load_classifier(path: str | os.PathLike) -> tuple[NoisyClassifier, dict[str, Any]]:
    """The classifier in ``path`` (its ``model.pt`` or run folder) and its payload."""
    hint = "pass classifier=<the model.pt of an `omnidiff train stage=classifier` run>"
    obj = read_payload(path, CLASSIFIER_KIND, CLASSIFIER_FORMAT_VERSION, hint)
    return read_classifier(obj, str(path)), obj
