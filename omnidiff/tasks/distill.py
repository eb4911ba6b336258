"""Composing an ``omnidiff distill`` run: the teacher's network, schedule and data over a
recipe's training settings, and the :class:`~omnidiff.training.distill_module.DistillModule`
built from the composed config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from omnidiff.errors import ConfigError
from omnidiff.methods.distill_options import student_fields
from omnidiff.methods.reflow import check_reflow_teacher
from omnidiff.model_file import read_checkpoint
from omnidiff.tasks.config import compose, list_recipes, model_spec, to_plain
from omnidiff.training.distill_module import DistillModule

__all__ = ["distill_config", "teacher_payload", "build_distill"]


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

        default = student_fields({**to_plain(cfg.distill), "method": method})["sampler"]
        cfg.sampler = {**default, "guidance": None}  # its guidance is distilled in
    curriculum = method == "ct" or OmegaConf.is_list(cfg.distill.get("levels"))
    if curriculum and cfg.distill.get("total_steps") is None and cfg.trainer.max_steps > 0:
        cfg.distill.total_steps = int(cfg.trainer.max_steps)  # the curriculum's length
    OmegaConf.set_struct(cfg, True)
    return cfg


def teacher_payload(cfg: Any) -> dict[str, Any] | None:
    """The teacher's payload (``distill.teacher``), or None."""
    teacher = cfg.distill.get("teacher")
    return read_checkpoint(str(teacher)) if teacher else None


def build_distill(cfg: Any, data_module: Any, payload: dict[str, Any] | None,
                  autoencoder: Any = None) -> DistillModule:
    """The :class:`DistillModule` of a composed ``stage=distill`` config and its teacher's
    payload (``payload``); the data module is prepared."""
    opts = to_plain(cfg.distill)
    if opts["method"] == "reflow":
        check_reflow_teacher(str(cfg.schedule.name))
    spec = model_spec(cfg, data_module)
    if payload is not None and opts.get("guidance") is not None and not spec.cond.conditional:
        raise ConfigError("distill.guidance needs a conditional teacher; this one is "
                          "unconditional (drop distill.guidance)")
    return DistillModule(spec, loss=to_plain(cfg.loss), optim=to_plain(cfg.optim),
                         autoencoder=autoencoder, distill=opts,
                         teacher_state=None if payload is None else payload["state_dict"])
