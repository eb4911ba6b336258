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
from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from .errors import TrainingPreempted, UsageError, UserError, one_line

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

SAMPLE_KEYS = {"checkpoint", "n", "sampler", "steps", "guidance", "seed", "out", "cond",
               "batch_size", "device", "metrics", "n_ref", "prefix", "grid", "clip_x0", "eta"}


CALIBRATE_KEYS = {"checkpoint", "sampler", "steps", "guidance", "n", "seed", "out", "device",
                  "rtol", "max_evals"}

LIKELIHOOD_KEYS = {"checkpoint", "data", "n", "divergence", "solver", "steps", "rtol", "atol",
                   "dequantize", "seed", "batch_size", "device"}


# mistakes the user fixes: omnidiff's own, and files that are missing or cannot be read
USER_ERRORS = (UserError, FileNotFoundError, NotADirectoryError, IsADirectoryError,
               PermissionError)


def _parse_value(text: str) -> Any:
    import yaml
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _kv(args: Sequence[str], allowed: set[str], command: str,
        prefixes: tuple[str, ...] = ()) -> dict[str, Any]:
    """``key=value`` arguments (values parsed as YAML); keys from ``allowed`` or starting with
    one of ``prefixes``."""
    keys = ", ".join(sorted(allowed) + [f"{p}KEY" for p in prefixes])
    out = {}
    for a in args:
        if "=" not in a:
            raise UsageError(f"bad argument {a!r} for `omnidiff {command}`; write key=value "
                             f"(keys: {keys})")
        k, v = a.split("=", 1)
        if k not in allowed and not (prefixes and k.startswith(prefixes)):
            raise UsageError(f"unknown option {k!r} for `omnidiff {command}`; choose from: "
                             f"{keys}")
        out[k] = _parse_value(v)
    return out


# ---- commands ------------------------------------------------------------------------------

def _compose_run(args: list[str], compose: Any, example: str) -> Any:
    """The composed config of a training command, or None after ``--print-config`` printed
    it; a flag other than that is a one-line usage error."""
    from omegaconf import OmegaConf

    print_config = "--print-config" in args
    args = [a for a in args if a != "--print-config"]
    flags = [a for a in args if a.startswith("-")]
    if flags:
        raise UsageError(f"unknown flag {flags[0]!r}; overrides are key=value (e.g. {example})")
    cfg = compose(args)
    if print_config:
        print(OmegaConf.to_yaml(cfg), end="")
        return None
    return cfg


def _train_and_report(cfg: Any) -> int:
    from .training import train

    _report_run(train(cfg))
    return 0


def cmd_train(args: list[str]) -> int:
    from .config import compose
    from .sweeps import MULTIRUN_FLAGS, train_sweep
    from .training import train

    if any(a in MULTIRUN_FLAGS for a in args):
        rest = [a for a in args if a not in MULTIRUN_FLAGS]
        flags = [a for a in rest if a.startswith("-")]
        if flags:
            raise UsageError(f"{flags[0]!r} does not go with -m; a sweep takes key=value "
                             "overrides (e.g. optim.lr=1e-3,3e-3 loss=v,eps)")
        return train_sweep(rest, train, _report_run)
    cfg = _compose_run(args, lambda a: compose(overrides=a), "trainer.max_steps=100")
    if cfg is None:
        return 0
    if cfg.get("stage") == "distill":  # the teacher's settings are applied by distill only
        what, recipe = ((f"recipe {cfg.recipe}", f" recipe={cfg.recipe}") if cfg.get("recipe")
                        else ("stage=distill", ""))
        raise UsageError(f"{what} trains a few-step student: run `omnidiff distill "
                         f"teacher=<model.pt>{recipe}` (method=ct needs no teacher)")
    if not cfg.get("recipe") and not any(a.startswith("domain=") for a in args):
        print("omnidiff: no recipe given; training the default domain "
              f"{cfg.domain!r} (see `omnidiff recipes`)", file=sys.stderr)
    return _train_and_report(cfg)


def cmd_distill(args: list[str]) -> int:
    """``omnidiff distill teacher=PATH [method=cd|ct|reflow] [recipe=NAME] [overrides]``: a
    few-step student (:mod:`omnidiff.distillation`), trained like any run."""
    from .distillation import distill_config

    cfg = _compose_run(args, distill_config, "teacher=runs/points2d/RUN/model.pt method=cd")
    return 0 if cfg is None else _train_and_report(cfg)


def _report_run(run_dir: Path) -> None:
    import json
    summary = {}
    if (run_dir / "metrics.json").exists():
        summary = json.loads((run_dir / "metrics.json").read_text())
    final = {k: v for k, v in (summary.get("final") or {}).items()
             if isinstance(v, (int, float))}
    print(f"run: {run_dir}")
    if "loss_first" in summary:
        print(f"loss: {summary['loss_first']:.4f} -> {summary['loss_last']:.4f} "
              f"in {summary.get('global_step')} steps ({summary.get('train_seconds')} s)")
    if final:
        print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items() if k != "step"))
    model = run_dir / "model.pt"
    if model.exists() and summary.get("stage") == "autoencoder":
        print(f"autoencoder: {model}   (omnidiff train recipe=... autoencoder={model} trains a "
              "latent diffusion model on it)")
    elif model.exists():
        print(f"model: {model}   (omnidiff sample checkpoint={model})")


def _out_folder(value: Any, default: Path) -> Path:
    """``out=``: a folder to write into (created); an existing file is a mistake."""
    out = Path(str(value)).expanduser() if value not in (None, "") else default
    if out.exists() and not out.is_dir():
        raise UsageError(f"out={str(out)!r} is a file; pass a folder to write the samples into")
    return out


def cmd_sample(args: list[str]) -> int:
    from .pipeline import load
    from .sweeps import MULTIRUN_FLAGS, sample_sweep

    if any(a in MULTIRUN_FLAGS for a in args):
        return sample_sweep([a for a in args if a not in MULTIRUN_FLAGS], _sample_options,
                            _sample_into)
    opts = _sample_options(args)
    ckpt = Path(str(opts["checkpoint"]))
    base = ckpt.parent if ckpt.is_file() else ckpt
    out = _out_folder(opts.get("out"),
                      base / "generated" / datetime.now().strftime("%Y%m%d-%H%M%S"))
    _sample_into(load(ckpt, device=opts.get("device")), opts, out)
    return 0


def _sample_options(args: list[str]) -> dict[str, Any]:
    """``omnidiff sample``'s options, checked (keys, numbers, a checkpoint) before the model is
    read."""
    opts = _kv(args, SAMPLE_KEYS, "sample")
    if "checkpoint" not in opts or opts["checkpoint"] in (None, ""):
        raise UsageError("sample needs checkpoint=PATH (the model.pt or .ckpt of a run)")
    _sample_request(opts)
    _number(opts, "n_ref", int, 2048, 1)
    return opts


def _sample_request(opts: dict[str, Any]) -> dict[str, Any]:
    """``Pipeline.generate``'s keyword arguments from ``omnidiff sample``'s options (numbers
    checked, one line naming a bad one)."""
    seed = _number(opts, "seed", int, 0, 0)
    if "seed" in opts and opts["seed"] is None:
        seed = None  # seed=null: a random seed
    request = dict(n=_number(opts, "n", int, None, 1),
                   sampler=opts.get("sampler") or None,  # None: the model's own default
                   steps=_number(opts, "steps", int, None, 1), seed=seed,
                   guidance=_number(opts, "guidance", float, None, 0),
                   batch_size=_number(opts, "batch_size", int, None, 1),
                   **{k: opts[k] for k in ("grid", "clip_x0") if k in opts})
    if opts.get("eta") is not None:
        request["eta"] = opts["eta"]
    return request


def _sample_into(pipe: Any, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    """Draw samples with ``omnidiff sample``'s options, write the domain's artifacts to
    ``out`` and, with ``metrics=true``, ``out/metrics.json``; returns what it recorded."""
    import time

    from .io import atomic_write_json

    request = _sample_request(opts)
    cond = _cond_option(pipe, opts.get("cond"))
    if request["n"] is None:  # a list of labels, a file of conditions: they say how many
        request["n"] = 64 if cond is None or isinstance(cond, int) else None
    t0 = time.perf_counter()
    x = pipe.generate(cond=cond, **request)
    seconds = time.perf_counter() - t0
    _check_finite_samples(x)
    files = pipe.save(x, out, prefix=str(opts.get("prefix") or "samples"))
    print(f"sampled with {pipe.last_sampler} on the {pipe.last_grid} grid "
          f"({pipe.last_stats.get('nfe')} NFE, {seconds:.2f} s)")
    print(f"wrote {len(files)} file(s) to {out}:")
    for f in files:
        print(f"  {f}")
    record = {"checkpoint": str(opts.get("checkpoint")), "domain": pipe.domain_name,
              "n": int(x.shape[0]), "sampler": pipe.last_sampler, "steps": request["steps"],
              "grid": pipe.last_grid, "guidance": request["guidance"], "seed": request["seed"],
              **pipe.last_stats, "sample_seconds": round(seconds, 3)}
    if opts.get("metrics"):
        record["metrics"] = pipe.metrics(x, n_ref=_number(opts, "n_ref", int, 2048, 1))
        atomic_write_json(record, out / "metrics.json")
        print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items()))
    return record


def _check_finite_samples(x: Any) -> None:
    """Samples that are NaN / inf are not written (they would fill files with nothing)."""
    from ._util import nonfinite_rows

    rows = nonfinite_rows(x)
    if rows:
        raise UsageError(f"{rows} of {x.shape[0]} samples hold NaN or inf; nothing was written. "
                         "Lower guidance=, set clip_x0=, or try another sampler=")


def _cond_option(pipe: Any, value: Any) -> Any:
    """``cond=``: a label, a list of labels, or a file the domain turns into its condition
    (``.npy`` / ``.pt`` always; ``.wav`` / ``.png`` ... where the domain reads them)."""
    if value is None or isinstance(value, (int, list)) and not isinstance(value, bool):
        return value
    text = str(value)
    path = Path(text).expanduser()
    if path.suffix or path.exists():
        return pipe.read_condition(path)
    raise UsageError(f"cond={text!r} is neither class labels (cond=3, cond=[1,2]) nor a file "
                     f"(cond=FILE.npy / .pt, or a format the domain reads); this model takes "
                     f"{pipe.cond_spec.describe()}")


def _number(opts: dict[str, Any], key: str, kind: type, default: Any, low: float) -> Any:
    """``opts[key]`` as an ``int`` or ``float`` of at least ``low`` (``default`` when absent or
    null); anything else is a one-line usage error naming the key."""
    from ._util import INT64_MAX, number_problem

    value = opts.get(key)
    if value is None:
        return default
    problem = number_problem(key, value, kind, low, INT64_MAX)
    if problem:
        raise UsageError(problem)
    return kind(value)


def cmd_calibrate(args: list[str]) -> int:
    from .checkpoint import grids_destination, write_grids
    from .pipeline import CALIBRATION_SEED, load

    opts = _kv(args, CALIBRATE_KEYS, "calibrate")
    if not opts.get("checkpoint"):
        raise UsageError("calibrate needs checkpoint=PATH (the model.pt of a run)")
    ckpt = Path(str(opts["checkpoint"]))
    steps = opts.get("steps", 5)
    steps = steps if isinstance(steps, list) else [steps]
    if not steps or any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in steps):
        raise UsageError(f"steps={opts.get('steps')!r}: give an integer >= 2 or a list of them "
                         "(steps=5, steps=[5,10])")
    sampler = str(opts.get("sampler") or "dpmpp_2m")
    n, seed = _number(opts, "n", int, None, 2), _number(opts, "seed", int, CALIBRATION_SEED, 0)
    tuning = {k: v for k, v in (("rtol", _number(opts, "rtol", float, None, 1e-12)),
                                ("max_evals", _number(opts, "max_evals", int, None, 1)))
              if v is not None}
    pipe = load(ckpt, device=opts.get("device"))
    dest = grids_destination(ckpt, opts.get("out"))  # a .ckpt without out= fails before work
    for k in steps:
        st: dict = {}
        grid = pipe.calibrate(sampler, k, n=n, guidance=opts.get("guidance"), seed=seed,
                              stats=st, **tuning)
        print(f"{sampler} at {k} steps: t = [{', '.join(f'{t:.4f}' for t in grid.tolist())}]")
        print(f"  median error vs the tight ODE solution on {st['n']} calibration samples: "
              f"{st['start_error']['median']:.4g} ({st['start']} grid) -> "
              f"{st['error']['median']:.4g}  ({st['runs']} sampler runs, {st['seconds']:.0f} s)")
    write_grids(ckpt, pipe.info["grids"], dest)
    print(f"wrote {len(steps)} grid(s) into {dest}; `omnidiff sample checkpoint={dest} "
          f"sampler={sampler} steps={steps[0]}` uses it")
    return 0


def cmd_likelihood(args: list[str]) -> int:
    import numpy as np
    import torch

    from .pipeline import load

    opts = _kv(args, LIKELIHOOD_KEYS, "likelihood")
    if not opts.get("checkpoint"):
        raise UsageError("likelihood needs checkpoint=PATH (the model.pt or .ckpt of a run)")
    data = opts.get("data")
    if not data:
        raise UsageError("likelihood needs data=FILE.npy (n, *event) or data=reference "
                         "(the model's held-out data)")
    n = _number(opts, "n", int, 512, 1)
    numbers = dict(steps=_number(opts, "steps", int, 50, 1),
                   rtol=_number(opts, "rtol", float, 1e-5, 1e-12),
                   atol=_number(opts, "atol", float, 1e-5, 1e-12),
                   dequantize=_number(opts, "dequantize", int, None, 2),
                   seed=_number(opts, "seed", int, 0, 0),
                   batch_size=_number(opts, "batch_size", int, None, 1))
    path = Path(str(data))
    if str(data) != "reference" and (not path.is_file() or path.suffix != ".npy"):
        raise UsageError(f"data={data!r} is not a .npy file; pass an (n, *event) array "
                         "saved with numpy.save, or data=reference")
    pipe = load(Path(str(opts["checkpoint"])), device=opts.get("device"))
    if str(data) == "reference":
        x, _ = pipe.reference(n)
    else:
        x = torch.as_tensor(np.load(path, allow_pickle=False))[:n]
        if not x.is_floating_point():
            x = x.float()
    r = pipe.log_likelihood(x, divergence=str(opts.get("divergence") or "auto"),
                            solver=str(opts.get("solver") or "rk45"), **numbers)
    se = float(r.nats.std()) / max(1, r.nats.numel()) ** 0.5
    print(f"n={r.nats.numel()}  log-likelihood: {float(r.nats.mean()):.4f} +- {se:.4f} nats "
          f"per sample, {float(r.bits_per_dim.mean()):.4f} bits/dim  (nfe {r.nfe})"
          + ("  [latent space: the density of the autoencoder's latents]"
             if r.space == "latent" else ""))
    return 0


def cmd_check(args: list[str]) -> int:
    """``omnidiff check NAME [data.KEY=V] [model.KEY=V] [n= steps= sampler=]``: the domain
    contract test of :func:`omnidiff.testing.check_domain`, without pytest."""
    import tempfile
    import time

    from .registry import get_domain
    from .testing import DomainContractError, check_domain

    if not args or "=" in args[0]:
        raise UsageError("check needs a domain name: omnidiff check NAME [data.KEY=VALUE ...] "
                         "[model.KEY=VALUE ...] (see `omnidiff domains`)")
    name, opts = args[0], _kv(args[1:], {"n", "steps", "sampler"}, "check",
                              prefixes=("data.", "model."))
    data = {k[5:]: v for k, v in opts.items() if k.startswith("data.")}
    model = {k[6:]: v for k, v in opts.items() if k.startswith("model.")}
    domain = get_domain(name)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            report = check_domain(domain, data=data, model=model, out_dir=tmp,
                                  n=_number(opts, "n", int, 4, 1),
                                  steps=_number(opts, "steps", int, 2, 1),
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
    from .config import domain_config_problem, list_recipes
    from .registry import describe, get_domain

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
    from .config import list_recipes

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
    from .compare import write_comparison
    from .sweeps import read_manifest

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
        out = _out_folder(opts["out"], Path("."))
    elif len(paths) == 1 and read_manifest(paths[0]) is not None:
        out = paths[0]
    else:
        out = Path("comparisons") / datetime.now().strftime("%Y%m%d-%H%M%S")
    text, files = write_comparison(paths, out, metric=opts.get("metric") or None)
    print(text, end="")
    print(f"wrote {', '.join(str(f) for f in files)}")
    return 0


def cmd_demo(args: list[str]) -> int:
    from .demo import cmd_demo as run

    return run(args)


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
        from . import __version__
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
