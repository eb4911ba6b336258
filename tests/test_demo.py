"""`omnidiff demo`: a valid PNG, a demo.json, and samples that match the mixture."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from omnidiff.cli.tools import cmd_demo
from omnidiff.tasks.demo import moment_errors, run_demo, spiral_mixture

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_run_demo_writes_a_png_and_small_errors(tmp_path, capsys):
    paths = run_demo(tmp_path / "out")
    png, js = paths
    assert png.name == "demo.png" and js.name == "demo.json"
    assert png.read_bytes()[:8] == PNG_MAGIC
    with Image.open(png) as im:
        im.verify()
    with Image.open(png) as im:
        assert im.format == "PNG" and im.width > 800 and im.height > 300
        assert im.width > im.height  # two rows of panels
    assert not list((tmp_path / "out").glob(".*tmp*"))  # atomic writes left nothing behind

    report = json.loads(js.read_text())
    assert report["sampler"] == "dpmpp_2m" and report["steps"] == 20 and report["n"] == 2000
    assert report["nfe"] == 20 and report["figure"] == "demo.png"
    assert report["mean_error"] < 0.12
    assert report["cov_rel_error"] < 0.08
    assert report["mode_weight_error"] < 0.03
    floor = report["monte_carlo_floor"]  # the same numbers for 2000 true samples
    assert report["cov_rel_error"] < 3 * floor["cov_rel_error"] + 0.02

    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("demo: dpmpp_2m, 20 steps")
    assert f"{report['mean_error']:.3f}" in out[0]


def test_moment_errors_detect_wrong_samples():
    mix = spiral_mixture()
    good, _ = mix.sample(4000, generator=torch.Generator().manual_seed(0))
    ok = moment_errors(good, mix)
    assert ok["mean_error"] < 0.08 and ok["cov_rel_error"] < 0.06 and ok["mode_weight_error"] < 0.02
    bad = moment_errors(0.8 * good, mix)  # too narrow
    assert bad["cov_rel_error"] > 0.3
    assert moment_errors(good + 0.3, mix)["mean_error"] > 0.3


def test_spiral_mixture_is_unit_scale():
    mix = spiral_mixture()
    assert mix.means.shape == (18, 2) and mix.covs.shape == (18, 2, 2)
    assert torch.allclose(mix.covs, mix.covs.transpose(1, 2))
    assert (torch.linalg.eigvalsh(mix.covs) > 0).all()
    assert 0.5 < float(mix.covariance().diagonal().mean()) < 2.5


def test_cmd_demo_options(tmp_path, capsys):
    assert cmd_demo([f"out={tmp_path}", "n=300", "steps=4", "sampler=heun", "seed=3",
                     "schedule=flow"]) == 0
    report = json.loads((tmp_path / "demo.json").read_text())
    assert report["sampler"] == "heun" and report["steps"] == 4 and report["n"] == 300
    assert report["nfe"] == 7 and report["schedule"]["name"] == "flow"
    assert report["seed"] == 3
    assert all(v == v for v in (report["mean_error"], report["cov_rel_error"]))  # no NaN
    assert capsys.readouterr().out.count("\n") == 1


@pytest.mark.parametrize("args, match", [
    (["steps"], "key=value"),
    (["colour=red"], "unknown option 'colour'.*n, out, sampler, schedule, seed, steps"),
    (["n=many"], "integer"),
    (["sampler=dpm", "n=50", "steps=2"], "unknown sampler 'dpm'; choose one of: .*ddpm"),
    (["schedule=quad", "n=50", "steps=2"], "unknown schedule 'quad'"),
    (["steps=0", "n=50"], "steps must be an integer >= 1"),
    (["n=1"], "n must be"),
])
def test_cmd_demo_bad_input_is_one_clear_line(tmp_path, args, match):
    with pytest.raises(ValueError, match=match) as info:
        cmd_demo([f"out={tmp_path}", *args])
    assert "\n" not in str(info.value)


def test_cli_demo_when_wired(tmp_path, capsys):
    import omnidiff.cli.commands as cli

    if "demo" not in getattr(cli, "COMMANDS", {}):
        pytest.skip("`omnidiff demo` is not wired into omnidiff.cli yet")
    assert cli.main(["demo", f"out={tmp_path}", "n=200", "steps=3"]) == 0
    assert (tmp_path / "demo.png").read_bytes()[:8] == PNG_MAGIC
    assert "demo:" in capsys.readouterr().out
