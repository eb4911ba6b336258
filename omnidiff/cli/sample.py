"""``omnidiff sample`` (one request, or a sweep with ``-m``), ``omnidiff calibrate`` and
``omnidiff likelihood``: everything that reads a trained model from the command line."""

from __future__ import annotations

import shlex
import time
from datetime import datetime
from pathlib import Path
from typing import Any

from omnidiff._util import nonfinite_rows
from omnidiff.cli.args import key_values, number, out_folder
from omnidiff.errors import UsageError
from omnidiff.inference.export import export_diffusers
from omnidiff.inference.pipeline import CALIBRATION_SEED, load
from omnidiff.inference.sample_files import read_mask, read_samples
from omnidiff.io import atomic_write_json
from omnidiff.methods.diffusers.folder import is_diffusers_folder, sidecar_path
from omnidiff.model_file import grids_destination, outputs_home, write_grids
from omnidiff.tasks.sweeps import (
    MULTIRUN_FLAGS,
    Job,
    continuing,
    each_job,
    new_folder,
    parse_sweep,
    report,
    run_sweep,
    sampler_choices,
    sweep_folder,
)

__all__ = ["cmd_sample", "cmd_calibrate", "cmd_likelihood", "cmd_export", "sample_sweep"]


def sample_sweep(args: list[str]) -> int:
    """``omnidiff sample checkpoint=... -m sampler=ddim,dpmpp_2m steps=5,10,20``: every
    combination's artifacts and ``metrics.json`` in its own folder, the model read once; every
    job's options are checked before any sampling."""
    sweep = parse_sweep(args, sampler_choices, verbatim=("checkpoint", "out", "resume",
                                                          "cond", "known", "mask", "init",
                                                          "noise",
                                                          "guide", "classifier", *PROMPT_KEYS))
    shared = [o for o in sweep.fixed if o.partition("=")[0] not in ("resume", "overwrite")]
    options = each_job(sweep, lambda job: {**_sample_options(shared + job.overrides),
                                           "metrics": True})
    first = options[sweep.jobs[0].name]
    ckpt = Path(str(first["checkpoint"]))
    folder, resuming = sweep_folder(sweep, new_folder(outputs_home(ckpt) / "generated",
                                                      "sweep-"))
    folder = folder.absolute()
    pipe = load(ckpt, device=first.get("device"), threads=first.get("threads"))
    print(f"omnidiff sweep: {len(sweep.jobs)} sampling job(s) over "
          f"{', '.join(sweep.keys) or 'nothing'} in {folder}", flush=True)
    again = "omnidiff sample -m " + shlex.join(continuing(args, folder))

    def run(job: Job, job_dir: Path) -> None:
        _sample_into(pipe, options[job.name], job_dir)

    def finished(job: Job, job_dir: Path) -> bool:
        return resuming and (job_dir / "metrics.json").is_file()

    jobs = run_sweep(folder, sweep, "sample", run, finished, again)
    return report(folder, jobs, again)


PROMPT_KEYS = ("prompt", "prompts", "negative_prompt", "compose")  # text, kept as written
CONTROL_KEYS = ("known", "mask", "method", "particles", "init", "strength", "guide",
                "classifier", "label", "classifier_scale")
SAMPLE_KEYS = {"checkpoint", "n", "sampler", "steps", "guidance", "seed", "out", "cond",
               "compose_weight", *CONTROL_KEYS,
               "batch_size", "device", "threads", "metrics", "n_ref", "prefix", "grid",
               "clip_x0", "eta", "noise",
               *PROMPT_KEYS}
PER_PROMPT = 8  # samples per prompt when n is not given


CALIBRATE_KEYS = {"checkpoint", "sampler", "steps", "guidance", "n", "seed", "out", "device",
                  "threads", "rtol", "max_evals"}


LIKELIHOOD_KEYS = {"checkpoint", "data", "n", "divergence", "solver", "steps", "rtol", "atol",
                   "dequantize", "seed", "batch_size", "device", "threads"}


def cmd_sample(args: list[str]) -> int:
    if any(a in MULTIRUN_FLAGS for a in args):
        return sample_sweep([a for a in args if a not in MULTIRUN_FLAGS])
    opts = _sample_options(args)
    ckpt = Path(str(opts["checkpoint"]))
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    out = out_folder(opts.get("out"), outputs_home(ckpt) / "generated" / stamp)
    _sample_into(load(ckpt, device=opts.get("device"), threads=opts.get("threads")), opts, out)
    return 0


def _sample_options(args: list[str]) -> dict[str, Any]:
    """``omnidiff sample``'s options, checked (keys, numbers, a checkpoint) before the model is
    read."""
    opts = key_values(args, SAMPLE_KEYS, "sample", text=PROMPT_KEYS)
    if "checkpoint" not in opts or opts["checkpoint"] in (None, ""):
        raise UsageError("sample needs checkpoint=PATH (the model.pt or .ckpt of a run)")
    _sample_request(opts)
    number(opts, "n_ref", int, 2048, 1)
    return opts


def _sample_request(opts: dict[str, Any]) -> dict[str, Any]:
    """``Pipeline.generate``'s keyword arguments from ``omnidiff sample``'s options (numbers
    checked, one line naming a bad one)."""
    seed = number(opts, "seed", int, 0, 0)
    if "seed" in opts and opts["seed"] is None:
        seed = None  # seed=null: a random seed
    request = dict(n=number(opts, "n", int, None, 1),
                   sampler=opts.get("sampler") or None,  # None: the model's own default
                   steps=number(opts, "steps", int, None, 1), seed=seed,
                   guidance=number(opts, "guidance", float, None, 0),
                   batch_size=number(opts, "batch_size", int, None, 1),
                   **{k: opts[k] for k in ("grid", "clip_x0") if k in opts})
    if opts.get("eta") is not None:
        request["eta"] = opts["eta"]
    return request


def _prompt_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``prompt=TEXT`` or ``prompts=FILE`` (one prompt per line), ``negative_prompt=`` and
    ``compose=TEXT compose_weight=W`` (composed guidance towards one more prompt), as
    ``Pipeline.generate``'s keywords; n is then the number of samples per prompt."""
    if opts.get("prompt") is not None and opts.get("prompts") is not None:
        raise UsageError("pass prompt=TEXT or prompts=FILE, not both")
    out: dict[str, Any] = {}
    if opts.get("prompts") is not None:
        path = Path(str(opts["prompts"])).expanduser()
        if not path.is_file():
            raise UsageError(f"prompts={str(path)!r} is not a file; pass a text file with one "
                             "prompt per line")
        out["prompt"] = [line.strip() for line in path.read_text().splitlines() if line.strip()]
        if not out["prompt"]:
            raise UsageError(f"prompts={str(path)!r} holds no prompt; write one per line")
    elif opts.get("prompt") is not None:
        out["prompt"] = str(opts["prompt"])
    if opts.get("negative_prompt") is not None:
        out["negative_prompt"] = str(opts["negative_prompt"])
    if (opts.get("compose") is None) != (opts.get("compose_weight") is None):
        raise UsageError("compose=TEXT (a part of the prompt to push towards) and "
                         "compose_weight=W go together: pass both")
    if opts.get("compose") is not None:
        out["compose"] = [(str(opts["compose"]), number(opts, "compose_weight", float, None, 0))]
    return out


def _control_options(pipe: Any, opts: dict[str, Any]) -> dict[str, Any]:
    """``known=FILE mask=... [method= particles=]`` (imputation), ``init=FILE strength=``
    (editing) and ``guide=MODEL.pt`` (autoguidance, with ``guidance=``) as
    ``Pipeline.generate``'s keywords, the files read (:mod:`omnidiff.inference.sample_files`)."""
    out: dict[str, Any] = {}
    if (opts.get("known") is None) != (opts.get("mask") is None):
        raise UsageError("known=FILE (the sample to complete) and mask=... (what is kept: a "
                         "mask PNG, a gap in seconds, the given frames, or a .npy) go together")
    if opts.get("known") is not None:
        out["known"] = read_samples(pipe, opts["known"], "known")
        out["mask"] = read_mask(pipe, opts["mask"])
        method = opts.get("method")
        particles = number(opts, "particles", int, None, 1)
        if particles is not None:
            if method not in (None, "tds"):
                raise UsageError("particles= sets the tds method's particles; drop it or "
                                 "use method=tds")
            method = {"name": "tds", "particles": particles}
        if method is not None:
            out["method"] = method
    elif opts.get("method") is not None or opts.get("particles") is not None:
        raise UsageError("method= / particles= choose how known=FILE is completed: pass "
                         "known= and mask= too")
    if opts.get("init") is not None:
        out["init"] = read_samples(pipe, opts["init"], "init")
        out["strength"] = number(opts, "strength", float, 0.6, 0)
    elif opts.get("strength") is not None:
        raise UsageError("strength= sets how far init=FILE is noised: pass init= too")
    if opts.get("noise") is not None:  # explicit starting noise (n, *event)
        out["noise"] = read_samples(pipe, opts["noise"], "noise").float()
    if opts.get("guide") is not None:
        out["guide_model"] = str(opts["guide"])
    if opts.get("classifier") is not None:
        out.update(classifier=str(opts["classifier"]), label=opts.get("label"),
                   classifier_scale=number(opts, "classifier_scale", float, 1.0, 0))
    elif opts.get("label") is not None:
        raise UsageError("label= is the class a classifier guides towards: pass "
                         "classifier=MODEL.pt too (cond= conditions a conditional model)")
    return out


def _sample_into(pipe: Any, opts: dict[str, Any], out: Path) -> dict[str, Any]:
    """Draw samples with ``omnidiff sample``'s options, write the domain's artifacts to
    ``out`` and, with ``metrics=true``, ``out/metrics.json``; returns what it recorded."""
    request = _sample_request(opts) | _prompt_options(opts) | _control_options(pipe, opts)
    cond = _cond_option(pipe, opts.get("cond"))
    if request["n"] is None:  # a list of labels, a file of conditions: they say how many
        given = next((request[k] for k in ("known", "init", "noise") if k in request), None)
        batch = given is not None and given.dim() == len(pipe.sample_shape) + 1
        request["n"] = (PER_PROMPT if "prompt" in request else given.shape[0] if batch
                        else PER_PROMPT if given is not None
                        else 64 if cond is None or isinstance(cond, int) else None)
    t0 = time.perf_counter()
    x = pipe.generate(cond=cond, progress=True, **request)
    seconds = time.perf_counter() - t0
    _check_finite_samples(x)
    files = pipe.save(x, out, prefix=str(opts.get("prefix") or "samples"))
    st = pipe.last_stats
    how = (f", imputed by {st['method']}" if "method" in st else "") + (
        f", edited at strength {st['strength']:g}" if "strength" in st else "")
    print(f"sampled with {pipe.last_sampler} on the {pipe.last_grid} grid{how} "
          f"({st.get('nfe')} NFE, {st.get('network_evals')} network passes per sample, "
          f"{seconds:.2f} s)")
    print(f"wrote {len(files)} file(s) to {out}:")
    for f in files:
        print(f"  {f}")
    record = {"checkpoint": str(opts.get("checkpoint")), "domain": pipe.domain_name,
              "n": int(x.shape[0]), "sampler": pipe.last_sampler, "steps": request["steps"],
              "grid": pipe.last_grid, "guidance": request["guidance"], "seed": request["seed"],
              **pipe.last_stats, "sample_seconds": round(seconds, 3)}
    if opts.get("metrics"):
        record["metrics"] = pipe.metrics(x, n_ref=number(opts, "n_ref", int, 2048, 1))
        atomic_write_json(record, out / "metrics.json")
        print("metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in record["metrics"].items()))
    return record


def _check_finite_samples(x: Any) -> None:
    """Samples that are NaN / inf are not written (they would fill files with nothing)."""
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
    if text in pipe.class_names:
        return text
    path = Path(text).expanduser()
    if path.suffix or path.exists():
        return pipe.read_condition(path)
    raise UsageError(f"cond={text!r} is neither class labels (cond=3, cond=[1,2]"
                     + (f", a name: {', '.join(pipe.class_names)}" if pipe.class_names else "")
                     + ") nor a file (cond=FILE.npy / .pt, or a format the domain reads); "
                     f"this model takes {pipe.cond_spec.describe()}")


def cmd_calibrate(args: list[str]) -> int:
    opts = key_values(args, CALIBRATE_KEYS, "calibrate")
    if not opts.get("checkpoint"):
        raise UsageError("calibrate needs checkpoint=PATH (the model.pt of a run)")
    ckpt = Path(str(opts["checkpoint"]))
    steps = opts.get("steps", 5)
    steps = steps if isinstance(steps, list) else [steps]
    if not steps or any(isinstance(k, bool) or not isinstance(k, int) or k < 2 for k in steps):
        raise UsageError(f"steps={opts.get('steps')!r}: give an integer >= 2 or a list of them "
                         "(steps=5, steps=[5,10])")
    sampler = str(opts.get("sampler") or "dpmpp_2m")
    n, seed = number(opts, "n", int, None, 2), number(opts, "seed", int, CALIBRATION_SEED, 0)
    tuning = {k: v for k, v in (("rtol", number(opts, "rtol", float, None, 1e-12)),
                                ("max_evals", number(opts, "max_evals", int, None, 1)))
              if v is not None}
    pipe = load(ckpt, device=opts.get("device"), threads=opts.get("threads"))
    dest = grids_destination(ckpt, opts.get("out"))  # a .ckpt without out= fails before work
    for k in steps:
        st: dict = {}
        grid = pipe.calibrate(sampler, k, n=n, guidance=opts.get("guidance"), seed=seed,
                              stats=st, **tuning)
        print(f"{sampler} at {k} steps: t = [{', '.join(f'{t:.4f}' for t in grid.tolist())}]")
        if "metric" in st:  # a consistency student's grid, chosen among its noise levels
            print(f"  {st['metric']} of {st['n']} samples: {st['start_value']:.4g} "
                  f"({st['start']} grid) -> {st['value']:.4g} ({st['seconds']:.0f} s)")
            continue
        print(f"  median error vs the tight ODE solution on {st['n']} calibration samples: "
              f"{st['start_error']['median']:.4g} ({st['start']} grid) -> "
              f"{st['error']['median']:.4g}  ({st['runs']} sampler runs, {st['seconds']:.0f} s)")
    write_grids(ckpt, pipe.info["grids"], dest)
    uses = ckpt if is_diffusers_folder(ckpt) and dest == sidecar_path(ckpt) else dest
    print(f"wrote {len(steps)} grid(s) into {dest}; `omnidiff sample checkpoint={uses} "
          f"sampler={sampler} steps={steps[0]}` uses it")
    return 0


EXPORT_KEYS = {"checkpoint", "out", "overwrite", "format"}


def cmd_export(args: list[str]) -> int:
    """``omnidiff export checkpoint=model.pt out=FOLDER``: a diffusers pipeline folder."""
    opts = key_values(args, EXPORT_KEYS, "export")
    if not opts.get("checkpoint") or not opts.get("out"):
        raise UsageError("export needs checkpoint=PATH (a model.pt) and out=FOLDER (the "
                         "diffusers folder to write)")
    if str(opts.get("format") or "diffusers") != "diffusers":
        raise UsageError(f"format={opts['format']!r}: omnidiff exports format=diffusers")
    pipe = load(Path(str(opts["checkpoint"])), device="cpu")
    out = export_diffusers(pipe, str(opts["out"]), overwrite=bool(opts.get("overwrite")))
    print(f"wrote {out} (diffusers DDIMPipeline folder); load it with "
          f"diffusers.DDIMPipeline.from_pretrained({str(out)!r}) or omnidiff.load")
    return 0


def cmd_likelihood(args: list[str]) -> int:
    import numpy as np
    import torch

    opts = key_values(args, LIKELIHOOD_KEYS, "likelihood")
    if not opts.get("checkpoint"):
        raise UsageError("likelihood needs checkpoint=PATH (the model.pt or .ckpt of a run)")
    data = opts.get("data")
    if not data:
        raise UsageError("likelihood needs data=FILE.npy (n, *event) or data=reference "
                         "(the model's held-out data)")
    n = number(opts, "n", int, 512, 1)
    numbers = dict(steps=number(opts, "steps", int, 50, 1),
                   rtol=number(opts, "rtol", float, 1e-5, 1e-12),
                   atol=number(opts, "atol", float, 1e-5, 1e-12),
                   dequantize=number(opts, "dequantize", int, None, 2),
                   seed=number(opts, "seed", int, 0, 0),
                   batch_size=number(opts, "batch_size", int, None, 1))
    path = Path(str(data))
    if str(data) != "reference" and (not path.is_file() or path.suffix != ".npy"):
        raise UsageError(f"data={data!r} is not a .npy file; pass an (n, *event) array "
                         "saved with numpy.save, or data=reference")
    pipe = load(Path(str(opts["checkpoint"])), device=opts.get("device"),
                threads=opts.get("threads"))
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
