"""Models written before the layers (omnidiff at commit f344e50) load and sample as they did.

``tests/data/main_f344e50/`` holds a points2d model (its ``model.pt`` and Lightning
``last.ckpt``), a consistency-distilled student of it, and a label-conditional latent model on
the 32x32 digits (with its embedded autoencoder; ``model.pt`` and ``last.ckpt``), written by
``make.py`` there with that commit's code, and ``samples.pt``: what that code drew from each
file (the request is stored beside the samples).
"""

from pathlib import Path

import pytest
import torch

import omnidiff
from omnidiff.model_file import read_checkpoint
from omnidiff.model_spec import ModelSpec

DATA = Path(__file__).parent / "data" / "main_f344e50"
EXPECTED = torch.load(DATA / "samples.pt", weights_only=True)


@pytest.fixture
def one_thread():
    """The samples were drawn on one thread (a different split can round apart)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_model_from_main_samples_identically(name, one_thread):
    pipe = omnidiff.load(DATA / name, device="cpu")
    x = pipe.generate(**EXPECTED[name]["kwargs"])
    # bit for bit on the machine that wrote them; a CPU with other vector units rounds apart by
    # a few 1e-6 (an AMD EPYC: 2.6e-6 on 2 of 3072 values of the latent model), while any change
    # to the weights, the schedule or the sampler moves them by far more than 1e-4
    torch.testing.assert_close(x, EXPECTED[name]["samples"], rtol=1e-4, atol=2e-5)
    assert x.std() > 0.05  # the weights matter: samples are not constant


@pytest.mark.parametrize("model", ["points2d", "digits32_latent"])
def test_ckpt_and_model_pt_of_one_run_are_one_spec(model):
    """A run's Lightning checkpoint and its model.pt read back into the same ModelSpec."""
    from_pt = ModelSpec.from_payload(read_checkpoint(DATA / f"{model}.model.pt"))
    from_ckpt = ModelSpec.from_payload(read_checkpoint(DATA / f"{model}.last.ckpt"))
    assert from_pt == from_ckpt
    assert from_pt.domain in ("points", "image") and from_pt.event_shape


def test_student_from_main_is_a_consistency_model():
    pipe = omnidiff.load(DATA / "points2d_cd.model.pt", device="cpu")
    assert pipe.spec.consistency == {"scale": 10.0}
    assert pipe.default_sampler["name"] == "consistency"
