"""model.pt files written before conditions of every kind (format 1: only ``num_classes``)
still load and sample exactly as they did.

``tests/data/legacy/<name>.pt`` were written by omnidiff at commit 3318616 (format 1) from tiny
runs of the points2d, points_digits and image_digits recipes, every weight then randomised so
that the samples depend on all of them; ``<name>.samples.pt`` holds the samples that code drew
(ddim, 3 steps, seed 0; guidance 2 with labels [1, 2, 3, 4] for the conditional ones).
"""

from pathlib import Path

import pytest
import torch

import omnidiff
from omnidiff.core.conditions import LabelCond, NoCond
from omnidiff.model_file import read_checkpoint

DATA = Path(__file__).parent / "data" / "legacy"
CASES = ["points_mlp", "points_cloud_cond", "image_cond"]


@pytest.mark.parametrize("name", CASES)
def test_format1_model_pt_loads_and_samples_identically(name):
    payload = read_checkpoint(DATA / f"{name}.pt")
    assert payload["format_version"] == 1 and "cond" not in payload  # really the old format
    pipe = omnidiff.load(DATA / f"{name}.pt", device="cpu")
    expected = torch.load(DATA / f"{name}.samples.pt", weights_only=True)
    spec = pipe.cond_spec
    assert isinstance(spec, LabelCond if payload["num_classes"] else NoCond)
    assert spec.num_classes == payload["num_classes"]
    x = pipe.generate(**expected["kwargs"])
    torch.testing.assert_close(x, expected["samples"], rtol=1e-5, atol=1e-5)
    assert x.std() > 0.1  # the weights matter: samples are not the bare noise map


def test_format1_lightning_hparams_read_as_labels(tmp_path):
    """A Lightning checkpoint of an older run (hyper-parameter num_classes, no cond_spec)."""
    old = read_checkpoint(DATA / "points_cloud_cond.pt")
    hp = {"domain": old["domain"], "model_cfg": old["model"], "schedule_cfg": old["schedule"],
          "event_shape": old["event_shape"], "num_classes": old["num_classes"],
          "prediction": old["prediction"], "sigma_data": old["sigma_data"],
          "data_cfg": old["data"]}
    ckpt = {"state_dict": {f"model.{k}": v for k, v in old["state_dict"].items()},
            "hyper_parameters": hp, "global_step": 3}
    torch.save(ckpt, tmp_path / "old.ckpt")
    payload = read_checkpoint(tmp_path / "old.ckpt")
    assert payload["cond"] == {"kind": "label", "num_classes": 10}
    a = omnidiff.load(tmp_path / "old.ckpt", device="cpu").generate(3, steps=2, cond=1, seed=1)
    b = omnidiff.load(DATA / "points_cloud_cond.pt", device="cpu").generate(3, steps=2, cond=1,
                                                                           seed=1)
    torch.testing.assert_close(a, b)
