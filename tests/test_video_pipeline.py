"""Video end to end: the recipe trains from the CLI and writes GIFs, frame strips and the
generation and continuation metrics; ``omnidiff.load`` continues clips; the sample command."""

from __future__ import annotations

import json

import pytest
import torch

import omnidiff
from omnidiff.cli.commands import main

TINY = ["trainer.max_steps=4", "trainer.enable_progress_bar=false", "threads=1",
        "data.train_size=16", "data.val_size=8", "data.batch_size=4", "eval.n_samples=4",
        "eval.n_ref=8", "data.frames=4", "data.size=16", "data.digit_size=8",
        "model.depth=2", "model.width=24", "model.heads=2", "sampler.steps=2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("video") / "run"
    assert main(["train", "recipe=video_moving_digits", f"out={out}", *TINY]) == 0
    return out


def test_recipe_writes_gifs_strips_and_both_kinds_of_metrics(run):
    final = json.loads((run / "metrics.json").read_text())["final"]
    for key in ("class_acc", "identity_acc", "com_accel", "fd", "cont_com_err",
                "hold_com_err", "cont_vs_hold"):
        assert key in final, key
    gifs = sorted((run / "samples" / "samples_gif").glob("*.gif"))
    assert len(gifs) == 4 and "given_2" in gifs[1].name
    assert (run / "samples" / "samples.png").is_file()


def test_pipeline_continues_a_clip(run):
    pipe = omnidiff.load(run / "model.pt")
    data = pipe.data(setup=True)
    clips, labels = data.reference(2)[0], torch.tensor([3, 5])
    cond = data.continuation(clips[:, :2], 2, labels)
    out = pipe.generate(cond=cond, steps=2, guidance=1.5, seed=0, progress=False)
    assert out.shape == (2, 4, 1, 16, 16) and torch.isfinite(out).all()
    gen = pipe.generate(3, steps=2, seed=0, progress=False,
                        cond={"label": torch.tensor([1, 2, 3]),
                              "frames": torch.zeros(3, 4, 1, 16, 16),
                              "mask": torch.zeros(3, 4)})
    assert gen.shape == (3, 4, 1, 16, 16)
    with pytest.raises(ValueError, match="1 <= k < 4"):
        data.continuation(clips, 4)


def test_sample_command_writes_gifs(run, tmp_path, capsys):
    out = tmp_path / "gen"
    code = main(["sample", f"checkpoint={run / 'model.pt'}", "steps=2", "seed=1", f"out={out}",
                 "n=3"])
    assert code == 0, capsys.readouterr().err
    assert len(list((out / "samples_gif").glob("*.gif"))) == 3 and (out / "samples.png").is_file()
