"""Training a noise-aware classifier with Lightning: ``omnidiff train stage=classifier`` on any
recipe with labelled data (:mod:`omnidiff.methods.classifier`). Same run folder, checkpoints,
resume and logs as a diffusion run; its ``model.pt`` is the classifier's, which
``omnidiff sample classifier=...`` (and ``Pipeline.generate(classifier=...)``) guides with.

Loss: cross-entropy of the label given ``x_t = alpha x0 + sigma eps``, ``t ~ U[t_min,
t_max]``. The evaluation (:class:`ClassifierEvaluation`) reports the accuracy on held-out data
at several noise levels (``acc_t0.0`` ... ``acc_t0.9``, with ``t0.0`` meaning ``t_min``).
"""

from __future__ import annotations

from typing import Any, Sequence

import torch
import torch.nn.functional as F
from lightning.pytorch import LightningModule

from omnidiff._util import append_dims
from omnidiff.core.conditions import LabelCond, NamedCond
from omnidiff.errors import ConfigError, blamed_on
from omnidiff.methods.classifier import (
    NoisyClassifier,
    build_net,
    check_classifier_options,
    classifier_payload,
)
from omnidiff.plugins.registry import get_domain
from omnidiff.training.callbacks import Evaluation
from omnidiff.training.diffusion_module import WeightsOnlyCheckpoints
from omnidiff.training.optim import adamw, optimizer_args

__all__ = ["ClassifierModule", "ClassifierEvaluation", "labels_of", "EVAL_TIMES"]

EVAL_TIMES = (0.0, 0.3, 0.6, 0.9)  # fractions of [t_min, t_max] the evaluation reads


def labels_of(spec: Any, cond: Any) -> torch.Tensor:
    """The class labels (B,) of a batch's condition (labels, or the ``label`` of a set)."""
    return cond["label"] if isinstance(spec, NamedCond) else cond


def class_count(spec: Any) -> int:
    """How many classes a data module's condition holds; :class:`ConfigError` if it has no
    labels (a classifier needs labelled data)."""
    if isinstance(spec, NamedCond):
        spec = spec.field_specs.get("label")
    if not isinstance(spec, LabelCond):
        raise ConfigError("stage=classifier trains on labelled data; this data has "
                          f"{'no condition' if spec is None else spec.describe()}: pick a "
                          "recipe or data option with class labels")
    return int(spec.num_classes)


class ClassifierModule(WeightsOnlyCheckpoints, LightningModule):
    """A :class:`NoisyClassifier` of a domain's samples under ``schedule``."""

    def __init__(self, domain: str, *, event_shape: Sequence[int], num_classes: int,
                 schedule: dict[str, Any], classifier: dict[str, Any] | None = None,
                 optim: dict[str, Any] | None = None, data_cfg: dict[str, Any] | None = None,
                 classes: Sequence[str] | None = None):
        super().__init__()
        dom = get_domain(domain)
        options = check_classifier_options(dict(classifier or {}), dom)
        optim = dict(optim or {})
        optimizer_args(optim)
        self.save_hyperparameters({
            "domain": str(domain), "stage": "classifier", "classifier": options,
            "event_shape": [int(s) for s in event_shape], "num_classes": int(num_classes),
            "schedule": dict(schedule), "optim": optim, "data_cfg": dict(data_cfg or {}),
            "classes": list(classes) if classes else None})
        self.domain = dom
        with blamed_on(ConfigError, "classifier"):
            net = build_net(dom, event_shape, num_classes, options)
        self.classifier = NoisyClassifier(net, schedule, num_classes)

    def _noisy(self, x: torch.Tensor, generator: torch.Generator | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_t, t) for a batch x: (B, *event), t ~ U[t_min, t_max]."""
        sched = self.classifier.schedule
        u = torch.rand(x.shape[0], device=x.device, dtype=torch.float64, generator=generator)
        t = sched.t_min + (sched.t_max - sched.t_min) * u  # (B,)
        a, s = sched.alpha_sigma(t)
        eps = torch.randn(x.shape, device=x.device, dtype=x.dtype, generator=generator)
        x_t = append_dims(a, x.ndim).to(x.dtype) * x + append_dims(s, x.ndim).to(x.dtype) * eps
        return x_t, t

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["x"], labels_of(self._spec(), batch["cond"]).long()
        x_t, t = self._noisy(x)
        logits = self.classifier(x_t, t)  # (B, num_classes)
        loss = F.cross_entropy(logits.float(), y)
        acc = (logits.argmax(-1) == y).float().mean()
        self.log("train/loss", loss, on_step=True, on_epoch=False, prog_bar=True,
                 batch_size=x.shape[0])
        self.log("train/acc", acc, on_step=True, on_epoch=False, batch_size=x.shape[0])
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        x, y = batch["x"], labels_of(self._spec(), batch["cond"]).long()
        g = torch.Generator(device=x.device).manual_seed(batch_idx)
        x_t, t = self._noisy(x, g)
        loss = F.cross_entropy(self.classifier(x_t, t).float(), y)
        self.log("val/loss", loss, on_step=False, on_epoch=True, prog_bar=True,
                 batch_size=x.shape[0], sync_dist=True)
        return loss

    def _spec(self) -> Any:
        return self.trainer.datamodule.cond_spec

    def configure_optimizers(self):
        return adamw(self.parameters(), **optimizer_args(dict(self.hparams.optim)))

    def export_payload(self, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
        """The classifier's ``model.pt`` dict."""
        hp = self.hparams
        return classifier_payload(self.classifier, domain=hp.domain,
                                  event_shape=hp.event_shape, options=hp.classifier,
                                  data_cfg=hp.data_cfg, classes=hp.classes,
                                  global_step=global_step, metrics={"ema": bool(ema)})


class ClassifierEvaluation(Evaluation):
    """Every ``every_n_steps`` steps (0: never) and when fitting ends: the accuracy on
    ``n_ref`` held-out samples noised to each of :data:`EVAL_TIMES` (fixed noise)."""

    log_prefix = "clf"

    def __init__(self, *, every_n_steps: int = 0, n_ref: int = 512, seed: int = 0):
        super().__init__(every_n_steps)
        self.n_ref, self.seed = int(n_ref), int(seed)

    @torch.no_grad()
    def _run(self, trainer: Any, module: ClassifierModule, prefix: str) -> dict[str, Any]:
        dm = trainer.datamodule
        x, cond = dm.reference(self.n_ref, torch.Generator().manual_seed(self.seed))
        y = labels_of(dm.cond_spec, cond).long()
        clf = module.classifier
        device = next(clf.parameters()).device
        was_training = clf.training
        clf.eval()
        sched, out = clf.schedule, {}
        g = torch.Generator().manual_seed(self.seed + 1)
        for frac in EVAL_TIMES:
            t = sched.t_min + frac * (sched.t_max - sched.t_min)
            tt = torch.full((len(x),), t, dtype=torch.float64)
            a, s = sched.alpha_sigma(tt)
            x_t = append_dims(a, x.ndim).float() * x.float() + append_dims(
                s, x.ndim).float() * torch.randn(x.shape, generator=g)
            pred = torch.cat([clf(c.to(device), tc.to(device)).argmax(-1).cpu()
                              for c, tc in zip(x_t.split(256), tt.split(256))])
            out[f"acc_t{frac:.1f}"] = float((pred == y).float().mean())
        clf.train(was_training)
        return out
