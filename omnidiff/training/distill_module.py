"""``omnidiff distill``: a few-step student of a trained model, for any domain.

Three methods, chosen by ``distill.method`` (``method=`` on the command line):

* ``cd`` — consistency distillation (Song et al. 2023) from a teacher's ``model.pt``: the
  teacher's probability-flow ODE, one step of any of the core's ODE samplers
  (``distill.solver``) between neighbouring noise levels, under classifier-free
  ``distill.guidance`` when given (the guided teacher is distilled into the student);
* ``ct`` — consistency training (improved: Song & Dhariwal 2023) from data alone; a teacher,
  when given, only starts the student from its weights;
* ``reflow`` — rectified-flow reflow (Liu et al. 2023) of a teacher on the ``flow``
  schedule: ``distill.pairs`` (noise, sample) pairs from its ODE, then flow matching on the
  straight paths between them.

The student is the teacher's network (started from its weights), trained as a
:class:`DistillModule` by the same Lightning loop, run folder, resume, EMA and evaluation as
``omnidiff train``; its ``model.pt`` names its default sampler (``consistency``, or ``euler``
after reflow) and ``omnidiff.load`` serves it like any other model.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from omnidiff.core.conditions import index_cond
from omnidiff.core.losses import diffusion_loss
from omnidiff.methods import consistency as cm
from omnidiff.methods.distill_options import distill_options, level_count, student_fields
from omnidiff.methods.reflow import reflow_pairs
from omnidiff.model_spec import ModelSpec
from omnidiff.training.diffusion_module import DiffusionModule

__all__ = ["DistillModule"]


class DistillModule(DiffusionModule):
    """A student trained by consistency distillation / training or reflow (``distill``: the
    options of :func:`distill_options`). Everything else is a :class:`DiffusionModule`'s:
    the network, schedule, prediction and data are the teacher's. ``teacher_state`` (the
    teacher's weights) builds the frozen teacher and starts the student; a resumed run gets
    both from its checkpoint."""

    def __init__(self, spec: ModelSpec, *, distill: dict[str, Any],
                 teacher_state: dict[str, torch.Tensor] | None = None, **kwargs: Any):
        super().__init__(spec, **kwargs)
        opts = distill_options(dict(distill))
        self.hparams["distill"] = opts
        method = opts["method"]
        if method in ("cd", "reflow"):  # the teacher: the same network, frozen
            self.teacher = copy.deepcopy(self.model).requires_grad_(False)
            if teacher_state is not None:
                self.teacher.load_state_dict(teacher_state)
        if teacher_state is not None:  # the student starts as the teacher (CT: only that)
            self.model.load_state_dict(teacher_state)
        if method != "reflow":  # a consistency student of the same network
            self.spec = spec.replace(consistency=student_fields(opts)["consistency"])
            self.model = self.spec.denoiser(self.model.net)
        ema = float(opts["target_ema"] or 0.0)
        self.target = copy.deepcopy(self.model).requires_grad_(False) if ema > 0 else None
        self._levels: dict[int, tuple[torch.Tensor, ...]] = {}
        self._pairs: tuple[torch.Tensor, torch.Tensor, Any] | None = None

    @property
    def method(self) -> str:
        return self.hparams["distill"]["method"]

    # ---- consistency distillation and training -------------------------------------------
    def n_levels(self) -> int:
        """The number of noise levels now: CD's fixed ``levels``; else a curriculum over
        ``total_steps`` (the run's ``trainer.max_steps``): CD's ``levels: [s0, s1]``, CT's
        ``curriculum``."""
        return level_count(self.hparams["distill"], int(self.global_step))

    def levels(self, n: int) -> tuple[torch.Tensor, ...]:
        """(times (m,), pair probabilities (m - 1,), pair weights (m - 1,), each level's
        segment end (m,) or None), cached per n; m = n plus a multistep student's segment
        boundaries."""
        if n not in self._levels:
            opts = self.hparams["distill"]
            ts, ends = cm.discretization(self.schedule, n), None
            if int(opts.get("segments") or 1) > 1:
                ts, ends = cm.segment_ends(self.schedule, ts, int(opts["segments"]))
            probs = cm.level_probabilities(self.schedule, ts, opts["level_sampling"],
                                           p_mean=float(opts["p_mean"]),
                                           p_std=float(opts["p_std"]))
            weights = cm.level_weights(self.schedule, ts, opts["weighting"])
            self._levels[n] = (ts, probs, weights, ends)
        return self._levels[n]

    def _consistency_loss(self, x: torch.Tensor, cond: Any,
                          generator: torch.Generator | None) -> torch.Tensor:
        opts = self.hparams["distill"]
        ts, probs, weights, ends = self.levels(self.n_levels())
        if self.method == "cd":
            point = cm.distillation_points(self.teacher, ts.tolist(), schedule=self.schedule,
                                           prediction=self.teacher.prediction,
                                           solver=opts["solver"], guidance=opts.get("guidance"),
                                           substeps=int(opts["teacher_steps"]))
        else:
            point = cm.training_step_point(ts, self.schedule)
        loss, _ = cm.consistency_loss(
            self.model, self.target if self.target is not None else self.model, x,
            schedule=self.schedule, levels=ts, probs=probs, weights=weights, point=point,
            cond=cond, p_uncond=float(self.hparams.loss.get("p_uncond", 0.1)),
            distance=opts["distance"], c=opts["huber_c"],
            generator=generator, level_groups=opts.get("level_groups"), ends=ends)
        return loss

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        """After each optimizer step the target network follows the student: ``target <- mu
        target + (1 - mu) student`` (Song et al. 2023's EMA target; mu = 0 keeps no copy: the
        student itself, stop-gradient). Here, not in ``on_train_batch_end``, which runs after
        the callbacks that write checkpoints."""
        super().optimizer_step(*args, **kwargs)
        if self.target is None:
            return
        mu = float(self.hparams["distill"]["target_ema"])
        with torch.no_grad():
            for tp, p in zip(self.target.parameters(), self.model.parameters()):
                tp.lerp_(p.detach(), 1.0 - mu)

    # ---- reflow ---------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        if self.method == "reflow" and self._pairs is None:
            self._pairs = self._draw_pairs()

    def _draw_pairs(self) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(noise, the teacher's sample from it, condition): ``pairs`` of them from the
        teacher's ODE (``solver`` at ``teacher_steps``), seeded, so a resumed run draws the
        same ones."""
        opts = self.hparams["distill"]
        return reflow_pairs(self.teacher, int(opts["pairs"]),
                            self.spec.event_shape, cond_spec=self.cond_spec,
                            solver=opts["solver"], steps=int(opts["teacher_steps"]),
                            guidance=opts.get("guidance"), seed=20_011)

    def _reflow_loss(self, b: int, generator: torch.Generator | None) -> torch.Tensor:
        if self._pairs is None:
            self._pairs = self._draw_pairs()
        noise, x0, cond = self._pairs
        idx = torch.randint(0, noise.shape[0], (b,), generator=generator,
                            device=noise.device if generator is None else generator.device)
        idx = idx.to(noise.device)
        dev = self.device
        pick = lambda v: v[idx].to(dev)  # noqa: E731
        c = None if cond is None else index_cond(cond, idx).to(dev)
        loss, _ = diffusion_loss(self.model, self.model.to_prior(pick(x0), c),
                                 schedule=self.schedule, cond=c,
                                 noise=pick(noise), generator=generator,
                                 **{**self.hparams.loss, "aux": None})
        return loss

    # ---- DiffusionModule's hooks --------------------------------------------------------------
    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
              ) -> torch.Tensor:
        x = batch["x"]  # (B, *event)
        if self.method == "reflow":
            return self._reflow_loss(x.shape[0], generator)
        cond = self._batch_cond(batch)
        return self._consistency_loss(self.model.to_prior(x, cond), cond, generator)

    def export_payload(self, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
        """The student's ``model.pt``: a DiffusionModule's, plus its parametrisation and
        default sampler (:func:`~omnidiff.methods.distill_options.student_fields`)."""
        payload = super().export_payload(ema=ema, global_step=global_step)
        return {**payload, **student_fields(self.hparams["distill"])}
