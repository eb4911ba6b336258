"""Compose omnidiff's Hydra configs (the Compose API; no ``@hydra.main``, no ``${hydra:...}``).

The root config is ``pkg://omnidiff.conf/config.yaml``; its defaults list selects the groups
``domain``, ``schedule``, ``loss``, ``sampler``, ``trainer``, ``logger`` and, last, an optional
``recipe`` (so ``recipe=NAME`` needs no ``+``). Every registered domain contributes its
``config_searchpath`` (``domain/<name>.yaml`` and optional ``recipe/*.yaml``), so third-party
plugins' configs and recipes are found like the built-in ones.

:func:`compose` returns a resolved :class:`~omegaconf.DictConfig` with two bookkeeping keys
added: ``domain`` (the selected domain's name) and ``recipe`` (the recipe's name or None).
``DictConfig`` stops at the edges: :func:`to_plain` turns a node into plain python.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import os
import re
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from omegaconf import DictConfig, OmegaConf

from omnidiff._util import INT64_MAX, number_problem
from omnidiff.core.conditions import cond_spec_of
from omnidiff.core.losses import LOSS_KEYS, TIME_SAMPLING, WEIGHTINGS, check_loss_options
from omnidiff.core.predictions import PREDICTIONS
from omnidiff.core.schedules import get_schedule
from omnidiff.errors import ConfigError
from omnidiff.methods.diffusers.network import training_block
from omnidiff.methods.distill_options import DISTILL_KEYS, distill_options
from omnidiff.methods.latent.autoencoder import AE_KEYS, check_ae_options
from omnidiff.model_spec import ModelSpec
from omnidiff.plugins.configs import domain_config_problem, package_dir, searchpath_root
from omnidiff.plugins.registry import available, describe, get_domain
from omnidiff.plugins.shards import need_litdata, shard_folder_problem
from omnidiff.samplers import SAMPLERS, check_sampler_options
from omnidiff.samplers.denoiser import parse_clip
from omnidiff.training import tensorboard
from omnidiff.training.optim import OPTIM_KEYS, optimizer_args

__all__ = ["ConfigError", "RecipeInfo", "compose", "check_machine", "list_recipes",
           "STREAM_KEYS", "domain_data",
           "domain_config_problem", "domain_searchpaths",
           "group_options", "to_plain", "validate"]

CONFIG_MODULE = "omnidiff.conf"
RECIPE_MODULE = "omnidiff.conf.recipe"


@dataclass(frozen=True)
class RecipeInfo:
    name: str
    description: str
    origin: str  # "omnidiff" or the domain that ships it
    path: str
    domain: str | None = None  # from the recipe's `override /domain: NAME`


# ---- search paths -----------------------------------------------------------------------


def _recipe_shim() -> str | None:
    """A ``file://`` search-path entry exposing ``recipes/`` as the ``recipe`` group.

    In a wheel, ``omnidiff.conf.recipe`` is installed as ``omnidiff/conf/recipe`` and Hydra
    finds it under ``pkg://omnidiff.conf``. In an editable (source-tree) install the package is
    mapped onto the top-level ``recipes/`` folder, which is not below ``conf/``; then we point
    Hydra at a cached folder holding one symlink ``recipe -> recipes/`` (a copy where symlinks
    are not allowed).
    """
    conf = package_dir(CONFIG_MODULE)
    if conf is not None and conf.joinpath("recipe").is_dir():
        return None
    recipes = package_dir(RECIPE_MODULE)
    if recipes is None or not isinstance(recipes, Path) or not recipes.is_dir():
        return None
    key = hashlib.sha1(str(recipes.resolve()).encode()).hexdigest()[:12]
    root = Path(tempfile.gettempdir()) / f"omnidiff-{os.getuid() if hasattr(os, 'getuid') else 0}" / key
    link = root / "recipe"
    if not (link.is_symlink() and link.resolve() == recipes.resolve()):
        root.mkdir(parents=True, exist_ok=True)
        tmp = root / f".recipe.{os.getpid()}"
        try:
            os.symlink(recipes.resolve(), tmp, target_is_directory=True)
            os.replace(tmp, link)
        except OSError:  # no symlinks (e.g. Windows without privileges): copy the files
            import shutil
            if tmp.is_symlink() or tmp.exists():
                tmp.unlink()
            if link.is_symlink():
                link.unlink()
            shutil.copytree(recipes, link, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.py"))
    return f"file://{root}"


def domain_searchpaths() -> dict[str, str]:
    """``{domain name: search path}`` for every registered domain that loads and has configs.

    Broken plugins are skipped here (``omnidiff domains`` reports them).
    """
    out = {}
    for name in available():
        try:
            sp = get_domain(name).config_searchpath
        except Exception:
            continue
        if sp:
            out[name] = sp
    return out


def _searchpaths() -> list[str]:
    paths = []
    shim = _recipe_shim()
    if shim:
        paths.append(shim)
    for sp in domain_searchpaths().values():
        if sp not in paths:
            paths.append(sp)
    return paths


# ---- listing ------------------------------------------------------------------------------

def _recipe_domain(text: str) -> str | None:
    m = re.search(r"override\s+/domain\s*:\s*([\w.-]+)", text)
    return m.group(1) if m else None


def recipe_header(text: str) -> list[str]:
    """The comment lines a recipe opens with (without ``#`` and the ``@package`` directive)."""
    lines = []
    for line in text.splitlines():
        s = line.strip()
        if not s:
            continue
        if not s.startswith("#"):
            break
        body = s.lstrip("#").strip()
        if not body.startswith("@package"):
            lines.append(body)
    return lines


def _description(text: str) -> str:
    """A recipe's first sentence (its header comment up to the first full stop that ends a
    sentence, over as many lines as it takes)."""
    words = " ".join(recipe_header(text)).split()
    out: list[str] = []
    for w in words:
        out.append(w)
        if w.endswith(".") and not w.endswith(("e.g.", "i.e.", "etc.")) and len(w) > 2:
            break
    return " ".join(out)


def list_recipes() -> dict[str, RecipeInfo]:
    """Every recipe Hydra can select: omnidiff's own first, then each domain's."""
    found: dict[str, RecipeInfo] = {}
    roots: list[tuple[str, Any]] = []
    own = package_dir(RECIPE_MODULE)
    if own is not None:
        roots.append(("omnidiff", own))
    for dname, sp in domain_searchpaths().items():
        root = searchpath_root(sp)
        if root is not None:
            roots.append((dname, root.joinpath("recipe")))
    for origin, root in roots:
        try:
            entries = sorted(root.iterdir(), key=lambda p: p.name) if root.is_dir() else []
        except (OSError, FileNotFoundError):
            entries = []
        for f in entries:
            if f.name.endswith(".yaml") and f.is_file():
                name = f.name[:-len(".yaml")]
                if name not in found:
                    text = f.read_text(encoding="utf-8")
                    found[name] = RecipeInfo(name, _description(text), origin, str(f),
                                             _recipe_domain(text))
    return found


def group_options(group: str) -> list[str]:
    """Config names in one of omnidiff's own groups (``schedule``, ``trainer``, ...)."""
    root = package_dir(CONFIG_MODULE)
    if root is None or not root.joinpath(group).is_dir():
        return []
    return sorted(f.name[:-5] for f in root.joinpath(group).iterdir()
                  if f.name.endswith(".yaml"))


# ---- composing ----------------------------------------------------------------------------

def _split(override: str) -> tuple[str, str | None]:
    if "=" not in override:
        return override, None
    k, v = override.split("=", 1)
    return k.strip().lstrip("+~"), v.strip()


def _broken_domains() -> str:
    """``"; domain plugin(s) that failed to load (and may ship it): ..."`` or ``""``."""
    broken = [f"{r['name']} ({r['status']})" for r in describe() if r["status"] != "ok"]
    return ("; domain plugins that failed to load, and may ship it: " + "; ".join(broken)
            if broken else "")


def _check_recipe(name: str) -> None:
    """The recipe exists (else the list, and the broken plugins that might ship it) and is a
    ``# @package _global_`` file (else its keys would land under ``recipe.``)."""
    recipes = list_recipes()
    if name not in recipes:
        raise ConfigError(f"unknown recipe {name!r}; available recipes: "
                          f"{', '.join(sorted(recipes)) or 'none'} (see `omnidiff recipes`)"
                          f"{_broken_domains()}")
    info = recipes[name]
    if "@package _global_" not in Path(info.path).read_text(encoding="utf-8"):
        raise ConfigError(f"recipe {name!r} ({info.path}) does not start with "
                          "'# @package _global_', so its settings would land under 'recipe.' "
                          "and be ignored; add that line at the top")


def _precheck(overrides: list[str]) -> None:
    """Turn the commonest mistakes into one clear line before Hydra sees them."""
    for o in overrides:
        key, value = _split(o)
        if value is None:
            raise ConfigError(f"bad override {o!r}: write key=value (e.g. trainer.max_steps=100); "
                              "use +key=value to add a key the config does not have")
        if key == "recipe" and value not in ("null", ""):
            _check_recipe(value)
        elif key == "domain":
            names = available()
            if value not in names:
                raise ConfigError(f"unknown domain {value!r}; installed domains: "
                                  f"{', '.join(names) or 'none'} (see `omnidiff domains`)")
            if value not in domain_searchpaths():
                get_domain(value)  # raises the plugin's own error if it is broken
                raise ConfigError(f"domain {value!r} ships no Hydra configs "
                                  "(its config_searchpath is None)")
        elif key in ("schedule", "trainer", "loss", "sampler", "logger", "launcher"):
            opts = group_options(key)
            if opts and value not in opts:
                hint = ""
                if key == "sampler":
                    hint = " (or set sampler.name=NAME for any of the registered samplers)"
                raise ConfigError(f"unknown {key} {value!r}; choose one of: {', '.join(opts)}"
                                  f"{hint}")


def _block_keys(block: str) -> list[str] | None:
    """The keys a block passed whole accepts (None: not known here)."""
    if block == "trainer":
        from lightning.pytorch import Trainer
        return [k for k in inspect.signature(Trainer.__init__).parameters if k != "self"]
    if block == "loss":
        return list(LOSS_KEYS)
    if block == "optim":
        return list(OPTIM_KEYS)
    if block == "ae":
        return list(AE_KEYS)
    if block == "distill":
        return list(DISTILL_KEYS)
    return None


def _unknown_key_hint(msg: str) -> str:
    """For ``Could not override 'a.b'``: the close key it may be a typo of, whether ``+a.b=``
    would be accepted by the block's reader, or the generic ``+KEY=VALUE`` advice."""
    m = re.search(r"override '([\w.]+)'", msg)
    key = m.group(1) if m else ""
    block, _, name = key.rpartition(".")
    known = _block_keys(block) if block and "." not in block else None
    if known is None:
        return "; to add a key the config does not have, write +KEY=VALUE"
    if name in known:
        return f"; {block}.{name} is not set in this config: write +{key}=VALUE"
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {block}.{close[0]}?"
    listed = ("the arguments of lightning.pytorch.Trainer" if block == "trainer"
              else ", ".join(known))
    return f"; {block} has no option {name!r} ({listed})"


def _hydra_message(exc: BaseException) -> str:
    msg = str(exc).strip().splitlines()
    first = msg[0] if msg else type(exc).__name__
    cause = exc.__cause__
    if cause is not None and str(cause).strip():
        first = f"{first} ({str(cause).strip().splitlines()[0]})"
    return first


def compose(recipe: str | None = None, overrides: Iterable[str] = ()) -> DictConfig:
    """Compose the root config with ``recipe`` and ``key=value`` overrides (resolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    overrides = [str(o) for o in overrides]
    if recipe is not None:
        overrides = [f"recipe={recipe}"] + [o for o in overrides if _split(o)[0] != "recipe"]
    _precheck(overrides)
    sp = _searchpaths()
    if sp:
        overrides.append("hydra.searchpath=[" + ",".join(sp) + "]")
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(CONFIG_MODULE, version_base="1.3"):
            cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    except (HydraException, OmegaConfBaseException) as exc:
        msg = _hydra_message(exc)
        if "not in struct" in msg:
            msg += _unknown_key_hint(msg)
        raise ConfigError(f"bad config or override: {msg}") from None
    finally:
        GlobalHydra.instance().clear()
    choices = OmegaConf.to_container(cfg.hydra.runtime.choices)
    OmegaConf.set_struct(cfg, False)
    del cfg["hydra"]
    try:
        OmegaConf.resolve(cfg)
    except OmegaConfBaseException as exc:
        raise ConfigError(f"config does not resolve: {_hydra_message(exc)}") from None
    cfg.domain = choices.get("domain")
    cfg.recipe = choices.get("recipe")
    OmegaConf.set_struct(cfg, True)
    return cfg


def to_plain(node: Any) -> Any:
    """DictConfig / ListConfig -> plain dicts and lists (resolved); anything else unchanged."""
    if OmegaConf.is_config(node):
        return OmegaConf.to_container(node, resolve=True)
    return node


# data keys of every domain that say where the training data streams from, not what it is
# (conf/config.yaml): they never reach a domain's data module
STREAM_KEYS = ("stream", "stream_window")


def domain_data(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.data`` as the domain's data module takes it: plain, without :data:`STREAM_KEYS`."""
    return {k: v for k, v in to_plain(cfg.data).items() if k not in STREAM_KEYS}


def model_spec(cfg: DictConfig, data_module: Any) -> ModelSpec:
    """The identity of the model a config trains on its prepared data module: the config's
    domain, ``model``, ``schedule``, ``loss.prediction`` / ``loss.sigma_data`` and ``data``,
    the data's event shape and condition."""
    model, cond = to_plain(cfg.model), cond_spec_of(data_module)
    if model.get("name") == "diffusers":  # a diffusers class, completed from the data
        model = training_block(model, data_module.event_shape, cond, to_plain(cfg.schedule))
    settings = getattr(data_module, "model_settings", None)  # what follows from the data
    if settings is not None:
        model |= {k: v for k, v in settings(model).items() if model.get(k) is None}
    return ModelSpec(str(cfg.domain), model, to_plain(cfg.schedule),
                     data_module.event_shape, cond,
                     prediction=str(cfg.loss.get("prediction", "eps")),
                     sigma_data=float(cfg.loss.get("sigma_data", 1.0)), data=domain_data(cfg))


def validate(cfg: DictConfig) -> None:
    """Check names the core knows (schedule, sampler, prediction, ...) with one clear line."""
    if not cfg.get("domain"):
        raise ConfigError("no domain selected; pass recipe=NAME or domain=NAME")
    try:
        get_schedule(**to_plain(cfg.schedule))
    except ValueError as exc:
        raise ConfigError(f"{exc} (override with schedule=NAME)") from None
    checks = [("sampler", cfg.sampler.name, SAMPLERS, "sampler.name=NAME"),
              ("prediction", cfg.loss.prediction, PREDICTIONS, "loss.prediction=NAME"),
              ("time sampling", cfg.loss.time_sampling, TIME_SAMPLING, "loss.time_sampling=NAME"),
              ("weighting", cfg.loss.weighting, WEIGHTINGS, "loss.weighting=NAME")]
    for kind, value, choices, how in checks:
        if value not in choices:
            raise ConfigError(f"unknown {kind} {value!r}; choose one of: "
                              f"{', '.join(choices)} ({how})")
    if "model" not in cfg or "data" not in cfg:
        raise ConfigError(f"domain {cfg.domain!r} config lacks 'model:' or 'data:' "
                          "(domain/<name>.yaml must define both)")
    try:
        parse_clip(to_plain(cfg.sampler.get("clip_x0")))
    except ValueError as exc:
        raise ConfigError(f"sampler.{exc}") from None
    _check_numbers(cfg)
    _check_trainer(cfg)
    _check_blocks(cfg)
    _check_eps_conditioning(get_schedule(**to_plain(cfg.schedule)), str(cfg.loss.prediction))
    _check_run_options(cfg)
    _check_logger(cfg)
    _check_stream(cfg)


def _check_stream(cfg: DictConfig) -> None:
    """``data.stream``: litdata installed and a shard folder there (URLs are read later);
    not with ``autoencoder=`` (shards hold data, a latent model trains on codes)."""
    source = cfg.data.get("stream")
    if source in (None, ""):
        return
    window = cfg.data.get("stream_window")
    if window is not None and (isinstance(window, bool) or not isinstance(window, int)
                               or window < 1):
        raise ConfigError(f"data.stream_window={window!r}: give a number of samples >= 1 "
                          "(or null: 16 batches, at most 16 MiB)")
    if cfg.get("autoencoder"):
        raise ConfigError("data.stream does not go with autoencoder= yet: a latent model "
                          "trains on codes, the shards hold data; drop one of them")
    need_litdata()
    problem = shard_folder_problem(str(source))
    if problem:
        raise ConfigError(problem)


def _check_logger(cfg: DictConfig) -> None:
    """A logger omnidiff knows, and the package it needs."""
    name = str(cfg.get("logger", {}).get("name", "csv"))
    if name not in ("csv", "tensorboard", "none"):
        raise ConfigError(f"unknown logger {name!r}; choose one of: csv, tensorboard, none "
                          "(logger=NAME)")
    if name == "tensorboard" and not tensorboard.available():
        raise ConfigError("logger=tensorboard needs the tensorboard package: pip install "
                          "'omnidiff[tensorboard]' (or train with logger=csv)")


def _check_blocks(cfg: DictConfig) -> None:
    """The blocks passed whole take only keys their reader knows: ``loss`` (diffusion_loss),
    ``optim`` (adamw and the EMA), ``sampler`` (the chosen sampler's options)."""
    check_loss_options(to_plain(cfg.loss))
    optimizer_args(to_plain(cfg.optim))
    _check_stage(cfg)
    block = {k: v for k, v in to_plain(cfg.sampler).items()
             if k not in ("name", "steps", "guidance", "compose") and v is not None}
    try:
        check_sampler_options(str(cfg.sampler.name), block)
    except ValueError as exc:
        raise ConfigError(f"sampler: {exc}") from None
    _check_compose(to_plain(cfg.sampler.get("compose")), cfg.sampler.get("guidance"))


def _check_compose(compose: Any, guidance: Any) -> None:
    """``sampler.compose``: null, or ``{part: weight}`` (weights numbers >= 0) beside
    ``sampler.guidance``."""
    if compose is None:
        return
    if not isinstance(compose, dict) or not compose:
        raise ConfigError(f"sampler.compose={compose!r}: give {{part: weight}}, e.g. "
                          f"sampler.compose={{digit: 5}}, or null")
    for part, weight in compose.items():
        problem = number_problem(f"sampler.compose.{part}", weight, float, 0)
        if problem:
            raise ConfigError(problem)
    if guidance is None:
        raise ConfigError("sampler.compose adds to classifier-free guidance: set "
                          "sampler.guidance too")


AUTOENCODER_REQUIRED = "required"  # a latent recipe's `autoencoder:` until the user names one


def _check_stage(cfg: DictConfig) -> None:
    """``stage`` and what it reads: the ``ae:`` block to train an autoencoder, the
    ``autoencoder=`` file (checked when read) to train on its latents; not both."""
    if cfg.get("autoencoder") == AUTOENCODER_REQUIRED:  # a latent recipe, not given one
        raise ConfigError(f"recipe {cfg.get('recipe')} trains a diffusion model on an "
                          "autoencoder's latents: pass autoencoder=<the model.pt of its "
                          "autoencoder run, e.g. runs/<recipe>_ae/<time>/model.pt>")
    stage = cfg.get("stage", "diffusion")
    if stage not in ("diffusion", "autoencoder", "distill", "classifier"):
        raise ConfigError(f"stage={stage!r}: choose diffusion, autoencoder, distill or "
                          "classifier")
    if stage == "classifier" and cfg.get("autoencoder"):
        raise ConfigError("stage=classifier classifies the data itself; drop autoencoder=")
    if stage == "distill":
        distill_options(to_plain(cfg.get("distill") or {}))
    if stage == "autoencoder":
        check_ae_options(to_plain(cfg.get("ae") or {}))
        if cfg.get("autoencoder"):
            raise ConfigError("stage=autoencoder trains an autoencoder; autoencoder= names one "
                              "to train a latent diffusion model on: pass one of them")
    elif cfg.get("autoencoder") is not None and not isinstance(cfg.autoencoder, str):
        raise ConfigError(f"autoencoder={cfg.autoencoder!r}: give the path of an autoencoder's "
                          "model.pt")


# numeric settings: (dotted key, int or float, lowest value, highest value, null allowed)
NUMBERS = (
    ("seed", int, 0, INT64_MAX, False), ("threads", int, 1, None, True),
    ("optim.lr", float, 1e-12, None, False), ("optim.weight_decay", float, 0, None, False),
    ("optim.warmup", int, 0, None, False), ("optim.ema_decay", float, 0, 1, True),
    ("eval.every_n_steps", int, 0, None, True), ("eval.n_samples", int, 1, None, False),
    ("eval.n_ref", int, 1, None, False), ("eval.batch_size", int, 1, None, True),
    ("eval.seed", int, 0, INT64_MAX, False), ("sampler.steps", int, 1, None, False),
    ("sampler.guidance", float, 0, None, True), ("loss.p_uncond", float, 0, 1, False),
    ("loss.sigma_data", float, 1e-12, None, False),
    ("loss.min_snr_gamma", float, 1e-12, None, False), ("loss.p_std", float, 1e-12, None, False),
    ("loss.p_mean", float, -1e6, None, False),
    ("trainer.max_steps", int, -1, None, False), ("trainer.max_epochs", int, -1, None, True),
    ("trainer.num_nodes", int, 1, None, False), ("trainer.log_every_n_steps", int, 1, None, False),
    ("trainer.gradient_clip_val", float, 0, None, True),
    ("trainer.accumulate_grad_batches", int, 1, None, False),
    ("checkpoint.every_n_train_steps", int, 0, None, True),
    ("checkpoint.every_n_minutes", float, 0, None, True), ("checkpoint.keep", int, -1, None, False),
    ("ae.latent_channels", int, 1, None, False), ("ae.blocks", int, 0, None, False),
    ("ae.kl_weight", float, 0, None, False),
    ("distill.guidance", float, 0, None, True),
    ("distill.p_std", float, 1e-12, None, True), ("distill.p_mean", float, -1e6, None, True),
    ("distill.huber_c", float, 0, None, True), ("distill.target_ema", float, 0, 0.9999999, True),
    ("distill.scale", float, 1e-12, None, True), ("distill.pairs", int, 1, None, True),
    ("distill.teacher_steps", int, 1, None, True), ("distill.steps", int, 1, None, True),
    ("distill.total_steps", int, 1, None, True), ("distill.level_groups", int, 1, None, True),
    ("distill.segments", int, 1, None, True),
)


def _check_numbers(cfg: DictConfig) -> None:
    """Every numeric setting has the right type and range; one line names the key, the value
    and what to give instead."""
    for key, kind, low, high, nullable in NUMBERS:
        value = OmegaConf.select(cfg, key, default="<absent>")
        if value == "<absent>" or (value is None and nullable):
            continue
        problem = number_problem(key, value, kind, low, high)
        if problem:
            raise ConfigError(problem + (" (or null)" if nullable else ""))


def _check_trainer(cfg: DictConfig) -> None:
    """``trainer.devices``, which Lightning would only reject with a traceback."""
    devices = cfg.trainer.get("devices", "auto")
    ok = devices in ("auto", -1) or isinstance(devices, str) and devices.replace(",", "").isdigit() \
        or (isinstance(devices, int) and not isinstance(devices, bool) and devices >= 1) \
        or (OmegaConf.is_list(devices) and len(devices) > 0)
    if not ok:
        raise ConfigError(f"trainer.devices={devices!r}: give a count >= 1, a list of device "
                          "indices ([0,1]), or auto")


def check_machine(cfg: DictConfig) -> None:
    """What this machine must have for the config: a GPU for ``trainer.accelerator=gpu`` (CUDA
    or, as Lightning reads it, Apple's MPS), CUDA for ``cuda`` (checked before any data is
    built; :func:`validate` checks only the config)."""
    import torch

    accelerator = str(cfg.trainer.get("accelerator", "auto"))
    has_gpu = torch.cuda.is_available() or (accelerator == "gpu"
                                            and torch.backends.mps.is_available())
    if accelerator in ("gpu", "cuda") and not has_gpu:
        raise ConfigError(f"trainer.accelerator={accelerator} but this machine has no CUDA "
                          "GPU that torch can use; train with trainer=cpu (or install a CUDA "
                          "build of torch)")


def _check_run_options(cfg: DictConfig) -> None:
    """``overwrite`` and ``verbose`` (true or false), ``overwrite`` with ``resume``, and
    ``init`` (an existing file, for a new diffusion run)."""
    overwrite = cfg.get("overwrite", False)
    for key in ("overwrite", "verbose"):
        if not isinstance(cfg.get(key, False), bool):
            raise ConfigError(f"{key}={cfg.get(key)!r}: give true or false")
    if overwrite and cfg.get("resume") not in (None, "", False):
        raise ConfigError("overwrite=true replaces the run in out=, resume= continues it; pass "
                          "one of them")
    init = cfg.get("init")
    if init:
        if cfg.get("resume") not in (None, "", False):
            raise ConfigError("init= starts a new run from a model's weights, resume= continues "
                              "a run; pass one of them")
        if cfg.get("stage", "diffusion") != "diffusion":
            raise ConfigError(f"init= fine-tunes a diffusion model; stage={cfg.stage} starts "
                              "from scratch (drop init=)")
        if not Path(str(init)).expanduser().exists():
            raise ConfigError(f"init={init}: no such file; pass a model.pt or .ckpt of "
                              "`omnidiff train`")


def _check_eps_conditioning(schedule: Any, prediction: str) -> None:
    """eps-prediction near zero terminal SNR: x0 = (x - sigma eps) / alpha turns an eps error e
    into sigma/alpha * e at the first sampling step, and a deterministic sampler keeps it."""
    import torch

    if prediction != "eps":
        return
    a, s = (float(v) for v in schedule.alpha_sigma(torch.tensor(schedule.t_max,
                                                                  dtype=torch.float64)))
    if a <= 0:
        raise ConfigError(f"loss.prediction=eps cannot be trained on the {schedule.name!r} "
                          "schedule: alpha(t_max) = 0 leaves x0 undefined; use loss=v (or x0 / "
                          "flow)")
    if s / a > 20:
        warnings.warn(f"omnidiff: eps-prediction on the {schedule.name!r} schedule: at t_max "
                      f"alpha = {a:.4f}, so an eps error e becomes an x0 error {s / a:.0f} e "
                      "and deterministic samplers can land far from the data (points2d, "
                      "1000 steps, dpmpp_2m sliced W2 5.5 against 0.08 for v). Prefer loss=v, "
                      "or sample with clip_x0= set to the data's range", UserWarning,
                      stacklevel=3)
