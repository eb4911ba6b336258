"""Explicit and calibrated time grids: checks, exactness, held-out accuracy, storage, CLI."""

from __future__ import annotations

import pytest
import torch

import omnidiff
from omnidiff.cli.commands import main
from omnidiff.core.gaussian_mixture import random_mixture
from omnidiff.core.schedules import get_schedule
from omnidiff.errors import PipelineError
from omnidiff.model_file import save_inference, write_grids
from omnidiff.model_spec import ModelSpec
from omnidiff.samplers import GRIDS, sample, timesteps
from omnidiff.samplers.calibrate import calibrate_grid, grid_error, grid_key
from omnidiff.training.diffusion_module import DiffusionModule

SCHED = get_schedule("linear")


def _noise(n, d, seed):
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.mark.parametrize("sampler, opts", [("dpmpp_2m", {}), ("unipc", {"order": 3}),
                                           ("heun", {}), ("ddim", {})])
def test_explicit_grid_equal_to_a_named_grid_gives_identical_samples(sampler, opts):
    model = random_mixture(3, width="wide").model(SCHED, "eps")
    noise = _noise(32, 3, 0)
    for name in ("logsnr", "karras", "trailing"):
        a = sample(model, noise, schedule=SCHED, prediction="eps", sampler=sampler, steps=6,
                   grid=name, **opts)
        ts = timesteps(SCHED, 6, name)
        b = sample(model, noise, schedule=SCHED, prediction="eps", sampler=sampler, grid=ts,
                   **opts)
        c = sample(model, noise, schedule=SCHED, prediction="eps", sampler=sampler,
                   grid=ts[:-1].tolist(), **opts)  # the final 0 is appended
        assert torch.equal(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("grid, steps, needle", [
    ([1.0, 0.5, 0.7, 0.0], None, "strictly decreasing"),
    ([1.0, 0.5, 0.5, 0.0], None, "strictly decreasing"),
    ([1.5, 0.5, 0.0], None, "trained range [t_min, t_max] = [0.001, 1]"),
    ([1.0, 0.5, -0.1], None, "trained range"),
    ([1.0, 0.0005, 0.0], None, "trained range"),
    ([], None, "at least one evaluation time"),
    ([0.0], None, "at least one evaluation time"),
    ([[1.0, 0.5]], None, "must be 1D"),
    ([1.0, float("nan"), 0.0], None, "non-finite"),
    ([1.0, 0.5, 0.0], 5, "does not match the explicit grid's 2 steps"),
    ("nope", None, "unknown grid 'nope'"),
])
def test_bad_grids_fail_with_one_line(grid, steps, needle):
    model = random_mixture(2, width="wide").model(SCHED, "eps")
    with pytest.raises(ValueError) as info:
        sample(model, _noise(4, 2, 0), schedule=SCHED, prediction="eps", grid=grid,
               steps=steps)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_calibrated_grid_beats_its_start_on_held_out_noise_and_is_deterministic():
    """Fitted on 96 samples, judged on 256 others of a narrow 8D mixture at 4 NFE: the
    calibrated grid must be clearly better than the best named grid it started from (and
    than every named grid); a search that did nothing, or made things worse, fails."""
    gm = random_mixture(8, width="narrow", seed=3)
    model = gm.model(SCHED, "eps")
    cal, held = _noise(96, 8, 1), _noise(256, 8, 2)
    st: dict = {}
    kw = dict(schedule=SCHED, prediction="eps", sampler="dpmpp_2m", steps=4, max_evals=120)
    grid = calibrate_grid(model, cal, stats=st, **kw)
    assert grid.shape == (5,) and grid[-1] == 0 and (grid[1:] < grid[:-1]).all()
    assert st["error"]["median"] < st["start_error"]["median"]  # on the calibration noise
    ref = sample(model, held, schedule=SCHED, prediction="eps", sampler="rk45", rtol=1e-9,
                 atol=1e-9)
    err = grid_error(model, held, ref, grid, schedule=SCHED, prediction="eps",
                     sampler="dpmpp_2m").median()
    named = {g: grid_error(model, held, ref, g, schedule=SCHED, prediction="eps",
                           sampler="dpmpp_2m", steps=4).median()
             for g in GRIDS if g != "diffwave"}  # every general-purpose named grid
    assert err < 0.7 * named[st["start"]]
    assert err < min(named.values())
    again = calibrate_grid(model, cal, **kw)
    assert torch.equal(grid, again)  # deterministic given the noise


def test_calibration_refuses_what_it_cannot_fit():
    model = random_mixture(2, width="wide").model(SCHED, "eps")
    noise = _noise(8, 2, 0)
    for kw, needle in [({"sampler": "ddpm"}, "deterministic sampler"),
                       ({"sampler": "ddim", "eta": 0.5}, "deterministic sampler"),
                       ({"steps": 1}, "steps must be an integer >= 2"),
                       ({"sampler": "nope"}, "unknown sampler")]:
        with pytest.raises(ValueError, match=needle):
            calibrate_grid(model, noise, schedule=SCHED, prediction="eps",
                           **{"steps": 3, **kw})


def test_grid_keys_name_the_solver_options():
    assert grid_key("dpmpp_2m", 5) == "dpmpp_2m:5"
    assert grid_key("unipc", 10, {"variant": "bh1", "order": 3, "clip_x0": 1.0,
                                  "grid": None}) == "unipc[order=3,variant=bh1]:10"


@pytest.fixture(scope="module")
def points_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    m = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 16, "depth": 1},
                                  {"name": "cosine"}, (2,), prediction="v",
                                  data={"kind": "density", "name": "moons", "train_size": 256,
                                        "val_size": 64, "batch_size": 64}))
    return save_inference(m, tmp_path_factory.mktemp("cal") / "model.pt")


def test_pipeline_stores_and_uses_calibrated_grids(points_ckpt, tmp_path):
    pipe = omnidiff.load(points_ckpt, device="cpu")
    with pytest.raises(PipelineError, match="omnidiff calibrate"):
        pipe.generate(8, steps=3, grid="calibrated")
    st: dict = {}
    grid = pipe.calibrate("dpmpp_2m", 3, n=64, max_evals=24, stats=st)
    assert st["error"]["median"] <= st["start_error"]["median"]
    dest = write_grids(points_ckpt, pipe.info["grids"], tmp_path / "model.pt")
    again = omnidiff.load(dest, device="cpu")
    x = again.generate(16, steps=3, seed=0)
    assert again.last_grid == "calibrated"
    assert torch.equal(x, again.generate(16, seed=0, grid=grid))  # steps follow the grid
    assert torch.equal(x, again.generate(16, steps=3, seed=0, grid="calibrated"))
    y = again.generate(16, steps=3, seed=0, grid="logsnr")  # a named grid overrides it
    assert again.last_grid == "logsnr" and not torch.equal(x, y)
    again.generate(16, steps=4, seed=0)  # no grid for 4 steps: the schedule's default one
    assert again.last_grid == "logsnr"


def _run(args, capsys):
    code = main(args)
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_calibrate_then_sample(points_ckpt, tmp_path, capsys):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(points_ckpt.read_bytes())
    code, out, err = _run(["calibrate", f"checkpoint={ckpt}", "steps=[3,4]", "n=32",
                           "max_evals=12"], capsys)
    assert code == 0, err
    assert "dpmpp_2m at 3 steps" in out and "wrote 2 grid(s)" in out
    assert set(torch.load(ckpt, weights_only=True)["grids"]) == {"dpmpp_2m:3", "dpmpp_2m:4"}
    code, out, err = _run(["sample", f"checkpoint={ckpt}", "steps=3", "n=8",
                           f"out={tmp_path / 's'}"], capsys)
    assert code == 0 and "on the calibrated grid" in out
    for args, needle in [(["steps=1"], "integer >= 2"), (["sampler=ddpm"], "deterministic"),
                         (["steps=[3,x]"], "integer >= 2"), (["n=abc"], "n='abc'"),
                         (["rtol=-1"], "rtol=-1: give a number"),
                         (["max_evals=2.5"], "max_evals=2.5: give an integer")]:
        code, _, err = _run(["calibrate", f"checkpoint={ckpt}", *args], capsys)
        assert code == 2 and needle in err and len(err.strip().splitlines()) == 1
