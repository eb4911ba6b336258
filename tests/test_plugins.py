"""Plugins for real: the example third-party package ``examples/omnidiff-timeseries`` installed
with pip, listed, trained through the CLI and used with ``omnidiff.load``; broken plugins are
reported by name in a fresh process without breaking the others."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "omnidiff-timeseries"


def _cli() -> list[str]:
    exe = Path(sys.executable).with_name("omnidiff")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "omnidiff.cli"]


def _env(pythonpath: Path) -> dict[str, str]:
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = os.pathsep.join([str(pythonpath)] + [p for p in env.get(
        "PYTHONPATH", "").split(os.pathsep) if p])
    env.pop("OMNIDIFF_RUN_DIR", None)
    return env


def _can_build_without_isolation() -> bool:
    """setuptools >= 70.1 builds wheels by itself; older ones need the ``wheel`` package."""
    try:
        from importlib.metadata import version

        import setuptools
        major, minor = (int(p) for p in setuptools.__version__.split(".")[:2])
        if (major, minor) >= (70, 1):
            return True
        version("wheel")
        return major >= 64
    except Exception:
        return False


def _pip_install(src: Path, target: Path) -> None:
    """``pip install --no-deps --target`` (offline build first, else pip's isolated build)."""
    base = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-input", "--quiet",
            "--disable-pip-version-check", "--target", str(target)]
    attempts = ([base + ["--no-build-isolation", str(src)]]
                if _can_build_without_isolation() else []) + [base + [str(src)]]
    errors = []
    for cmd in attempts:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if r.returncode == 0:
            return
        errors.append(r.stderr[-1500:])
    pytest.fail("could not pip install the example plugin:\n" + "\n---\n".join(errors))


@pytest.fixture
def fresh_registry(monkeypatch):
    from omnidiff.plugins import registry
    monkeypatch.setattr(registry, "_cache", {})
    yield
    for mod in [m for m in sys.modules if m.startswith("omnidiff_timeseries")]:
        del sys.modules[mod]


def test_timeseries_plugin_installs_lists_trains_and_generates(tmp_path, monkeypatch, capsys,
                                                                fresh_registry):
    # a copy, so the build leaves nothing (build/, *.egg-info) in the source tree
    src = tmp_path / "src"
    shutil.copytree(EXAMPLE, src, ignore=shutil.ignore_patterns("build", "*.egg-info",
                                                                "__pycache__"))
    site = tmp_path / "site"
    _pip_install(src, site)
    assert (site / "omnidiff_timeseries" / "conf" / "recipe" / "timeseries_sines.yaml").is_file()

    # a fresh process: the console script trains the plugin's own recipe
    run = tmp_path / "run"
    r = subprocess.run(
        _cli() + ["train", "recipe=timeseries_sines", f"out={run}", "trainer.max_steps=6",
                  "model.width=16", "model.depth=2", "data.train_size=256", "data.val_size=32",
                  "data.batch_size=32", "eval.n_samples=8", "eval.n_ref=32", "sampler.steps=4",
                  "trainer.enable_progress_bar=false"],
        capture_output=True, text=True, env=_env(site), cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert (run / "model.pt").is_file() and (run / "samples" / "samples.png").is_file()

    # this process: `omnidiff domains` shows it with its origin and recipe
    from omnidiff.cli.commands import main
    monkeypatch.syspath_prepend(str(site))
    assert main(["domains"]) == 0
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if ln.startswith("timeseries"))
    assert "omnidiff-timeseries 0.1.0" in line and "[ok]" in line
    assert "timeseries_sines" in out.split(line, 1)[1].strip().splitlines()[0]
    assert "points" in out  # built-in domains are listed beside it

    import omnidiff
    pipe = omnidiff.load(run / "model.pt")
    x = pipe.generate(4, steps=4, seed=0, cond=[0, 1, 2, 3], guidance=1.5)
    assert x.shape == (4, 1, 64) and torch.isfinite(x).all()
    files = pipe.save(x, tmp_path / "gen", cond=[0, 1, 2, 3])
    assert {f.suffix for f in files} >= {".png", ".npy"}


BROKEN = {
    # name: (module source, entry point object)
    "omnidiff_importfails": ("import this_module_does_not_exist_anywhere\n", "Domain"),
    "omnidiff_lacksmethods": (textwrap.dedent("""\
        class Domain:
            name = "lacksmethods"
            config_searchpath = None
            def build_data(self, **cfg):
                raise NotImplementedError
        """), "Domain"),
}


def test_broken_plugins_are_reported_by_name_in_a_fresh_process(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    names = {"omnidiff_importfails": "importfails", "omnidiff_lacksmethods": "lacksmethods"}
    for module, (source, attr) in BROKEN.items():
        (site / f"{module}.py").write_text(source)
        info = site / f"{module}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.0.1\n")
        (info / "entry_points.txt").write_text(
            f"[omnidiff.domains]\n{names[module]} = {module}:{attr}\n")
    env = _env(site)
    r = subprocess.run(_cli() + ["domains"], capture_output=True, text=True, env=env,
                       timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln and not ln[0].isspace()}
    assert "this_module_does_not_exist_anywhere" in lines["importfails"]
    assert "broken" in lines["importfails"] and "omnidiff_importfails 0.0.1" in lines["importfails"]
    assert "broken" in lines["lacksmethods"]
    assert "save_artifacts" in lines["lacksmethods"] and "metrics" in lines["lacksmethods"]
    assert "[ok]" in lines["points"]  # the others still work
    assert "points2d" in r.stdout
    assert "Traceback" not in r.stdout + r.stderr
    # selecting a broken domain fails with its name, in one line
    r = subprocess.run(_cli() + ["train", "domain=lacksmethods"], capture_output=True,
                       text=True, env=env, timeout=180)
    assert r.returncode == 2 and "lacksmethods" in r.stderr and "Traceback" not in r.stderr


def test_data_kwargs_reaches_only_functions_that_take_it():
    """Artifact writers and metrics may take ``data=`` (the data module); older plugins'
    functions without it are called as before."""
    from omnidiff.plugins.contract import data_kwargs

    def old(samples, out_dir, cond=None, prefix="samples"):
        return []

    def new(samples, out_dir, cond=None, prefix="samples", data=None):
        return []

    def anything(*args, **kwargs):
        return []

    dm = object()
    assert data_kwargs(old, dm) == {}
    assert data_kwargs(new, dm) == {"data": dm} and data_kwargs(anything, dm) == {"data": dm}
    assert data_kwargs(new, None) == {}
