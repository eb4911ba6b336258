"""The command line's promise, swept over every command: a mistake ends with exit status 2 and
one line on stderr that names the bad option (never a traceback, never exit 0)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omnidiff.cli.commands import main
from omnidiff.model_file import save_inference
from omnidiff.model_spec import ModelSpec
from omnidiff.training.diffusion_module import DiffusionModule

DATA = {"kind": "density", "name": "moons", "train_size": 256, "val_size": 32, "batch_size": 32}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("mistakes")

    def model(name, cond_spec=0):
        m = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 8, "depth": 1},
                                      {"name": "cosine"}, (2,), cond_spec, prediction="v",
                                      data=DATA))
        return save_inference(m, d / name)

    f = {"uncond": model("uncond.pt"), "cond": model("cond.pt", 3)}
    nan = torch.load(f["uncond"], weights_only=True)
    nan["state_dict"] = {k: torch.full_like(v, float("nan"))
                         for k, v in nan["state_dict"].items()}
    nan.pop("weights_sha256")
    torch.save(nan, d / "nan_weights.pt")
    torch.save({k: v for k, v in nan.items() if k != "domain"}, d / "no_domain.pt")
    np.save(d / "nan.npy", np.full((8, 2), np.nan, np.float32))
    np.save(d / "inf.npy", np.full((8, 2), np.inf, np.float32))
    np.save(d / "wide.npy", np.zeros((8, 3), np.float32))
    np.save(d / "huge64.npy", np.full((8, 2), 1e300))
    (d / "a_file.txt").write_text("not a folder")
    return {k: str(v) for k, v in {**f, **{p.stem: p for p in d.iterdir()}}.items()}


def _mistakes(f):
    s, c = f"checkpoint={f['uncond']}", f"checkpoint={f['cond']}"
    no_cuda = [] if torch.cuda.is_available() else [(["sample", s, "device=cuda"], "device"),
                                                    (["train", "recipe=points2d", "trainer=gpu"],
                                                     "accelerator")]
    return no_cuda + [
        # sample
        (["sample", s, "n=0"], "n=0"), (["sample", s, "n=2.5"], "n=2.5"),
        (["sample", s, "n=abc"], "n="), (["sample", s, "steps=0"], "steps=0"),
        (["sample", s, "steps=2.7"], "steps=2.7"), (["sample", s, "seed=2**70"], "seed="),
        (["sample", s, f"seed={2 ** 70}"], "seed="), (["sample", s, "seed=-1"], "seed="),
        (["sample", s, "guidance=nan"], "guidance"), (["sample", s, "guidance=.nan"], "guidance"),
        (["sample", c, "guidance=-1"], "guidance"), (["sample", s, "guidance=2"], "guidance"),
        (["sample", c, "cond=abc"], "cond"), (["sample", c, "cond=missing.npy"], "missing.npy"),
        (["sample", c, "cond=7"], "label"), (["sample", s, "device=foo"], "device"),
        (["sample", s, f"out={f['a_file']}"], "out="), (["sample", s, "eta=0.5"], "eta"),
        (["sample", s, "sampler=nope"], "sampler"), (["sample", s, "grid=nope"], "grid"),
        (["sample", s, "clip_x0=abc"], "clip_x0"), (["sample", s, "batch_size=0"], "batch_size"),
        (["sample", s, "metrics=true", "n_ref=0"], "n_ref"),
        (["sample", f"checkpoint={f['nan_weights']}"], "NaN"),
        (["sample", f"checkpoint={f['no_domain']}"], "domain"),
        (["sample", "checkpoint=/no/such/model.pt"], "not found"),
        (["sample", f"checkpoint={f['a_file']}"], "not an omnidiff checkpoint"),
        (["sample", s, "bogus=1"], "bogus"), (["sample"], "checkpoint"),
        (["sample", s, "n"], "key=value"),
        # likelihood
        (["likelihood", s, "data=reference", "n=0"], "n=0"),
        (["likelihood", s, "data=/no/such.npy"], "data="),
        (["likelihood", s, f"data={f['nan']}"], "NaN"),
        (["likelihood", s, f"data={f['inf']}"], "NaN or inf"),
        (["likelihood", s, f"data={f['huge64']}"], "out of range"),
        (["likelihood", s, f"data={f['wide']}"], "shape"),
        (["likelihood", s, "data=reference", "steps=0"], "steps"),
        (["likelihood", s, "data=reference", "rtol=-1"], "rtol"),
        (["likelihood", s, "data=reference", "solver=nope"], "solver"),
        (["likelihood", s, "data=reference", "divergence=nope"], "divergence"),
        (["likelihood", s, "data=reference", "device=foo"], "device"),
        # calibrate
        (["calibrate", s, "steps=1"], "steps"), (["calibrate", s, "sampler=ddpm"], "ddpm"),
        (["calibrate", s, "n=1"], "n=1"), (["calibrate", s, "rtol=0"], "rtol"),
        (["calibrate", s, "device=foo"], "device"),
        # train: every mistake is found before any work
        (["train", "recipe=nope"], "recipe"), (["train", "domain=nope"], "domain"),
        (["train", "recipe=points2d", "trainer.max_steps=abc"], "trainer.max_steps"),
        (["train", "recipe=points2d", "optim.lr=abc"], "optim.lr"),
        (["train", "recipe=points2d", "sampler.steps=0"], "sampler.steps"),
        (["train", "recipe=points2d", "eval.n_samples=0"], "eval.n_samples"),
        (["train", "recipe=points2d", "trainer.devices=0"], "trainer.devices"),
        (["train", "recipe=points2d", "threads=-1"], "threads"),
        (["train", "recipe=points2d", "loss.p_uncond=2"], "loss.p_uncond"),
        (["train", "recipe=points2d", "+loss.foo=1"], "loss.foo"),
        (["train", "recipe=points2d", "+optim.foo=1"], "optim.foo"),
        (["train", "recipe=points2d", "+sampler.order=3"], "order"),
        (["train", "recipe=points2d", "+trainer.foo=1"], "foo"),
        (["train", "recipe=points2d", "trainer.precision=17"], "precision"),
        (["train", "recipe=points2d", "nokey=1"], "nokey"),
        (["train", "recipe=points2d", "trainer.max_step=3"], "did you mean trainer.max_steps"),
        (["train", "recipe=points2d", "trainer.detect_anomaly=true"], "+trainer.detect_anomaly"),
        (["train", "recipe=points2d", f"data.path={f['nan']}"], "NaN"),
        (["train", "recipe=points2d", f"data.path={f['huge64']}"], "out of range"),
        (["train", "recipe=points2d", "data.path=/no/such.npy"], "/no/such.npy"),
        (["train", "recipe=points2d", "model.width=abc"], "model"),
        (["train", "recipe=points2d", "overwrite=maybe"], "overwrite"),
        (["train", "recipe=points2d", "resume=/no/such.ckpt"], "/no/such.ckpt"),
        (["train", "--bogus"], "--bogus"),
        # the rest
        (["demo", "n=abc"], "n"), (["demo", "steps=0"], "steps"), (["domains", "x"], "domains"),
        (["recipes", "x"], "recipes"), (["nope"], "nope"),
    ]


def test_every_mistake_is_one_line_with_exit_status_2(files, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # nothing a mistake might write lands in the repository
    monkeypatch.delenv("OMNIDIFF_DEBUG", raising=False)
    failures = []
    for args, needle in _mistakes(files):
        try:
            code = main(args)
        except BaseException as exc:  # a traceback for the user
            failures.append(f"{args}: raised {type(exc).__name__}: {exc}")
            continue
        err = capsys.readouterr().err.strip().splitlines()
        last = err[-1] if err else ""
        if code != 2 or not last.startswith("omnidiff: error:") or needle not in last:
            failures.append(f"{args}: exit {code}, stderr {last!r} (expected {needle!r})")
    assert not failures, "\n".join(failures)
    assert not list(tmp_path.iterdir()), list(tmp_path.iterdir())  # nothing half-written
