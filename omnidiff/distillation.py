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
from pathlib import Path
from typing import Any, Sequence

import torch

from .errors import ConfigError
from .training import DiffusionModule

__all__ = ["DistillModule", "METHODS", "DISTILL_KEYS", "distill_options", "distill_config",
           "teacher_payload", "build_distill"]

METHODS = ("cd", "ct", "reflow")
# the choices each method makes where the config leaves them null: improved CT's levels and
# weights for both consistency methods (on points2d, CD at 2 steps: sliced W2 0.061 with them,
# 0.157 with Song et al. 2023's uniform levels and weights), CT's target is the student itself
METHOD_DEFAULTS = {
    "cd": {"level_sampling": "lognormal", "weighting": "ict", "target_ema": 0.95},
    "ct": {"level_sampling": "lognormal", "weighting": "ict", "target_ema": 0.0},
    "reflow": {"level_sampling": None, "weighting": None, "target_ema": None},
}
DISTILL_KEYS = ("teacher", "method", "solver", "guidance", "levels", "curriculum",
                "level_sampling", "weighting", "p_mean", "p_std", "distance", "huber_c",
                "target_ema", "scale", "level_groups", "pairs", "teacher_steps", "steps",
                "total_steps")


def distill_options(block: dict[str, Any]) -> dict[str, Any]:
    """A config's ``distill:`` block with each method's defaults filled in, checked: known
    keys, a method, a deterministic solver, the choices of :mod:`omnidiff.consistency`."""
    from . import consistency as cm
    from .samplers import SAMPLERS, STOCHASTIC

    unknown = sorted(set(block) - set(DISTILL_KEYS))
    if unknown:
        raise ConfigError(f"distill.{unknown[0]} is not a distillation option; choose from: "
                          f"{', '.join(DISTILL_KEYS)}")
    method = block.get("method") or "cd"
    if method not in METHODS:
        raise ConfigError(f"method={method!r}: choose cd (consistency distillation), ct "
                          "(consistency training) or reflow")
    opts = dict(block, method=method)
    for key, value in METHOD_DEFAULTS[method].items():
        if opts.get(key) is None:
            opts[key] = value
    solver = opts.get("solver") or "heun"
    if solver not in SAMPLERS or solver in STOCHASTIC or solver == "rk45":
        ode = [s for s in SAMPLERS if s not in STOCHASTIC and s != "rk45"]
        raise ConfigError(f"distill.solver={solver!r}: the teacher's ODE needs a deterministic "
                          f"fixed-step sampler: {', '.join(ode)}")
    opts["solver"] = solver
    if method != "reflow":
        for key, choices in (("level_sampling", cm.LEVEL_SAMPLING),
                             ("weighting", cm.WEIGHTINGS), ("distance", cm.DISTANCES)):
            value = opts.get(key) or ("pseudo_huber" if key == "distance" else None)
            if value not in choices:
                raise ConfigError(f"distill.{key}={value!r}: choose one of: "
                                  f"{', '.join(choices)}")
    if method in ("cd", "reflow") and not opts.get("teacher"):
        raise ConfigError(f"method={method} learns from a teacher: pass teacher=<the model.pt "
                          "of a trained run> (method=ct trains without one)")
    curriculum = opts.get("curriculum") or [10, 1280]
    if (len(curriculum) != 2 or not all(isinstance(v, int) and v >= 2 for v in curriculum)
            or curriculum[0] > curriculum[1]):
        raise ConfigError(f"distill.curriculum={curriculum!r}: give [s0, s1], the first and "
                          "last number of CT's noise levels (2 <= s0 <= s1), e.g. [10, 1280]")
    return opts


class DistillModule(DiffusionModule):
    """A student trained by consistency distillation / training or reflow (``distill``: the
    options of :func:`distill_options`). Everything else is a :class:`DiffusionModule`'s:
    the network, schedule, prediction and data are the teacher's. ``teacher_state`` (the
    teacher's weights) builds the frozen teacher and starts the student; a resumed run gets
    both from its checkpoint."""

    def __init__(self, domain: str, model_cfg: dict[str, Any], schedule_cfg: dict[str, Any], *,
                 event_shape: Sequence[int], distill: dict[str, Any],
                 teacher_state: dict[str, torch.Tensor] | None = None, **kwargs: Any):
        super().__init__(domain, model_cfg, schedule_cfg, event_shape=event_shape, **kwargs)
        opts = distill_options(dict(distill))
        self.hparams["distill"] = opts
        method = opts["method"]
        if method in ("cd", "reflow"):  # the teacher: the same network, frozen
            self.teacher = copy.deepcopy(self.model).requires_grad_(False)
            if teacher_state is not None:
                self.teacher.load_state_dict(teacher_state)
        if teacher_state is not None:  # the student starts as the teacher (CT: only that)
            self.model.load_state_dict(teacher_state)
        if method != "reflow":
            from .consistency import ConsistencyModel

            inner = self.model
            self.model = ConsistencyModel(inner.net, self.schedule, inner.prediction,
                                          inner.sigma_data, scale=float(opts.get("scale") or 10))
        ema = float(opts.get("target_ema") or 0.0)
        self.target = copy.deepcopy(self.model).requires_grad_(False) if ema > 0 else None
        self._levels: dict[int, tuple[torch.Tensor, ...]] = {}
        self._pairs: tuple[torch.Tensor, torch.Tensor, Any] | None = None

    @property
    def method(self) -> str:
        return self.hparams["distill"]["method"]

    # ---- consistency distillation and training -------------------------------------------
    def n_levels(self) -> int:
        """The number of noise levels now: CD's fixed ``levels``; CT's curriculum over
        ``total_steps`` (the run's ``trainer.max_steps``)."""
        from .consistency import curriculum

        opts = self.hparams["distill"]
        if self.method == "cd":
            return int(opts.get("levels") or 18)
        s0, s1 = opts.get("curriculum") or (10, 1280)
        return curriculum(int(self.global_step), int(opts.get("total_steps") or 10_000),
                          int(s0), int(s1))

    def levels(self, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(times (n,), pair probabilities (n - 1,), pair weights (n - 1,)), cached per n."""
        from . import consistency as cm

        if n not in self._levels:
            opts = self.hparams["distill"]
            ts = cm.discretization(self.schedule, n)
            probs = cm.level_probabilities(self.schedule, ts, opts["level_sampling"],
                                           p_mean=float(opts.get("p_mean", -1.1)),
                                           p_std=float(opts.get("p_std", 2.0)))
            self._levels[n] = (ts, probs, cm.level_weights(self.schedule, ts, opts["weighting"]))
        return self._levels[n]

    def _consistency_loss(self, x: torch.Tensor, cond: Any,
                          generator: torch.Generator | None) -> torch.Tensor:
        from . import consistency as cm

        opts = self.hparams["distill"]
        ts, probs, weights = self.levels(self.n_levels())
        if self.method == "cd":
            point = cm.distillation_points(self.teacher, ts.tolist(), schedule=self.schedule,
                                           prediction=self.teacher.prediction,
                                           solver=opts["solver"], guidance=opts.get("guidance"))
        else:
            point = cm.training_step_point(ts, self.schedule)
        loss, _ = cm.consistency_loss(
            self.model, self.target if self.target is not None else self.model, x,
            schedule=self.schedule, levels=ts, probs=probs, weights=weights, point=point,
            cond=cond, p_uncond=float(self.hparams.loss.get("p_uncond", 0.1)),
            distance=opts.get("distance") or "pseudo_huber", c=opts.get("huber_c"),
            generator=generator, level_groups=opts.get("level_groups"))
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
        from .reflow import reflow_pairs

        opts = self.hparams["distill"]
        return reflow_pairs(self.teacher, int(opts.get("pairs") or 10_000),
                            tuple(self.hparams.event_shape), cond_spec=self.cond_spec,
                            solver=opts["solver"], steps=int(opts.get("teacher_steps") or 20),
                            guidance=opts.get("guidance"), seed=20_011)

    def _reflow_loss(self, b: int, generator: torch.Generator | None) -> torch.Tensor:
        from .conditions import index_cond
        from .losses import diffusion_loss

        if self._pairs is None:
            self._pairs = self._draw_pairs()
        noise, x0, cond = self._pairs
        idx = torch.randint(0, noise.shape[0], (b,), generator=generator,
                            device=noise.device if generator is None else generator.device)
        idx = idx.to(noise.device)
        dev = self.device
        pick = lambda v: v[idx].to(dev)  # noqa: E731
        loss, _ = diffusion_loss(self.model, pick(x0), schedule=self.schedule,
                                 cond=None if cond is None else index_cond(cond, idx).to(dev),
                                 noise=pick(noise), generator=generator, **self.hparams.loss)
        return loss

    # ---- DiffusionModule's hooks --------------------------------------------------------------
    def _loss(self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
              ) -> torch.Tensor:
        x = batch["x"]  # (B, *event)
        if self.method == "reflow":
            return self._reflow_loss(x.shape[0], generator)
        return self._consistency_loss(x, self._batch_cond(batch), generator)

    def export_payload(self, *, ema: bool = False, global_step: int = 0) -> dict[str, Any]:
        """The student's ``model.pt``: a DiffusionModule's, plus its parametrisation and
        default sampler (:func:`~omnidiff.checkpoint.student_fields`)."""
        from .checkpoint import student_fields

        payload = super().export_payload(ema=ema, global_step=global_step)
        return {**payload, **student_fields(self.hparams["distill"])}


# ---- composing a distillation run -----------------------------------------------------------

ALIASES = {"teacher": "distill.teacher", "method": "distill.method"}


def _teacher_recipe(teacher: Path) -> str | None:
    """The recipe the teacher's run used (its run folder's config.yaml), if any."""
    import yaml

    run = teacher if teacher.is_dir() else teacher.parent
    for folder in (run, run.parent):  # model.pt beside config.yaml, or checkpoints/*.ckpt
        try:
            return (yaml.safe_load((folder / "config.yaml").read_text()) or {}).get("recipe")
        except (OSError, yaml.YAMLError, AttributeError):
            continue
    return None


def _distill_recipe(args: list[str], payload: dict[str, Any] | None, teacher: str | None
                    ) -> list[str]:
    """``recipe=`` (or ``domain=``) to compose with: the user's; else ``distill_<the
    teacher's recipe>`` where one exists; else the teacher's domain."""
    from .config import list_recipes

    if any(a.split("=", 1)[0] in ("recipe", "domain") for a in args) or payload is None:
        return []
    own = _teacher_recipe(Path(teacher)) if teacher else None
    if own and f"distill_{own}" in list_recipes():
        return [f"recipe=distill_{own}"]
    return [f"domain={payload['domain']}"]


def distill_config(args: list[str]) -> Any:
    """The composed config of ``omnidiff distill`` (``stage=distill``): a recipe's training
    settings and ``distill:`` block, with the teacher's network, schedule, prediction and data
    (the user's ``data.*`` overrides on top), and the student's sampler for evaluation."""
    from omegaconf import OmegaConf

    from .checkpoint import read_checkpoint
    from .config import compose, to_plain

    args = [f"{ALIASES[a.split('=', 1)[0]]}={a.split('=', 1)[1]}"
            if a.split("=", 1)[0] in ALIASES else a for a in args]
    given = dict(a.split("=", 1) for a in args if "=" in a)
    teacher = given.get("distill.teacher")
    teacher = None if teacher in (None, "", "null") else teacher
    payload = read_checkpoint(teacher) if teacher else None
    if teacher:  # recorded absolute: a resumed run finds it from any folder
        args = [a for a in args if not a.startswith("distill.teacher=")]
        args.append(f"distill.teacher={Path(teacher).expanduser().resolve()}")
    if payload is not None and payload.get("distilled"):
        raise ConfigError(f"{teacher} is itself a distilled student (method "
                          f"{payload['distilled'].get('method')}); distil its teacher "
                          f"({payload['distilled'].get('teacher')}) instead")
    cfg = compose(overrides=_distill_recipe(args, payload, teacher) + ["stage=distill"] + args)
    OmegaConf.set_struct(cfg, False)
    if payload is not None:
        if str(cfg.domain) != payload["domain"]:
            raise ConfigError(f"the teacher is a {payload['domain']!r} model and recipe "
                              f"{cfg.get('recipe')} trains {cfg.domain!r}; pass a recipe of "
                              f"the {payload['domain']!r} domain (or none)")
        data = {**payload.get("data", {}), **{k: v for k, v in to_plain(cfg.data).items()
                                                if f"data.{k}" in given}}
        cfg.model, cfg.schedule, cfg.data = payload["model"], payload["schedule"], data
        cfg.loss.prediction, cfg.loss.sigma_data = payload["prediction"], payload["sigma_data"]
    method = str(cfg.distill.method or "cd")
    if not any(k.startswith("sampler") for k in given):  # evaluate as the student samples
        from .checkpoint import student_fields

        default = student_fields({**to_plain(cfg.distill), "method": method})["sampler"]
        cfg.sampler = {**default, "guidance": None}  # its guidance is distilled in
    if method == "ct" and cfg.distill.get("total_steps") is None and cfg.trainer.max_steps > 0:
        cfg.distill.total_steps = int(cfg.trainer.max_steps)  # the curriculum's length
    OmegaConf.set_struct(cfg, True)
    return cfg


def teacher_payload(cfg: Any) -> dict[str, Any] | None:
    """The teacher's inference dict (``distill.teacher``), or None."""
    from .checkpoint import read_checkpoint

    teacher = cfg.distill.get("teacher")
    return read_checkpoint(str(teacher)) if teacher else None


def build_distill(cfg: Any, data_module: Any, domain_name: str,
                  payload: dict[str, Any] | None, autoencoder: Any = None) -> DistillModule:
    """The :class:`DistillModule` of a composed ``stage=distill`` config and its teacher's
    inference dict (``payload``); the data module is prepared."""
    from .conditions import spec_of
    from .config import to_plain
    from .reflow import check_reflow_teacher

    opts = to_plain(cfg.distill)
    if opts["method"] == "reflow":
        check_reflow_teacher(str(cfg.schedule.name))
    if payload is not None and opts.get("guidance") is not None \
            and not spec_of(data_module).conditional:
        raise ConfigError("distill.guidance needs a conditional teacher; this one is "
                          "unconditional (drop distill.guidance)")
    return DistillModule(domain_name, to_plain(cfg.model), to_plain(cfg.schedule),
                         event_shape=tuple(int(s) for s in data_module.event_shape),
                         cond_spec=spec_of(data_module), loss=to_plain(cfg.loss),
                         optim=to_plain(cfg.optim), data_cfg=to_plain(cfg.data),
                         autoencoder=autoencoder, distill=opts,
                         teacher_state=None if payload is None else payload["state_dict"])
