"""The ``omnidiff`` command.

    omnidiff train recipe=NAME [key=value ...]     train; writes a run directory
    omnidiff train -m recipe=NAME a=1,2 b=x,y      a sweep: one run per job, a summary
    omnidiff compare PATH... [out= metric=]        one table + figure over runs and sweeps
    omnidiff distill teacher=PATH [method=cd|ct|reflow ...]   a few-step student of a model
    omnidiff prepare recipe=NAME out=DIR            the recipe's training data as shards
    omnidiff sample checkpoint=PATH [n= sampler= steps= guidance= seed= out= cond= ...]
    omnidiff calibrate checkpoint=PATH [sampler= steps= guidance= ...]   fit a few-step grid
    omnidiff likelihood checkpoint=PATH data=FILE.npy|reference [n= divergence= solver= ...]
    omnidiff export checkpoint=PATH out=FOLDER     a diffusers pipeline folder of the model
    omnidiff check NAME [data.KEY=V model.KEY=V]   the domain contract test, without pytest
    omnidiff domains                               installed domain plugins and their recipes
    omnidiff recipes [NAME]                        recipes with their first sentence
    omnidiff info checkpoint=PATH [plot=FILE.png]  what a model is; its schedule drawn

Mistakes (unknown recipe, domain, sampler or schedule, a bad override, a file that is not an
omnidiff checkpoint) end with one line on stderr naming the fix, and exit code 2. Set
``OMNIDIFF_DEBUG=1`` to see the traceback instead.
"""

from __future__ import annotations

import os
import sys
from typing import Callable, Sequence

from omnidiff._version import __version__
from omnidiff.errors import USER_ERRORS, TrainingPreempted, one_line

__all__ = ["main"]

USAGE = """usage: omnidiff <command> [key=value ...]

commands:
  train recipe=NAME [key=value ...]   train a model (Hydra overrides; see `omnidiff recipes`;
                                      threads=N, init=MODEL.pt to fine-tune, verbose=true)
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
                         (finished jobs skipped); summary.csv / .md / .png at the end;
                         launcher=local jobs=N runs N jobs at once as processes,
                         launcher=slurm submits them through submitit (launcher.partition=,
                         .gpus_per_node=, .timeout_min=, .mem_gb= ...: conf/launcher/)
        e.g. omnidiff train -m recipe=points2d optim.lr=1e-3,3e-3 loss=v,eps
             omnidiff train recipe=image_digits data.stream=SHARDS   (see `prepare`)
             torchrun --nnodes=2 ... -m omnidiff.cli train trainer.num_nodes=2 out=SHARED
  prepare recipe=NAME out=DIR [data.KEY=V ... overwrite=false]
                                      write the recipe's training data as shards (LitData's
                                      format; pip install 'omnidiff[scale]'); then train
                                      from them, or from a copy on object storage:
                                      omnidiff train recipe=NAME data.stream=DIR|s3://...
  distill teacher=PATH [method=cd|ct|reflow recipe=NAME key=value ...]
                                      a few-step student of a trained model: consistency
                                      distillation (cd), consistency training (ct; no
                                      teacher needed: recipe=NAME) or reflow (flow models);
                                      its model.pt samples in 1-4 steps (sampler=consistency)
        e.g. omnidiff distill teacher=runs/points2d/RUN/model.pt
             omnidiff distill method=ct recipe=distill_points2d
        --print-config  show the composed config and exit
  sample checkpoint=PATH [n=64 sampler=(the model's) steps=(its) guidance=null seed=0 cond=null
         out=DIR batch_size=null device=null threads=null metrics=false grid=null
         clip_x0=null eta=null noise=null]
                                      draw samples and write the domain's artifacts (the
                                      default sampler: dpmpp_2m at 20 steps, a distilled
                                      student's own: consistency at 2); grid=
                                      a name, calibrated (the default when model.pt holds
                                      one for this sampler and steps) or times [1,0.5,0.1];
                                      cond= labels (3, [1,2]) or a FILE: .npy/.pt holding
                                      conditions or data to compute them from (n follows
                                      from it), or a format the domain reads (.wav, .png);
                                      noise=FILE.npy: the starting noise (n, *event)
        -m  a sampler sweep of one checkpoint (sampler=ddim,dpmpp_2m steps=5,10,20
            guidance=1,2): each job's samples and metrics.json in its own folder under out=
            (default <run>/generated/sweep-<time>), then the table and metric-vs-NFE plot
  compare PATH... [out=DIR metric=NAME]
                                      runs, sweeps or folders of them side by side:
                                      summary.csv / .md (parameters, status, steps,
                                      seconds, loss, final metrics) and summary.png (loss
                                      curves + the main metric; sampler runs: metric vs NFE)
  calibrate checkpoint=PATH [sampler=dpmpp_2m steps=5 guidance=null n=null seed=1000003
         out=null device=null threads=null rtol=1e-6 max_evals=null]
                                      fit the time grid that makes a sampler most accurate
                                      for this model at steps NFE (steps=[5,10] for several)
                                      and store it in model.pt (or out=); `sample` and
                                      Pipeline.generate then use it (grid=calibrated);
                                      sampler=consistency on a distilled student: its
                                      times among its noise levels, by the main metric
  likelihood checkpoint=PATH data=FILE.npy|reference [n=512 divergence=auto solver=rk45
         steps=50 rtol=1e-5 atol=1e-5 dequantize=null seed=0 batch_size=null device=null
         threads=null]
                                      exact log-likelihood (probability-flow ODE): nats
                                      and bits/dim (of the latents, for a latent model)
  export checkpoint=PATH out=FOLDER [overwrite=false]
                                      write a model whose network is a diffusers class
                                      (model.name=diffusers) as a diffusers pipeline folder
                                      (DDIMPipeline.from_pretrained loads it)
  Every command that reads checkpoint= also reads a diffusers folder (save_pretrained's,
  or a pipeline's with unet/ and scheduler/): sample grid=diffusers uses the timesteps its
  scheduler would; calibrate keeps its grids in FOLDER.omnidiff.json beside it.
  info checkpoint=PATH [plot=FILE.png sampler= steps= grid=]
                                      what a model is: domain, shapes, condition and class
                                      names, schedule, prediction, sampler and its times,
                                      calibrated grids, training; plot= draws its schedule
                                      (alpha, sigma, log-SNR) with the sampler's times
  check NAME [data.KEY=V model.KEY=V n=4 steps=2 sampler=ddim]
                                      run the domain contract test on an installed domain
                                      (a plugin author's check; no pytest needed)
  domains                             list installed domains (name, package, version, status)
  recipes [NAME]                      list recipes with their first sentence; with NAME, one
                                      recipe whole: its description and settings
  demo [out=demo_out n=2000 steps=20 sampler=dpmpp_2m seed=0 schedule=linear]
                                      the core alone on an exact 2D mixture: noising +
                                      denoising figure (demo.png) and moment errors
"""


# ---- commands ------------------------------------------------------------------------------

# command -> the module of omnidiff.cli that runs it (cmd_<command>)
COMMANDS = {"train": "train", "distill": "train", "prepare": "train", "sample": "sample",
            "compare": "tools",
            "calibrate": "sample", "likelihood": "sample", "export": "sample", "check": "tools",
            "domains": "tools", "recipes": "tools", "demo": "tools", "info": "info"}


def command(name: str) -> Callable[[list[str]], int]:
    """The function behind command ``name``. Its module is imported here, on use, so that
    ``omnidiff --help``, a mistyped command or ``omnidiff recipes`` answer without first
    loading what training needs (Lightning and the Trainer take seconds to import)."""
    if COMMANDS[name] == "train":
        from omnidiff.cli import train as module
    elif COMMANDS[name] == "info":
        from omnidiff.cli import info as module
    elif COMMANDS[name] == "sample":
        from omnidiff.cli import sample as module
    else:
        from omnidiff.cli import tools as module
    return getattr(module, f"cmd_{name}")


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE, end="")
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
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
        return command(cmd)(rest)
    except KeyboardInterrupt:
        print("omnidiff: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `omnidiff recipes | head`: the reader stopped reading
        sys.stdout = open(os.devnull, "w")  # no second error when Python flushes at exit
        return 0
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

