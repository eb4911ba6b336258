"""Run folders: where a training writes, how it is found again, and the rules that keep a run's
work safe.

* :func:`resume_target` picks the folder and the checkpoint to continue from (``resume=``);
* :func:`check_reuse` refuses to start a new run in a folder that already holds one, unless
  ``resume=`` continues it or ``overwrite=true`` asks to replace it (:func:`clear_run`);
* :class:`RunLock` keeps two trainings out of one folder: a lock file naming the owner's pid,
  host and start; a lock whose process is gone is reported and taken over;
* :func:`check_compatible` compares a checkpoint's settings with this config's before anything
  is written, naming the first setting that differs;
* :func:`finished_step` tells a run that reached ``trainer.max_steps`` or ``max_epochs`` (it
  resumes to nothing).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping

from omnidiff.errors import RunFolderError
from omnidiff.io import read_json
from omnidiff.model_spec import ModelSpec

__all__ = ["RunFolderError", "RUN_ENTRIES", "LOCK_NAME", "run_dir_for", "latest_run",
           "launched_rank", "launched_world",
           "resume_target", "holds_run", "check_reuse", "clear_run", "RunLock",
           "check_compatible", "finished_step", "remove_stale_temporaries"]

RUN_DIR_ENV = "OMNIDIFF_RUN_DIR"
LOCK_NAME = ".omnidiff.lock"
# what `omnidiff train` writes into a run folder (and `omnidiff sample` by default)
RUN_ENTRIES = ("config.yaml", "model.pt", "metrics.json", "loss.png", "checkpoints", "logs",
               "samples", "ranks", "generated")
# any of these means the folder holds a run (an empty or foreign folder does not)
_RUN_MARKS = ("config.yaml", "model.pt", "metrics.json", "checkpoints")


def launched_rank() -> int:
    """This process's global rank as its launcher set it, before any process group exists:
    ``RANK`` (torchrun, and Lightning's launcher in the processes it starts), ``SLURM_PROCID``
    (srun), else ``NODE_RANK`` and ``LOCAL_RANK`` (a command started on each node by hand,
    whose processes Lightning's launcher then starts): 0 in the process that owns the run
    folder."""
    for key in ("RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    node, local = os.environ.get("NODE_RANK", "0"), os.environ.get("LOCAL_RANK", "0")
    return 0 if node == local == "0" else 1 + int(node or 0) + int(local or 0)


def launched_world() -> int:
    """How many processes the launcher started for this run (1 without a launcher)."""
    for key in ("WORLD_SIZE", "SLURM_NTASKS"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 1


def _rank0() -> bool:
    return launched_rank() == 0 or not os.environ.get(RUN_DIR_ENV)


# ---- finding the folder -------------------------------------------------------------------

def run_dir_for(cfg: Any) -> Path:
    """``cfg.out`` or ``runs/<recipe or domain>/<timestamp>``.

    Lightning's DDP launcher re-runs the command in one process per extra device (with
    ``LOCAL_RANK`` set); those processes take the run directory the first one chose.
    """
    if cfg.get("out"):
        return Path(str(cfg.out))
    if os.environ.get("LOCAL_RANK", "0") != "0" and os.environ.get(RUN_DIR_ENV):
        return Path(os.environ[RUN_DIR_ENV])
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path("runs") / str(cfg.get("recipe") or cfg.get("domain") or "run") / stamp
    path, i = base, 1
    while path.exists():
        path, i = base.with_name(f"{stamp}-{i}"), i + 1
    return path


def latest_run(base: Path) -> Path | None:
    """The run folder under ``base`` whose ``last.ckpt`` is newest (None if there is none)."""
    if not base.is_dir():
        return None
    runs = [p for p in base.iterdir() if (p / "checkpoints" / "last.ckpt").is_file()]
    return max(runs, key=lambda p: (p / "checkpoints" / "last.ckpt").stat().st_mtime,
               default=None)


def resume_target(cfg: Any) -> tuple[Path, Path | None]:
    """``(run dir, checkpoint to resume from or None)`` for ``cfg.resume``.

    * ``null``: a new run (:func:`run_dir_for`);
    * ``auto``: ``out=`` (or the newest run of this recipe under ``runs/``) continues from its
      ``checkpoints/last.ckpt`` when there is one, else starts fresh there;
    * ``PATH``: a ``.ckpt`` file or a run folder; the run continues in that folder (or in
      ``out=`` when given).
    """
    resume = cfg.get("resume")
    if resume in (None, "", False):
        return run_dir_for(cfg), None
    if str(resume) == "auto":
        run = None
        if not cfg.get("out") and _rank0():
            run = latest_run(Path("runs") / str(cfg.get("recipe") or cfg.get("domain") or "run"))
        run = run or run_dir_for(cfg)
        ckpt = run / "checkpoints" / "last.ckpt"
        return run, (ckpt if ckpt.is_file() else None)
    path = Path(str(resume)).expanduser()
    if path.is_dir():
        path = (path / "checkpoints" / "last.ckpt" if (path / "checkpoints").is_dir()
                else path / "last.ckpt")
    if not path.is_file():
        raise RunFolderError(f"resume={resume}: no checkpoint found there; pass a .ckpt written "
                             "by `omnidiff train`, its run folder, or resume=auto")
    if cfg.get("out"):
        run = Path(str(cfg.out))
    elif path.parent.name == "checkpoints":
        run = path.parent.parent
    else:
        run = run_dir_for(cfg)
    return run, path


# ---- reuse --------------------------------------------------------------------------------

def holds_run(path: Path) -> bool:
    """Whether ``path`` holds (part of) a run of ``omnidiff train``."""
    return path.is_dir() and any((path / name).exists() for name in _RUN_MARKS)


def check_reuse(run_dir: Path, ckpt: Path | None, *, resume: Any, overwrite: bool) -> None:
    """Refuse to start in a folder that holds a run, unless this run continues that folder's
    own checkpoint, ``resume=auto`` restarts a run that never wrote one (and no model), or
    ``overwrite`` asks to replace it."""
    if overwrite or not holds_run(run_dir):
        return
    own = ckpt is not None and ckpt.parent.resolve() == (run_dir / "checkpoints").resolve()
    fresh_auto = (ckpt is None and str(resume) == "auto"
                  and not (run_dir / "model.pt").exists())
    if own or fresh_auto:
        return
    what = ("a finished run (model.pt)" if (run_dir / "model.pt").exists()
            else "an earlier run")
    raise RunFolderError(f"{run_dir} holds {what}; continue it with resume=auto, pick another "
                         "out=, or pass overwrite=true to replace it")


def clear_run(run_dir: Path) -> list[str]:
    """Remove what ``omnidiff train`` wrote into ``run_dir`` (for ``overwrite=true``); returns
    the names removed. Other files in the folder are left alone."""
    removed = []
    for name in RUN_ENTRIES:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    return removed


def remove_stale_temporaries(run_dir: Path) -> None:
    """Half-written temporaries of a killed run (``.<name>.<random>.tmp<suffix>``)."""
    for p in run_dir.rglob(".*.tmp*"):
        if p.is_file():
            try:
                p.unlink()
            except OSError:
                pass


# ---- the lock -----------------------------------------------------------------------------

def _process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (Linux; None elsewhere): tells a live owner from a
    new process that reused its pid."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22: starttime


def _alive(owner: Mapping[str, Any]) -> bool | None:
    """True / False for an owner on this host; None when it cannot be told (another host)."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = int(owner.get("pid", -1))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    start = owner.get("pid_start")
    return start is None or _process_start(pid) in (None, start)


class RunLock:
    """An exclusive lock on a run folder: ``<run>/.omnidiff.lock`` holds the owner's pid, host
    and start time. Created with ``O_EXCL``, so of two runs starting together one wins; a lock
    whose process is gone (same host) is reported on stderr and taken over. Use as a context
    manager; the lock file is removed on exit."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def _owner(self) -> dict[str, Any] | None:
        return read_json(self.path)

    def _refuse(self, owner: Mapping[str, Any] | None, alive: bool | None) -> RunFolderError:
        if owner is None:
            who = "another process (its lock is being written)"
        else:
            who = f"pid {owner.get('pid')} on {owner.get('host')} since {owner.get('started')}"
        hint = ("wait for it to finish or pick another out=" if alive
                else f"if that run is no longer active, delete {self.path}")
        return RunFolderError(f"{self.path.parent} is in use by {who}; {hint}")

    def acquire(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        pid = os.getpid()
        me = {"pid": pid, "pid_start": _process_start(pid), "host": socket.gethostname(),
              "started": datetime.now().isoformat(timespec="seconds"), "argv": sys.argv[1:]}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self.held = True
            return self
        raise self._refuse(self._owner(), True)

    def check_free(self) -> dict[str, Any] | None:
        """Raise when another live run holds the lock; returns a stale owner (or None)."""
        if not self.path.exists():
            return None
        owner = self._owner()
        if owner is None:  # being written right now, or cut short long ago
            try:
                young = time.time() - self.path.stat().st_mtime < 30
            except FileNotFoundError:
                return None
            if young:
                raise self._refuse(None, True)
            return {}
        alive = _alive(owner)
        if alive is not False:
            raise self._refuse(owner, alive)
        return owner

    def _take_over_if_stale(self) -> None:
        owner = self.check_free()
        if owner is None:
            return
        who = f"pid {owner.get('pid')} on {owner.get('host')}" if owner else "an unknown owner"
        print(f"omnidiff: {self.path} was left by {who}, which is no longer running; taking "
              "it over", file=sys.stderr, flush=True)
        self.path.unlink(missing_ok=True)

    def release(self) -> None:
        if self.held:
            owner = self._owner()
            if owner is None or owner.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
            self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()


# ---- resuming -----------------------------------------------------------------------------

# what a checkpoint's weights depend on, by the config key it comes from: a diffusion model's
# identity (its ModelSpec; the domain is checked before, with its own message), then the blocks
# of the other training modules (an autoencoder's options, a latent model's autoencoder, a
# student's distillation)
_SPEC_MUST_MATCH = {"model": "model", "schedule": "schedule",
                    "event_shape": "the data's event shape", "cond": "the data's condition",
                    "prediction": "loss.prediction", "sigma_data": "loss.sigma_data"}
_BLOCKS_MUST_MATCH = {"ae": "ae", "autoencoder": "the autoencoder", "distill": "distill"}


def _must_match(hp: Mapping[str, Any]) -> dict[str, Any]:
    """``{config key: value}`` of the settings a resumed run must share with its checkpoint."""
    out = {}
    if "model_cfg" in hp:
        spec = ModelSpec.from_hparams(hp)
        fields = {**vars(spec), "cond": spec.cond.to_dict()}
        out.update({label: fields[name] for name, label in _SPEC_MUST_MATCH.items()})
    out.update({label: hp[name] for name, label in _BLOCKS_MUST_MATCH.items() if name in hp})
    return out


def _first_difference(key: str, old: Any, new: Any) -> tuple[str, Any, Any] | None:
    """``(dotted key, old, new)`` of the first difference; keys present on one side only are
    not differences (settings added by a later version keep their defaults)."""
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        for k in sorted(set(old) & set(new), key=str):
            diff = _first_difference(f"{key}.{k}", old[k], new[k])
            if diff:
                return diff
        return None
    if isinstance(old, (list, tuple)) and isinstance(new, (list, tuple)):
        old, new = list(old), list(new)
    return None if old == new else (key, old, new)


def check_compatible(ckpt: Path, saved: Mapping[str, Any], current: Mapping[str, Any],
                     saved_state: Mapping[str, Any] | None = None,
                     current_state: Mapping[str, Any] | None = None) -> None:
    """One line naming the first setting in which the checkpoint's hyper-parameters
    (``saved``) differ from this run's (``current``), then any weight whose shape differs."""
    saved, current = _must_match(saved), _must_match(current)
    for key in [k for k in saved if k in current]:
        diff = _first_difference(key, saved[key], current[key])
        if diff:
            key, old, new = diff
            raise RunFolderError(
                f"cannot resume from {ckpt}: it was trained with {key}={old!r}, this config "
                f"has {key}={new!r}; resume with the settings of its run (its config.yaml), or "
                "start a new run with another out=")
    for name, value in (saved_state or {}).items():
        mine = (current_state or {}).get(name)
        if mine is not None and tuple(mine.shape) != tuple(value.shape):
            raise RunFolderError(f"cannot resume from {ckpt}: its weight {name} has shape "
                                 f"{tuple(value.shape)}, this config's network "
                                 f"{tuple(mine.shape)}; resume with the settings of its run")


def finished_step(ckpt_obj: Mapping[str, Any], trainer_cfg: Mapping[str, Any]
                  ) -> str | None:
    """How the checkpoint already reached the end of training (``"step 300 of
    trainer.max_steps=300"``, or of ``trainer.max_epochs``); None when there is more to do."""
    step = int(ckpt_obj.get("global_step", 0))
    max_steps = trainer_cfg.get("max_steps")
    if max_steps not in (None, "") and 0 < int(max_steps) <= step:
        return f"step {step} of trainer.max_steps={int(max_steps)}"
    max_epochs = trainer_cfg.get("max_epochs")
    progress = (((ckpt_obj.get("loops") or {}).get("fit_loop") or {}).get("epoch_progress")
                or {}).get("current") or {}
    epochs = int(progress.get("processed", 0))
    if max_epochs not in (None, "") and 0 <= int(max_epochs) <= epochs:
        return f"epoch {epochs} of trainer.max_epochs={int(max_epochs)}, step {step}"
    return None


SWEEP_FILE = "sweep.json"  # a sweep folder's manifest (omnidiff.tasks.sweeps writes it)


def read_manifest(folder: Path) -> dict[str, Any] | None:
    """A sweep folder's ``sweep.json`` (None when there is none or it cannot be read)."""
    return read_json(Path(folder) / SWEEP_FILE)
