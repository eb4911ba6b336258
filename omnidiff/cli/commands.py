"""The ``omnidiff`` command.

    omnidiff train recipe=NAME [key=value ...]     train; writes a run directory
    omnidiff train -m recipe=NAME a=1,2 b=x,y      a sweep: one run per job, a summary
    omnidiff compare PATH... [out= metric=]        one table + figure over runs and sweeps
    omnidiff distill teacher=PATH [method=cd|ct|reflow ...]   a few-step student of a model
    omnidiff sample checkpoint=PATH [n= sampler= steps= guidance= seed= out= cond= ...]
    omnidiff calibrate checkpoint=PATH [sampler= steps= guidance= ...]   fit a few-step grid
    omnidiff likelihood checkpoint=PATH data=FILE.npy|reference [n= divergence= solver= ...]
    omnidiff check NAME [data.KEY=V model.KEY=V]   the domain contract test, without pytest
    omnidiff domains                               installed domain plugins and their recipes
    omnidiff recipes                               recipes with a one-line description

Mistakes (unknown recipe, domain, sampler or schedule, a bad override, a file that is not an
omnidiff checkpoint) end with one line on stderr naming the fix, and exit code 2. Set
``OMNIDIFF_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from omnidiff.cli.args import USER_ERRORS, key_values
from omnidiff.cli.sample import cmd_calibrate, cmd_likelihood, cmd_sample, number, out_folder
from omnidiff.cli.train import cmd_distill, cmd_train
from omnidiff.errors import TrainingPreempted, UsageError, UserError, one_line
from omnidiff.plugins.check import DomainContractError, check_domain
from omnidiff.plugins.configs import domain_config_problem
from omnidiff.plugins.registry import describe, get_domain
from omnidiff.tasks.compare import write_comparison
from omnidiff.tasks.config import list_recipes
from omnidiff.tasks.demo import run_demo
from omnidiff.tasks.sweeps import read_manifest

__all__ = ["main"]

USAGE = """usage: omnidiff <command> [key=value ...]

commands:
  train recipe=NAME [key=value ...]   train a model (Hydra overrides; see `omnidiff recipes`)
        e.g. omnidiff train recipe=points2d trainer.max_steps=500 out=runs/try
             omnidiff train recipe=points2d data.path=my_points.npy
             omnidiff train recipe=image_digits32_ae            (stage=autoencoder)
             omnidiff train recipe=image_digits32_latent autoencoder=RUN/model.pt
             omnidiff train recipe=points2d logger=tensorboard   (tensorboard --logdir runs:
                 scalars and the samples; pip install 'omnidiff[tensorboard]')
        --print-config  show the composed config and exit
        -m / --multirun  a sweep in Hydra's syntax (a=1,2  choice()  range(1,4)
                         schedule=glob(*)): the jobs run one after another, each in its own
                         run folder under out= (default runs/sweeps/<time>); a failed job is
                         recorded and the sweep goes on; resume=auto continues a stopped sweep
                         (finished jobs skipped); summary.csv / .md / .png at the end
        e.g. omnidiff train -m recipe=points2d optim.lr=1e-3,3e-3 loss=v,eps
  distill teacher=PATH [method=cd|ct|reflow recipe=NAME key=value ...]
                                      a few-step student of a trained model: consistency
                                      distillation (cd), consistency training (ct; no
                                      teacher needed: recipe=NAME) or reflow (flow models);
                                      its model.pt samples in 1-4 steps (sampler=consistency)
        e.g. omnidiff distill teacher=runs/points2d/RUN/model.pt
             omnidiff distill method=ct recipe=distill_points2d
        --print-config  show the composed config and exit
  sample checkpoint=PATH [n=64 sampler=(the model's) steps=(its) guidance=null seed=0 cond=null
         out=DIR batch_size=null device=null metrics=false grid=null clip_x0=null eta=null]
                                      draw samples and write the domain's artifacts (the
                                      default sampler: dpmpp_2m at 20 steps, a distilled
                                      student's own: consistency at 2); grid=
                                      a name, calibrated (the default when model.pt holds
                                      one for this sampler and steps) or times [1,0.5,0.1];
                                      cond= labels (3, [1,2]) or a FILE: .npy/.pt holding
                                      conditions or data to compute them from (n follows
                                      from it), or a format the domain reads (.wav, .png)
        -m  a sampler sweep of one checkpoint (sampler=ddim,dpmpp_2m steps=5,10,20
            guidance=1,2): each job's samples and metrics.json in its own folder under out=
            (default <run>/generated/sweep-<time>), then the table and metric-vs-NFE plot
  compare PATH... [out=DIR metric=NAME]
                                      runs, sweeps or folders of them side by side:
                                      summary.csv / .md (parameters, status, steps,
                                      seconds, loss, final metrics) and summary.png (loss
                                      curves + the main metric; sampler runs: metric vs NFE)
  calibrate checkpoint=PATH [sampler=dpmpp_2m steps=5 guidance=null n=null seed=1000003
         out=null device=null rtol=1e-6 max_evals=null]
                                      fit the time grid that makes a sampler most accurate
                                      for this model at steps NFE (steps=[5,10] for several)
                                      and store it in model.pt (or out=); `sample` and
                                      Pipeline.generate then use it (grid=calibrated)
  likelihood checkpoint=PATH data=FILE.npy|reference [n=512 divergence=auto solver=rk45
         steps=50 rtol=1e-5 atol=1e-5 dequantize=null seed=0 batch_size=null device=null]
                                      exact log-likelihood (probability-flow ODE): nats
                                      and bits/dim (of the latents, for a latent model)
  check NAME [data.KEY=V model.KEY=V n=4 steps=2 sampler=ddim]
                                      run the domain contract test on an installed domain
                                      (a plugin author's check; no pytest needed)
  domains                             list installed domains (name, package, version, status)
  recipes                             list recipes with a one-line description
  demo [out=demo_out n=2000 steps=20 sampler=dpmpp_2m seed=0 schedule=linear]
                                      the core alone on an exact 2D mixture: noising +
                                      denoising figure (demo.png) and moment errors
"""


# ---- commands ------------------------------------------------------------------------------


def cmd_check(args: list[str]) -> int:
    """``omnidiff check NAME [data.KEY=V] [model.KEY=V] [n= steps= sampler=]``: the domain
    contract test of :func:`omnidiff.testing.check_domain`, without pytest."""
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
    if args:
        raise UsageError("`omnidiff recipes` takes no arguments")
    recipes = list_recipes()
    if not recipes:
        print("no recipes found")
        return 0
    width = max(len(n) for n in recipes)
    for name, info in sorted(recipes.items()):
        origin = "" if info.origin == "omnidiff" else f" (from {info.origin})"
        dom = f"[{info.domain}] " if info.domain else ""
        print(f"{name:<{width}}  {dom}{info.description}{origin}")
    return 0


def cmd_compare(args: list[str]) -> int:
    """``omnidiff compare PATH... [out=DIR] [metric=NAME]``: the table and figure of
    :mod:`omnidiff.compare` (written into a lone sweep folder by default)."""
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


COMMANDS = {"train": cmd_train, "distill": cmd_distill, "sample": cmd_sample,
            "compare": cmd_compare,
            "calibrate": cmd_calibrate, "likelihood": cmd_likelihood, "check": cmd_check,
            "domains": cmd_domains, "recipes": cmd_recipes, "demo": cmd_demo}


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        from omnidiff._version import __version__
        print(f"omnidiff {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"omnidiff: error: unknown command {cmd!r}; choose one of: "
              f"{', '.join(COMMANDS)} (omnidiff --help)", file=sys.stderr)
        return 2
    if any(a in ("-h", "--help") for a in rest):
        print(USAGE, end="")
        return 0
    try:
        return COMMANDS[cmd](rest)
    except KeyboardInterrupt:
        print("omnidiff: interrupted", file=sys.stderr)
        return 130
    except TrainingPreempted as exc:
        print(f"omnidiff: {one_line(exc)}", file=sys.stderr)
        return exc.exit_code  # 128 + the signal, as a shell reports a process it stopped
    except USER_ERRORS as exc:
        if os.environ.get("OMNIDIFF_DEBUG"):
            raise
        print(f"omnidiff: error: {one_line(exc)}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())

