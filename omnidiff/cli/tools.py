"""``omnidiff check``, ``domains``, ``recipes``, ``compare`` and ``demo``: the commands that
inspect plugins and recipes, compare finished runs, or show the core alone."""

from __future__ import annotations

import os
import tempfile
import textwrap
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from omegaconf import OmegaConf

from omnidiff.cli.args import key_values, number, out_folder
from omnidiff.errors import UsageError, UserError, one_line
from omnidiff.plugins.check import DomainContractError, check_domain
from omnidiff.plugins.configs import domain_config_problem
from omnidiff.plugins.registry import describe, get_domain
from omnidiff.tasks.compare import write_comparison
from omnidiff.tasks.config import compose, list_recipes, recipe_header
from omnidiff.tasks.demo import run_demo
from omnidiff.training.run_folder import read_manifest

__all__ = ["cmd_check", "cmd_domains", "cmd_recipes", "cmd_compare", "cmd_demo"]


def cmd_check(args: list[str]) -> int:
    """``omnidiff check NAME [data.KEY=V] [model.KEY=V] [n= steps= sampler=]``: the domain
    contract test of :func:`omnidiff.plugins.check.check_domain`, without pytest."""
    if not args or "=" in args[0]:
        raise UsageError("check needs a domain name: omnidiff check NAME [data.KEY=VALUE ...] "
                         "[model.KEY=VALUE ...] (see `omnidiff domains`)")
    name, opts = args[0], key_values(args[1:], {"n", "steps", "sampler"}, "check",
                              prefixes=("data.", "model."))
    data = {k[5:]: v for k, v in opts.items() if k.startswith("data.")}
    model = {k[6:]: v for k, v in opts.items() if k.startswith("model.")}
    domain = get_domain(name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = check_domain(domain, data=data, model=model, out_dir=tmp,
                                  n=number(opts, "n", int, 4, 1),
                                  steps=number(opts, "steps", int, 2, 1),
                                  sampler=str(opts.get("sampler") or "ddim"))
        except UserError:  # a broken promise (DomainContractError) or a bad option
            raise
        except Exception as exc:  # the plugin's own code failed: say where, keep it short
            if os.environ.get("OMNIDIFF_DEBUG"):
                raise
            raise DomainContractError(
                f"domain {name!r} failed the contract check: {type(exc).__name__}: {exc} "
                "(OMNIDIFF_DEBUG=1 shows the traceback)") from None
    print(f"domain {name!r} passes the contract ({time.perf_counter() - t0:.1f} s): event "
          f"{tuple(report['event_shape'])}, condition {report['cond']}, loss "
          f"{report['loss']:.4g}, files {', '.join(report['files'])}")
    print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in report["metrics"].items()))
    return 0


def cmd_domains(args: list[str]) -> int:
    if args:
        raise UsageError("`omnidiff domains` takes no arguments")
    rows = describe()
    if not rows:
        print("no domains installed (plugins register under the entry-point group "
              "'omnidiff.domains')")
        return 0
    try:
        recipes = list_recipes()
    except Exception:
        recipes = {}
    for r in rows:
        names = sorted(k for k, v in recipes.items() if (v.domain or v.origin) == r["name"])
        problem = (domain_config_problem(get_domain(r["name"])) if r["status"] == "ok"
                   else None)
        status = (r["status"] if r["status"] == "ok" and problem is None
                  else one_line(r["status"] if problem is None else f"broken: {problem}"))
        print(f"{r['name']:<10} {r['package'] or '?'} {r['version'] or '?'}  [{status}]")
        print(f"{'':<10} recipes: {', '.join(names) or '-'}")
    return 0


def cmd_recipes(args: list[str]) -> int:
    """``omnidiff recipes``: every recipe and its first sentence; ``omnidiff recipes NAME``:
    that recipe's whole description and its settings (data, model, training, evaluation,
    sampler)."""
    recipes = list_recipes()
    if len(args) > 1 or args and args[0] not in recipes:
        raise UsageError(f"`omnidiff recipes` takes nothing or one recipe name, got "
                         f"{' '.join(args)!r}; the recipes: {', '.join(sorted(recipes))}")
    if args:
        return _show_recipe(recipes[args[0]])
    if not recipes:
        print("no recipes found")
        return 0
    width = max(len(n) for n in recipes)
    for name, info in sorted(recipes.items()):
        origin = "" if info.origin == "omnidiff" else f" (from {info.origin})"
        dom = f"[{info.domain}] " if info.domain else ""
        lines = textwrap.wrap(f"{dom}{info.description}{origin}", 99 - width - 2) or [""]
        print(f"{name:<{width}}  {lines[0]}")
        for more in lines[1:]:
            print(f"{'':<{width}}  {more}")
    print("\n`omnidiff recipes NAME` shows one recipe whole: its description and settings")
    return 0


def _show_recipe(info: Any) -> int:
    """One recipe: its header comment, then its composed settings, section by section."""
    print(f"{info.name} ({info.path})")
    for line in recipe_header(Path(info.path).read_text(encoding="utf-8")):
        print(f"  {line}")
    cfg = compose(info.name, [])
    print(f"\nsettings (change any with key=value on `omnidiff train recipe={info.name}`):")
    for key in ("domain", "threads", "data", "model", "trainer", "optim", "eval", "sampler"):
        if cfg.get(key) is None:
            continue
        value = cfg[key]
        text = (OmegaConf.to_yaml(value, resolve=True) if OmegaConf.is_config(value)
                else f"{value}\n")
        if "\n" in text.strip():
            print(f"{key}:")
            print(textwrap.indent(text.rstrip(), "  "))
        else:
            print(f"{key}: {text.strip()}")
    return 0


def cmd_compare(args: list[str]) -> int:
    """``omnidiff compare PATH... [out=DIR] [metric=NAME]``: the table and figure of
    :mod:`omnidiff.tasks.compare` (written into a lone sweep folder by default)."""
    opts, paths = {}, []
    for a in args:
        key, eq, value = a.partition("=")
        if eq and key in ("out", "metric"):
            opts[key] = value
        elif a.startswith("-"):
            raise UsageError(f"unknown flag {a!r}; compare takes folders and out=DIR metric=NAME")
        else:
            paths.append(Path(a))
    if not paths:
        raise UsageError("compare needs run or sweep folders: omnidiff compare PATH... "
                         "[out=DIR] [metric=NAME]")
    missing = [p for p in paths if not p.is_dir()]
    if missing:
        raise UsageError(f"{missing[0]} is not a folder; pass run folders, sweep folders or "
                         "folders holding them")
    if opts.get("out"):
        out = out_folder(opts["out"], Path("."))
    elif len(paths) == 1 and read_manifest(paths[0]) is not None:
        out = paths[0]
    else:
        out = Path("comparisons") / datetime.now().strftime("%Y%m%d-%H%M%S")
    text, files = write_comparison(paths, out, metric=opts.get("metric") or None)
    print(text, end="")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


DEMO_KEYS = {"out": str, "n": int, "steps": int, "sampler": str, "seed": int, "schedule": str}


def cmd_demo(args: Sequence[str]) -> int:
    """``omnidiff demo [out=demo_out n=2000 steps=20 sampler=dpmpp_2m seed=0 schedule=linear]``.

    Bad arguments raise ``ValueError`` with one line naming the valid keys or choices.
    """
    kwargs: dict[str, Any] = {}
    for a in args:
        key, sep, value = a.partition("=")
        if not sep:
            raise UserError(f"bad argument {a!r} for `omnidiff demo`; write key=value (keys: "
                             f"{', '.join(sorted(DEMO_KEYS))})")
        if key not in DEMO_KEYS:
            raise UserError(f"unknown option {key!r} for `omnidiff demo`; choose from: "
                             f"{', '.join(sorted(DEMO_KEYS))}")
        try:
            kwargs[key] = DEMO_KEYS[key](value)
        except ValueError:
            raise UserError(f"`omnidiff demo` option {key}= needs an integer, got "
                             f"{value!r}") from None
    if "out" in kwargs:
        kwargs["out_dir"] = kwargs.pop("out")
    run_demo(**kwargs)
    return 0
