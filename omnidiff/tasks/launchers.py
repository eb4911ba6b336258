"""Where the jobs of a sweep run (``launcher=``, defaults in ``conf/launcher/``):

* ``sequential`` (the default): one after another in this process
  (:func:`omnidiff.tasks.sweeps.run_sweep`);
* ``local``: ``jobs=N`` at once, each an ``omnidiff train`` process of its own (spare cores, or
  the GPUs of one machine: job slot ``k`` sees GPU ``k mod #GPUs`` only);
* ``slurm``: one SLURM array job submitted through submitit, ``jobs`` tasks at a time, each
  with the partition, GPUs, time and memory of the ``launcher`` block. SLURM warns a job
  ``signal_delay_s`` before its time limit or preemption; the job then stops training (which
  saves ``last.ckpt``) and submitit requeues it with ``resume=auto``.

Every launcher writes the same sweep folder: ``sweep.json`` (each job's status, seconds, error;
for SLURM its job id), one run folder per job, and the comparison at the end. ``resume=auto``
skips finished jobs and continues the others from their checkpoints, whichever launcher ran
them before. A job's console output is kept in ``<sweep>/.logs/<job>.log``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from omnidiff.errors import ConfigError, TrainingPreempted, UsageError
from omnidiff.io import atomic_write_text
from omnidiff.tasks.sweeps import DDP_ENV, Job, Sweep, SweepLog
from omnidiff.training.run_folder import RUN_DIR_ENV, RunLock

__all__ = ["LAUNCHERS", "LaunchOptions", "launch_options", "check_single_run", "run_local",
           "submit_slurm", "TrainCommand"]

LAUNCHERS = ("sequential", "local", "slurm")
SLURM_KEYS = ("partition", "account", "qos", "constraint", "nodes", "tasks_per_node",
              "gpus_per_node", "cpus_per_task", "mem_gb", "timeout_min", "signal_delay_s",
              "setup", "additional", "wait")
STOPPED = (130, 143)  # the exit codes of a run stopped by Ctrl-C or SIGTERM (after saving)


@dataclass
class LaunchOptions:
    name: str = "sequential"
    jobs: int = 1
    slurm: dict[str, Any] = field(default_factory=dict)


def _gpu_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _default_jobs(threads: Any) -> int:
    gpus = _gpu_count()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return gpus or max(1, int(cores or 1) // max(1, int(threads or 1)))


def launch_options(cfg: Any, swept: list[str]) -> LaunchOptions:
    """The launcher block and ``jobs=`` of a sweep's (first) job config, checked in one line
    each; ``launcher`` and ``jobs`` are the sweep's, not a job's, so they cannot be swept."""
    bad = [k for k in swept if k == "jobs" or k.split(".")[0] == "launcher"]
    if bad:
        raise UsageError(f"{bad[0]} is swept; the launcher and jobs= are the same for every "
                         "job of a sweep: give one value")
    block = dict(cfg.get("launcher") or {"name": "sequential"})
    name = str(block.get("name", "sequential"))
    if name not in LAUNCHERS:
        raise ConfigError(f"unknown launcher {name!r}; choose one of: {', '.join(LAUNCHERS)}")
    jobs = cfg.get("jobs")
    if jobs is not None and (isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1):
        raise ConfigError(f"jobs={jobs!r}: give the number of jobs to run at once (>= 1)")
    if jobs is not None and name == "sequential":
        raise ConfigError(f"jobs={jobs} runs jobs at once on a launcher: add launcher=local "
                          "(processes on this machine) or launcher=slurm")
    if name == "slurm":
        need_submitit()
    n = int(jobs) if jobs is not None else (
        _default_jobs(cfg.get("threads")) if name == "local" else 256 if name == "slurm" else 1)
    return LaunchOptions(name, n, {k: block.get(k) for k in SLURM_KEYS})


def check_single_run(cfg: Any) -> None:
    """One line for a launcher or ``jobs=`` given to a single run (they place sweep jobs)."""
    name = str((cfg.get("launcher") or {}).get("name", "sequential"))
    if name != "sequential" or cfg.get("jobs") is not None:
        what = f"launcher={name}" if name != "sequential" else f"jobs={cfg.jobs}"
        raise UsageError(f"{what} places the jobs of a sweep: add -m (a sweep of one job is "
                         "fine), or drop it to train here")


def need_submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise ConfigError("launcher=slurm needs the submitit package: pip install "
                          "'omnidiff[scale]' (or pip install submitit)") from None
    return submitit


def job_command(argv: list[str]) -> list[str]:
    """The process that runs one job: this Python's ``omnidiff`` command, without the sweep's
    ``launcher`` and ``jobs=`` (which place jobs; the job is a single run)."""
    def placing(arg: str) -> bool:
        key = arg.partition("=")[0].lstrip("+~")
        return key in ("launcher", "jobs") or key.startswith("launcher.")

    return [sys.executable, "-m", "omnidiff.cli", *(a for a in argv if not placing(a))]


def _job_env(slot: int) -> dict[str, str]:
    """A job process's environment: no variables of a DDP launch that started this process,
    and on a machine with GPUs only its slot's GPU."""
    env = {k: v for k, v in os.environ.items() if k not in (*DDP_ENV, RUN_DIR_ENV, "RANK")}
    env.setdefault("PYTHONUNBUFFERED", "1")
    gpus = _gpu_count()
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = str(slot % gpus)
    return env


def _error_of(log: Path) -> str:
    """The line that says why a job failed: its ``omnidiff: error:`` line, else its last."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    said = [ln for ln in lines if ln.startswith("omnidiff: error:")]
    return (said[-1].removeprefix("omnidiff: error:").strip() if said
            else lines[-1] if lines else "no output")


@dataclass
class _Running:
    index: int
    job: Job
    proc: subprocess.Popen
    started: float
    log: Path


def _finish(run: _Running, code: int, job_dir: Path) -> None:
    job = run.job
    job.seconds = round(time.perf_counter() - run.started, 2)
    if code == 0:
        job.status, job.error = "done", None
    elif code in STOPPED:
        job.status = "stopped"
    else:
        job.status, job.error = "failed", _error_of(run.log)
        tail = run.log.read_text(errors="replace")[-20_000:]
        atomic_write_text(tail, job_dir / "error.log")
        print(f"omnidiff sweep: job {run.index} failed: {job.error} (log: {run.log}); going on",
              file=sys.stderr, flush=True)


def _raise_on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


class _Slots:
    """``jobs`` job processes at most, each in a slot (its GPU on a machine with GPUs)."""

    def __init__(self, folder: Path, log: SweepLog, jobs: int):
        self.folder, self.log, self.free = folder, log, list(range(jobs))
        self.running: dict[int, _Running] = {}

    def start(self, i: int, job: Job, argv: list[str]) -> None:
        slot = self.free.pop(0)
        path = self.folder / ".logs" / f"{job.name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w") as out:
            proc = subprocess.Popen(job_command(argv), stdout=out, stderr=subprocess.STDOUT,
                                    env=_job_env(slot), start_new_session=True)
        self.running[slot] = _Running(i, job, proc, time.perf_counter(), path)
        job.status = "running"
        print(f"omnidiff sweep: job {i}/{len(self.log.sweep.jobs)} [{' '.join(job.overrides)}]"
              f" -> {self.folder / job.name} (process {proc.pid}, log {path})", flush=True)
        self.log.write()

    def reap(self) -> None:
        """Record the jobs that ended and free their slots."""
        for slot, run in list(self.running.items()):
            code = run.proc.poll()
            if code is not None:
                _finish(run, code, self.folder / run.job.name)
                del self.running[slot]
                self.free.append(slot)
                self.log.write()

    def stop(self) -> int:
        """SIGTERM every running job (each saves the step in flight) and wait for them."""
        for run in self.running.values():
            run.proc.send_signal(signal.SIGTERM)
        for run in self.running.values():
            run.proc.wait()
            run.job.status = "stopped"
        self.log.write()
        return len(self.running)


def run_local(folder: Path, sweep: Sweep, log: SweepLog, argv_of: Callable[[Job], list[str]],
              finished: Callable[[Job, Path], bool], jobs: int, again: str) -> list[Job]:
    """Run the sweep's jobs ``jobs`` at a time as ``omnidiff train`` processes. Ctrl-C or
    SIGTERM stops every running job (each saves its checkpoint) and ends with ``again``."""
    with RunLock(folder):
        todo = [(i, j) for i, j in enumerate(sweep.jobs, 1) if not log.skip(i, j, finished)]
        slots = _Slots(folder, log, jobs)
        before = signal.signal(signal.SIGTERM, _raise_on_sigterm)
        try:
            while todo or slots.running:
                while todo and slots.free:
                    i, job = todo.pop(0)
                    slots.start(i, job, argv_of(job))
                slots.reap()
                time.sleep(0.1)
        except KeyboardInterrupt:
            stopped = slots.stop()
            raise TrainingPreempted(f"sweep stopped ({stopped} job(s) saved and stopped); "
                                    f"`{again}` continues it", 130) from None
        finally:
            signal.signal(signal.SIGTERM, before)
        log.write()
    return sweep.jobs


# ---- SLURM --------------------------------------------------------------------------------


class TrainCommand:
    """What a SLURM task runs: one ``omnidiff train`` process. On SLURM's warning before the
    time limit or a preemption, submitit calls :meth:`checkpoint`: the process is stopped
    (it saves ``last.ckpt``) and the job is requeued with ``resume=auto``."""

    def __init__(self) -> None:
        self._proc: subprocess.Popen | None = None

    def __call__(self, argv: list[str]) -> int:
        self._proc = subprocess.Popen(job_command(argv))
        code = self._proc.wait()
        if code != 0:
            raise RuntimeError(f"omnidiff train exited with {code}")
        return code

    def checkpoint(self, argv: list[str]) -> Any:
        from submitit.helpers import DelayedSubmission

        if self._proc is not None and self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            self._proc.wait()
        again = [a for a in argv if not a.startswith("resume=")] + ["resume=auto"]
        return DelayedSubmission(TrainCommand(), again)

    def __getstate__(self) -> dict[str, Any]:
        return {"_proc": None}


def _executor(folder: Path, opts: LaunchOptions) -> Any:
    s = {k: v for k, v in opts.slurm.items() if v is not None}
    ex = need_submitit().AutoExecutor(folder=str(folder / ".submitit"), cluster="slurm")
    params = {"name": f"omnidiff-{folder.name}"[:64], "slurm_array_parallelism": opts.jobs,
              "timeout_min": s.get("timeout_min"), "nodes": s.get("nodes"),
              "tasks_per_node": s.get("tasks_per_node"), "gpus_per_node": s.get("gpus_per_node"),
              "cpus_per_task": s.get("cpus_per_task"), "mem_gb": s.get("mem_gb"),
              "slurm_partition": s.get("partition"), "slurm_account": s.get("account"),
              "slurm_qos": s.get("qos"), "slurm_constraint": s.get("constraint"),
              "slurm_signal_delay_s": s.get("signal_delay_s"),
              "slurm_setup": list(s.get("setup") or []) or None,
              "slurm_additional_parameters": dict(s.get("additional") or {}) or None}
    ex.update_parameters(**{k: v for k, v in params.items() if v is not None})
    return ex


def submit_slurm(folder: Path, sweep: Sweep, log: SweepLog, argv_of: Callable[[Job], list[str]],
                 finished: Callable[[Job, Path], bool], opts: LaunchOptions,
                 again: str) -> list[Job]:
    """Submit the unfinished jobs as one SLURM array; with ``launcher.wait`` wait for them
    and record how each ended (else they stay ``submitted``: ``resume=auto`` later skips the
    finished ones and submits the rest again)."""
    with RunLock(folder):
        todo = [(i, j) for i, j in enumerate(sweep.jobs, 1) if not log.skip(i, j, finished)]
        if not todo:
            return sweep.jobs
        ex = _executor(folder, opts)
        with ex.batch():
            subs = [ex.submit(TrainCommand(), argv_of(job)) for _, job in todo]
        for (i, job), sub in zip(todo, subs):
            job.status, job.slurm_id = "submitted", str(sub.job_id)
            print(f"omnidiff sweep: job {i}/{len(sweep.jobs)} [{' '.join(job.overrides)}] "
                  f"submitted as SLURM job {sub.job_id} -> {folder / job.name}", flush=True)
        log.write()
        if not opts.slurm.get("wait", True):
            return sweep.jobs
        for (i, job), sub in zip(todo, subs):
            t0 = time.perf_counter()
            try:
                sub.result()
                job.status, job.error = "done", None
            except Exception as exc:  # submitit's FailedJobError / UncompletedJobError
                job.status, job.error = "failed", str(exc).strip().splitlines()[-1][:300]
            job.seconds = round(time.perf_counter() - t0, 2)
            log.write()
    return sweep.jobs
