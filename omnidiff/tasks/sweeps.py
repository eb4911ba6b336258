"""Sweeps: one command, many runs, one after another.

``omnidiff train -m recipe=points2d optim.lr=1e-3,3e-3 loss=v,eps`` reads Hydra's sweep
syntax (``a=1,2``, ``choice(1,2)``, ``range(100,400,100)``, and ``glob(*)`` / ``glob(*,
exclude=edm)`` over a config group such as ``schedule``) and runs the cartesian product of
the values as jobs, as Hydra's basic sweeper does, each in its own run folder::

    <sweep>/sweep.json               the jobs: overrides, status, seconds, error (atomic)
    <sweep>/<loss=v,optim.lr=0.001>/ one run folder per job, named by its swept overrides
    <sweep>/summary.csv, .md, .png   the comparison of the jobs (:mod:`omnidiff.tasks.compare`)

``omnidiff sample checkpoint=... -m sampler=ddim,dpmpp_2m steps=5,10,20`` does the same for
sampling options, without retraining.

Why not Hydra's own ``--multirun``: it needs ``@hydra.main``, which would give up the Compose
API that finds the plugins' configs and turns mistakes into one line, and its basic sweeper
stops at the first failed job. Here every job is composed and checked before the first one
starts; a job that fails at run time is recorded (``<job>/error.log`` holds the traceback) and
the sweep goes on; Ctrl-C or SIGTERM stops the sweep after saving the job in flight, and the
same command with ``resume=auto`` continues it: finished jobs are skipped, a stopped one
resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
import sys
import time
import traceback
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from omnidiff.errors import RunFolderError, TrainingPreempted, UsageError, UserError, one_line
from omnidiff.io import atomic_write_json, atomic_write_text, read_json
from omnidiff.plugins.registry import available
from omnidiff.samplers import SAMPLERS
from omnidiff.tasks.compare import write_comparison
from omnidiff.tasks.config import group_options, list_recipes
from omnidiff.training.run_folder import RUN_DIR_ENV, SWEEP_FILE, RunLock, read_manifest

__all__ = ["Sweep", "Job", "SweepLog", "MULTIRUN_FLAGS", "SWEEP_FILE", "parse_sweep", "job_names",
           "sweep_folder", "read_manifest", "run_sweep", "report"]

MULTIRUN_FLAGS = ("-m", "--multirun")

SWEEPS_DIR = Path("runs") / "sweeps"  # where `omnidiff train -m` puts a sweep without out=
_NAME_LIMIT = 96  # a job folder's name beyond this is cut and given a hash


@dataclass
class Job:
    """One job of a sweep: its swept overrides (``key=value``) and its folder's name."""

    overrides: list[str]
    name: str
    # pending | running | submitted (to SLURM) | done | finished earlier (skipped) | failed
    # | stopped
    status: str = "pending"
    seconds: float | None = None
    error: str | None = None
    slurm_id: str | None = None  # launcher=slurm: its job id, for squeue / sacct


@dataclass
class Sweep:
    """A parsed sweep: the overrides every job shares, the swept keys, and the jobs."""

    fixed: list[str]
    keys: list[str]
    jobs: list[Job] = field(default_factory=list)

    def fixed_value(self, key: str) -> str | None:
        """The value of a shared override ``key=value`` (None when absent)."""
        for o in self.fixed:
            k, _, v = o.partition("=")
            if k.lstrip("+~") == key:
                return v
        return None

    @property
    def overwrite(self) -> bool:
        """``overwrite=true`` among the shared overrides: rerun finished jobs."""
        return str(self.fixed_value("overwrite")).lower() == "true"


class _Choices:
    """What ``glob(...)`` chooses from, in the shape Hydra's override parser asks a config
    loader for (``get_group_options``)."""

    def __init__(self, options_of: Callable[[str], Sequence[str]]):
        self.options_of = options_of

    def get_group_options(self, group: str, results_filter: Any = None,
                          config_name: Any = None, overrides: Any = None) -> list[str]:
        return sorted(self.options_of(group))


def parse_sweep(args: Sequence[str], options_of: Callable[[str], Sequence[str]],
                verbatim: Sequence[str] = ("out", "resume")) -> Sweep:
    """Split ``key=value`` arguments into shared overrides and the jobs of their cartesian
    product. ``options_of(group)`` lists the names ``group=glob(...)`` filters; the keys in
    ``verbatim`` (paths, which may hold ``,`` and ``=``) are shared as they are."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create(config_loader=_Choices(options_of))  # type: ignore[arg-type]
    fixed, keys, values = [], [], []
    for arg in args:
        if arg.partition("=")[0] in verbatim:
            fixed.append(arg)
            continue
        try:
            (o,) = parser.parse_overrides([arg])
            if not o.is_sweep_override():
                fixed.append(arg)
                continue
            if not o.is_discrete_sweep():
                raise UsageError(f"{arg}: a sweep runs a list of values (a=1,2, choice(), "
                                 "range(), glob()); interval() needs a sweeper that samples, "
                                 "such as Optuna")
            choices = list(o.sweep_string_iterator())
        except HydraException as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UsageError(f"bad sweep override {arg!r}: {first}") from None
        key = o.get_key_element()
        if not choices:
            raise UsageError(f"{arg} chooses nothing (options of {o.key_or_group}: "
                             f"{', '.join(sorted(options_of(o.key_or_group))) or 'none'})")
        if key in keys:
            raise UsageError(f"{key} is swept twice; give its values in one override")
        keys.append(key)
        values.append([f"{key}={v}" for v in choices])
    combos = list(itertools.product(*values))  # the last key varies fastest, as in Hydra
    names = job_names(combos)
    return Sweep(fixed, keys, [Job(list(c), n) for c, n in zip(combos, names)])


def job_names(combos: Iterable[Sequence[str]]) -> list[str]:
    """Folder names of jobs: their swept overrides joined by commas (Hydra's
    ``override_dirname``), path separators and odd characters replaced; a long or repeated
    name is cut and given a hash of the overrides."""
    names: list[str] = []
    for combo in combos:
        name = re.sub(r"[^\w.=,+@-]", "_", ",".join(combo)) or "job"
        digest = hashlib.sha1("\0".join(combo).encode()).hexdigest()[:8]
        if len(name) > _NAME_LIMIT:
            name = f"{name[:_NAME_LIMIT - 9]}-{digest}"
        if name in names:
            name = f"{name}-{digest}"
        names.append(name)
    return names


# ---- the sweep folder ---------------------------------------------------------------------


def _write_manifest(folder: Path, command: str, sweep: Sweep, started: str) -> None:
    atomic_write_json({"command": command, "fixed": sweep.fixed, "keys": sweep.keys,
                       "started": started,
                       "updated": datetime.now().isoformat(timespec="seconds"),
                       "jobs": [asdict(j) for j in sweep.jobs]}, folder / SWEEP_FILE)


def _same_jobs(manifest: dict[str, Any] | None, sweep: Sweep) -> bool:
    return manifest is not None and [j.get("overrides") for j in manifest.get("jobs", [])] == [
        j.overrides for j in sweep.jobs]


def sweep_folder(sweep: Sweep, default: Path, base: Path | None = None) -> tuple[Path, bool]:
    """``(folder, resuming)`` from the shared ``out=``, ``resume=`` and ``overwrite=``.

    ``out=`` names the sweep folder (else ``default``). ``resume=auto`` continues it (without
    ``out=``: the newest sweep under ``base`` with the same jobs) and ``resume=FOLDER`` that
    sweep folder; a folder that already holds a sweep is refused otherwise, unless
    ``overwrite=true`` reruns its jobs."""
    out, resume = sweep.fixed_value("out"), sweep.fixed_value("resume")
    if resume in ("null", "", "false", "None"):
        resume = None
    if resume not in (None, "auto"):
        folder = Path(resume).expanduser()
        if read_manifest(folder) is None:
            raise RunFolderError(f"resume={resume}: no {SWEEP_FILE} there; a sweep continues "
                                 "with resume=auto (and its out=) or resume=<its sweep folder>")
        return folder, True
    if out not in (None, "", "null"):
        folder = Path(out).expanduser()
    elif resume == "auto" and base is not None and base.is_dir():
        mine = [p for p in base.iterdir() if _same_jobs(read_manifest(p), sweep)]
        folder = max(mine, key=lambda p: (p / SWEEP_FILE).stat().st_mtime, default=default)
    else:
        folder = default
    if folder.exists() and not folder.is_dir():
        raise RunFolderError(f"out={folder} is a file; a sweep writes into a folder")
    held = read_manifest(folder) is not None
    if not held and folder.is_dir() and (folder / "metrics.json").exists():
        raise RunFolderError(f"{folder} holds a run, not a sweep; pick another out=")
    if held and resume is None and not sweep.overwrite:
        raise RunFolderError(f"{folder} holds a sweep; continue it with resume=auto (finished "
                             "jobs are skipped), pick another out=, or pass overwrite=true to "
                             "rerun every job")
    return folder, resume == "auto"


def new_folder(parent: Path, stem: str = "") -> Path:
    """``parent/<stem><timestamp>`` (with ``-1``, ``-2``... when taken)."""
    stamp = f"{stem}{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, i = parent / stamp, 1
    while path.exists():
        path, i = parent / f"{stamp}-{i}", i + 1
    return path


# ---- running ------------------------------------------------------------------------------

class SweepLog:
    """The ``sweep.json`` of a sweep being run, rewritten after every change of a job (under
    the folder's lock), by every launcher (:mod:`omnidiff.tasks.launchers`)."""

    def __init__(self, folder: Path, sweep: Sweep, command: str):
        self.folder, self.sweep, self.command = folder, sweep, command
        self.started = datetime.now().isoformat(timespec="seconds")

    def write(self) -> None:
        _write_manifest(self.folder, self.command, self.sweep, self.started)

    def skip(self, i: int, job: Job, finished: Callable[[Job, Path], bool]) -> bool:
        """Whether job ``i`` finished earlier (then recorded and announced as skipped)."""
        if not finished(job, self.folder / job.name):
            return False
        job.status = "finished earlier"
        what = " ".join(job.overrides) or "(no swept option)"
        print(f"omnidiff sweep: job {i}/{len(self.sweep.jobs)} [{what}] finished earlier: "
              "skipped", flush=True)
        return True


def run_sweep(folder: Path, sweep: Sweep, command: str, run: Callable[[Job, Path], None],
              finished: Callable[[Job, Path], bool], again: str) -> list[Job]:
    """Run every job of ``sweep`` in turn: ``run(job, job folder)``, unless
    ``finished(job, job folder)`` says it is done. A job that raises is recorded as failed
    and the sweep goes on; Ctrl-C or SIGTERM (:class:`TrainingPreempted`,
    ``KeyboardInterrupt``) ends the sweep with ``again``, the command that continues it.
    ``sweep.json`` is rewritten after each job, under the folder's lock."""
    log = SweepLog(folder, sweep, command)
    n = len(sweep.jobs)
    with RunLock(folder):
        for i, job in enumerate(sweep.jobs, 1):
            job_dir = folder / job.name
            if log.skip(i, job, finished):
                continue
            what = " ".join(job.overrides) or "(no swept option)"
            print(f"omnidiff sweep: job {i}/{n} [{what}] -> {job_dir}", flush=True)
            log.write()
            t0 = time.perf_counter()
            try:
                run(job, job_dir)
                job.status, job.error = "done", None
            except (TrainingPreempted, KeyboardInterrupt) as exc:
                job.status = "stopped"
                log.write()
                code, what = getattr(exc, "exit_code", 130), getattr(exc, "what", "Ctrl-C")
                raise TrainingPreempted(f"sweep stopped in job {i}/{n} ({what}); `{again}` "
                                        "continues it", code) from None
            except Exception as exc:
                if os.environ.get("OMNIDIFF_DEBUG"):
                    raise
                kind = "" if isinstance(exc, UserError) else f"{type(exc).__name__}: "
                job.status, job.error = "failed", one_line(f"{kind}{exc}")
                _write_error(job_dir, exc)
                print(f"omnidiff sweep: job {i}/{n} failed: {job.error} (traceback: "
                      f"{job_dir / 'error.log'}); going on", file=sys.stderr, flush=True)
            finally:
                job.seconds = round(time.perf_counter() - t0, 2)
            log.write()
        log.write()
    return sweep.jobs


def _write_error(job_dir: Path, exc: BaseException) -> None:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    atomic_write_text(text, job_dir / "error.log")


def report(folder: Path, jobs: list[Job], again: str) -> int:
    """Write and print the comparison of a finished sweep; 1 when a job failed, else 0."""
    table, files = write_comparison([folder], folder)
    print(table)
    print(f"sweep: {folder}  ({', '.join(str(f.name) for f in files)})")
    failed = [j for j in jobs if j.status == "failed"]
    if failed:
        print(f"omnidiff sweep: {len(failed)} of {len(jobs)} job(s) failed: "
              f"{'; '.join(j.name for j in failed)}. After a fix, `{again}` reruns them and "
              "skips the finished ones", file=sys.stderr)
        return 1
    return 0


# ---- omnidiff train -m --------------------------------------------------------------------

def config_choices(group: str) -> list[str]:
    """Names a config group offers (``recipe``, ``domain`` and omnidiff's own groups)."""
    if group == "recipe":
        return sorted(list_recipes())
    if group == "domain":
        return sorted(available())
    return group_options(group)


def job_overrides(sweep: Sweep, job: Job, job_dir: Path, resuming: bool) -> list[str]:
    shared = [o for o in sweep.fixed if o.partition("=")[0] not in ("out", "resume")]
    out = "out=" + quoted(str(job_dir))  # a job folder's name holds '=' and ','
    return shared + job.overrides + [out] + (["resume=auto"] if resuming else [])


def quoted(text: str) -> str:
    """``text`` as a quoted value of a Hydra override."""
    return "'" + text.replace("'", "\\'") + "'"


def train_finished(cfg: Any, job_dir: Path) -> bool:
    """A job whose run wrote ``metrics.json`` at (or past) this config's ``max_steps``."""
    summary = read_json(job_dir / "metrics.json")
    if summary is None:
        return False
    max_steps = int(cfg.trainer.get("max_steps") or -1)
    return max_steps <= 0 or int(summary.get("global_step", 0)) >= max_steps


# what Lightning's DDP launcher sets in the first process (with LOCAL_RANK set, the next job's
# Trainer would take its processes for started by a scheduler and wait for them forever)
DDP_ENV = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE")


def each_job(sweep: Sweep, check: Callable[[Job], Any]) -> dict[str, Any]:
    """``{job name: check(job)}`` for every job before any runs; a mistake names its job."""
    out = {}
    for i, job in enumerate(sweep.jobs, 1):
        try:
            out[job.name] = check(job)
        except UserError as exc:
            raise type(exc)(f"job {i} [{' '.join(job.overrides)}]: {exc}") from None
    return out


def leave_ddp(env: dict[str, str | None]) -> None:
    """After a DDP job: end its process group (Lightning keeps it for another ``fit`` in the
    same processes; the next job starts new ones) and restore the launcher's variables."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
    for key, value in env.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def ddp_worker_job(sweep: Sweep) -> tuple[Path, Job] | None:
    """In a process that Lightning's DDP launcher started (it reruns the command with
    ``LOCAL_RANK`` > 0 while the first process trains one job, whose folder it has put in
    ``OMNIDIFF_RUN_DIR``): that job and its folder. None in the first process."""
    run_dir = os.environ.get(RUN_DIR_ENV)
    if os.environ.get("LOCAL_RANK", "0") == "0" or not run_dir:
        return None
    job = next((j for j in sweep.jobs if j.name == Path(run_dir).name), None)
    if job is None:
        raise UsageError(f"this DDP process was started for {run_dir}, which is not a job of "
                         "this sweep")
    return Path(run_dir), job


def continuing(args: Sequence[str], folder: Path) -> list[str]:
    """The sweep's arguments, with ``resume=auto out=<its folder>`` in place of their own."""
    keep = [a for a in args if a.partition("=")[0] not in ("out", "resume", "overwrite")]
    return keep + ["resume=auto", f"out={folder}"]


# ---- omnidiff sample -m -------------------------------------------------------------------

def sampler_choices(group: str) -> list[str]:
    return sorted(SAMPLERS) if group == "sampler" else []


