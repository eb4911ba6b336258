"""The ``omnidiff`` command: recipes end to end, listings, plugins, one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from omnidiff.cli.commands import main

# small enough for seconds on 2 CPU cores
FAST = ["trainer.max_steps=12", "trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "eval.n_samples=64", "eval.n_ref=64", "threads=1", "data.val_size=32",
        "data.train_size=256", "eval.every_n_steps=6"]
FAST_RECIPE = {
    "points2d": ["model.width=32", "model.depth=1", "data.batch_size=64"],
    "points_digits": ["model.width=16", "model.depth=1", "model.heads=2", "data.num_points=16",
                      "data.batch_size=16", "eval.n_samples=16", "eval.n_ref=16"],
}


def _run(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


def _check_run(run: Path) -> None:
    for name in ("config.yaml", "model.pt", "metrics.json", "loss.png", "checkpoints/last.ckpt",
                 "logs/metrics.csv"):
        assert (run / name).is_file(), name
    assert list((run / "samples").glob("*.png")), "no sample artifacts"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["global_step"] == 12
    assert metrics["final"] and "loss_first" in metrics
    assert [h["step"] for h in metrics["history"]] == [6, 12]  # periodic sampling
    assert list((run / "samples").glob("step0000006*"))
    torch.load(run / "model.pt", weights_only=True)
    torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.mark.parametrize("recipe", sorted(FAST_RECIPE))
def test_recipe_trains_and_samples_end_to_end(recipe, tmp_path, capsys):
    run = tmp_path / "run"
    code, out, err = _run(["train", f"recipe={recipe}", f"out={run}", *FAST,
                           *FAST_RECIPE[recipe]], capsys)
    assert code == 0, err
    assert "model:" in out
    _check_run(run)
    gen = tmp_path / "gen"
    code, out, err = _run(["sample", f"checkpoint={run / 'model.pt'}", "n=8", "steps=3",
                           "seed=1", f"out={gen}", "sampler=ddim", "metrics=true", "n_ref=16"],
                          capsys)
    assert code == 0, err
    assert list(gen.glob("*.png")) and (gen / "metrics.json").is_file()
    if recipe == "points_digits":  # class-conditional: cond and guidance
        code, _, err = _run(["sample", f"checkpoint={run / 'model.pt'}", "n=4", "steps=2",
                             "cond=[0,1,2,3]", "guidance=2.0", f"out={gen / 'c'}"], capsys)
        assert code == 0, err
        assert np.load(gen / "c" / "samples_cond.npy").tolist() == [0, 1, 2, 3]


def test_train_on_users_npy(tmp_path, capsys):
    rng = np.random.default_rng(0)
    pts = np.concatenate([rng.normal((-2, 0), 0.3, (300, 2)),
                          rng.normal((2, 0), 0.3, (300, 2))]).astype(np.float32)
    path = tmp_path / "mine.npy"
    np.save(path, pts)
    run = tmp_path / "run"
    code, out, err = _run(["train", "recipe=points2d", f"data.path={path}", f"out={run}", *FAST,
                           *FAST_RECIPE["points2d"]], capsys)
    assert code == 0, err
    _check_run(run)
    cfg = (run / "config.yaml").read_text()
    assert str(path) in cfg
    code, _, err = _run(["sample", f"checkpoint={run}", "n=5", "steps=2",
                         f"out={tmp_path / 'gen'}"], capsys)
    assert code == 0, err
    assert np.load(tmp_path / "gen" / "samples.npy").shape == (5, 2)


def test_recipes_and_domains_listing(capsys):
    code, out, _ = _run(["recipes"], capsys)
    assert code == 0
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln[:1].strip()}
    assert "points2d" in lines and "points_digits" in lines
    assert "moons" in lines["points2d"].lower()  # the one-line description
    code, out, _ = _run(["domains"], capsys)
    assert code == 0
    assert "points" in out and "[ok]" in out and "points2d" in out


# ---- errors: one line, exit code 2, no traceback ----------------------------------------------

@pytest.mark.parametrize("args, needle", [
    (["train", "recipe=nope"], "unknown recipe 'nope'"),
    (["train", "recipe=points2d", "domain=nope"], "unknown domain 'nope'"),
    (["train", "recipe=points2d", "schedule=nope"], "unknown schedule 'nope'"),
    (["train", "recipe=points2d", "sampler.name=nope"], "unknown sampler 'nope'"),
    (["train", "recipe=points2d", "nope.key=1"], "+KEY=VALUE"),
    (["train", "recipe=points2d", "trainer.nope=1"], "trainer has no option 'nope'"),
    (["train", "recipe=points2d", "max_steps"], "bad override"),
    (["train", "recipe=points2d", "data.name=nope"], "unknown density 'nope'"),
    (["sample"], "checkpoint=PATH"),
    (["sample", "checkpoint=/nonexistent/model.pt"], "not found"),
    (["sample", "checkpoint=x", "bogus=1"], "unknown option 'bogus'"),
    (["frobnicate"], "unknown command"),
])
def test_errors_are_one_line(args, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = _run(args, capsys)
    assert code == 2
    assert needle in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not list(tmp_path.iterdir())  # a run that cannot start leaves no folder behind


def test_not_a_checkpoint_and_cond_for_unconditional(tmp_path, capsys):
    junk = tmp_path / "notes.txt"
    junk.write_text("not a checkpoint")
    code, _, err = _run(["sample", f"checkpoint={junk}"], capsys)
    assert code == 2 and "not an omnidiff checkpoint" in err
    assert len(err.strip().splitlines()) == 1

    from omnidiff.model_file import save_inference
    from omnidiff.model_spec import ModelSpec
    from omnidiff.training.diffusion_module import DiffusionModule
    m = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 8, "depth": 1},
                                  {"name": "cosine"}, (2,),
                                  data={"kind": "density", "name": "moons"}))
    ckpt = save_inference(m, tmp_path / "model.pt")
    code, _, err = _run(["sample", f"checkpoint={ckpt}", "cond=1", "n=2"], capsys)
    assert code == 2 and "unconditional" in err and len(err.strip().splitlines()) == 1


def test_sample_with_a_condition_file(tmp_path, capsys):
    """cond=FILE: a .npy of conditions, or of data the domain computes its condition from
    (affine clouds: centroid and log RMS radius); n follows from the file."""
    run = tmp_path / "run"
    code, _, err = _run(["train", "domain=points", "data.kind=cloud", "data.name=shapes",
                         "data.affine=true", "data.conditional=false", "data.num_points=16",
                         "model.name=set_transformer", "+model.width=16", "+model.depth=1",
                         "+model.heads=2", "data.batch_size=16", f"out={run}", *FAST,
                         "eval.n_samples=8", "eval.n_ref=16"], capsys)
    assert code == 0, err
    from omnidiff_domains.points.affine import cloud_properties
    from omnidiff_domains.points.data import PointsData

    clouds, conds = PointsData(kind="cloud", name="shapes", num_points=16, affine=True,
                               conditional=False, train_size=8).reference(
        5, torch.Generator().manual_seed(3))
    np.save(tmp_path / "clouds.npy", clouds.numpy())
    np.save(tmp_path / "conds.npy", conds[:3].numpy())
    for name, n in (("clouds.npy", 5), ("conds.npy", 3)):
        out = tmp_path / f"gen_{name}"
        code, stdout, err = _run(["sample", f"checkpoint={run / 'model.pt'}",
                                  f"cond={tmp_path / name}", "steps=2", f"out={out}"], capsys)
        assert code == 0, err
        assert np.load(out / "samples.npy").shape == (n, 16, 2)
        used = np.load(out / "samples_affine.npy")
        want = cloud_properties(clouds.double()) if name == "clouds.npy" else conds[:3]
        np.testing.assert_allclose(used, want.numpy(), rtol=1e-5, atol=1e-5)
    (tmp_path / "x.wav").write_bytes(b"RIFF")
    np.save(tmp_path / "bad.npy", np.zeros((3, 4), dtype=np.float32))
    for cond, needle in (("abc", "neither class labels"), (str(tmp_path / "x.wav"),
                                                           "cannot read .wav"),
                         (str(tmp_path / "bad.npy"), "expected float32 (3,)"),
                         (str(tmp_path / "missing.npy"), "not found")):
        code, _, err = _run(["sample", f"checkpoint={run / 'model.pt'}", f"cond={cond}",
                             "steps=2", f"out={tmp_path / 'never'}"], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "never").exists()


def test_console_script_exit_code_and_no_traceback(tmp_path):
    exe = Path(sys.executable).with_name("omnidiff")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "omnidiff.cli"]
    r = subprocess.run(cmd + ["train", "recipe=does_not_exist"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 2
    assert "unknown recipe" in r.stderr and "Traceback" not in r.stderr
    assert "points2d" in r.stderr  # lists the available ones


# ---- third-party plugins: configs, recipes, broken plugins ------------------------------------

TOY = '''
import torch
from torch import nn
import lightning.pytorch as pl
from torch.utils.data import DataLoader, TensorDataset
from omnidiff.io import atomic_torch_save
from omnidiff.nn import ClassEmbedding, TimeEmbedding


class Data(pl.LightningDataModule):
    def __init__(self, n=512, batch_size=64):
        super().__init__()
        self.event_shape, self.num_classes, self.n, self.bs = (2,), 0, n, batch_size

    def _draw(self, n, g):
        return torch.randn(n, 2, generator=g) * 0.5 + 1.0

    def train_dataloader(self):
        x = self._draw(self.n, torch.Generator().manual_seed(0))
        return DataLoader(TensorDataset(x), batch_size=self.bs, shuffle=True,
                          collate_fn=lambda b: {"x": torch.stack([i[0] for i in b])})

    def reference(self, n, generator=None):
        return self._draw(n, generator or torch.Generator().manual_seed(1)), None


class Net(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.t, self.c = TimeEmbedding(width), ClassEmbedding(0, width)
        self.inp, self.out = nn.Linear(2, width), nn.Sequential(nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, t, cond=None, drop=None):
        return self.out(self.inp(x) + self.t(t) + self.c(cond, drop, x.shape[0], x.device))


class ToyDomain:
    name = "toy"
    config_searchpath = "pkg://omnidiff_toy_plugin.conf"

    def build_data(self, **cfg):
        return Data(**cfg)

    def build_network(self, event_shape, num_classes, **cfg):
        return Net(**cfg)

    def save_artifacts(self, samples, out_dir, cond=None, prefix="samples"):
        from pathlib import Path
        return [atomic_torch_save(samples, Path(out_dir) / f"{prefix}.pt")]

    def metrics(self, samples, reference, cond=None, ref_cond=None):
        return {"mean_err": float((samples.mean(0) - reference.mean(0)).norm())}
'''


def _write_plugin(root: Path) -> None:
    pkg = root / "omnidiff_toy_plugin"
    (pkg / "conf" / "domain").mkdir(parents=True)
    (pkg / "conf" / "recipe").mkdir()
    (pkg / "__init__.py").write_text(TOY)
    (pkg / "conf" / "__init__.py").write_text("")
    (pkg / "conf" / "domain" / "toy.yaml").write_text(
        "# @package _global_\nmodel:\n  width: 16\ndata:\n  n: 512\n  batch_size: 64\n")
    (pkg / "conf" / "recipe" / "toy_quick.yaml").write_text(textwrap.dedent("""\
        # @package _global_
        # A third-party toy Gaussian, from a plugin's own config folder.
        defaults:
          - override /domain: toy
        trainer:
          max_steps: 5
        """))
    broken = root / "omnidiff_broken_plugin.py"
    broken.write_text("raise ImportError('this plugin is broken on purpose')\n")
    for name, eps in (("omnidiff_toy_plugin", "toy = omnidiff_toy_plugin:ToyDomain"),
                      ("omnidiff_broken_plugin", "broken = omnidiff_broken_plugin:Domain")):
        info = root / f"{name}-0.0.1.dist-info"
        info.mkdir()
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.0.1\n")
        (info / "entry_points.txt").write_text(f"[omnidiff.domains]\n{eps}\n")


@pytest.fixture
def plugins(tmp_path, monkeypatch):
    from omnidiff.plugins import registry
    root = tmp_path / "site"
    root.mkdir()
    _write_plugin(root)
    monkeypatch.syspath_prepend(str(root))
    monkeypatch.setattr(registry, "_cache", {})
    yield root
    for mod in [m for m in sys.modules if m.startswith("omnidiff_toy_plugin")]:
        del sys.modules[mod]


def test_third_party_plugin_recipes_and_broken_plugin(plugins, tmp_path, capsys):
    code, out, _ = _run(["domains"], capsys)
    assert code == 0
    assert "toy" in out and "toy_quick" in out
    assert "broken" in out and "broken on purpose" in out
    assert "points" in out  # the others are still listed
    code, out, _ = _run(["recipes"], capsys)
    assert "toy_quick" in out and "third-party toy" in out
    run = tmp_path / "toyrun"
    code, out, err = _run(["train", "recipe=toy_quick", f"out={run}", "eval.n_samples=16",
                           "eval.n_ref=16", "trainer.enable_progress_bar=false"], capsys)
    assert code == 0, err
    assert (run / "model.pt").is_file()
    assert json.loads((run / "metrics.json").read_text())["final"]["mean_err"] >= 0
    code, _, err = _run(["train", "domain=broken"], capsys)
    assert code == 2 and "broken on purpose" in err
