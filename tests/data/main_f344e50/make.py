"""Writes this folder's models with omnidiff as it was at commit f344e50 (before the layers),
and the samples that code drew from them. Kept to show how the files were made; it imports
that commit's module paths. Run from a checkout of f344e50 (PYTHONPATH with `omnidiff` and
`omnidiff_domains` pointing at its `omnidiff/` and `domains/`)::

    python make.py OUT_DIR
"""

import shutil
import sys
from pathlib import Path

import torch

import omnidiff
from omnidiff.config import compose
from omnidiff.distillation import distill_config
from omnidiff.training import train  # (f344e50: omnidiff.training held train)

out = Path(sys.argv[1])
runs = out / "runs"
quick = ["threads=1", "eval.n_samples=16", "eval.n_ref=32", "trainer.enable_progress_bar=false",
         "trainer.check_val_every_n_epoch=1000", "optim.warmup=5"]

points = train(compose("points2d", [f"out={runs / 'points'}", "trainer.max_steps=40", "model.width=32",
                                    "data.train_size=512", *quick]))
student = train(distill_config([f"teacher={points / 'model.pt'}", f"out={runs / 'points_cd'}",
                                "trainer.max_steps=10", "data.train_size=512", *quick]))
ae = train(compose("image_digits32_ae", [f"out={runs / 'ae'}", "trainer.max_steps=6",
                                         "ae.channels=[8,8,8]", *quick]))
latent = train(compose("image_digits32_latent", [
    f"out={runs / 'latent'}", f"autoencoder={ae / 'model.pt'}", "trainer.max_steps=6",
    "model.base_channels=8", "model.num_res_blocks=1", "model.attn_resolutions=[]", *quick]))

files = {"points2d.model.pt": points / "model.pt",
         "points2d.last.ckpt": points / "checkpoints" / "last.ckpt",
         "points2d_cd.model.pt": student / "model.pt",
         "digits32_latent.model.pt": latent / "model.pt",
         "digits32_latent.last.ckpt": latent / "checkpoints" / "last.ckpt"}
requests = {"points2d": dict(n=6, sampler="ddim", steps=3, seed=0),
            "points2d_cd": dict(n=6, seed=0),
            "digits32_latent": dict(sampler="ddim", steps=3, seed=0, guidance=2.0,
                                    cond=torch.tensor([1, 2, 3]))}
expected = {}
for name, src in files.items():
    shutil.copy(src, out / name)
    model = name.split(".")[0]
    x = omnidiff.load(out / name, device="cpu").generate(**requests[model])
    expected[name] = {"kwargs": requests[model], "samples": x}
torch.save(expected, out / "samples.pt")
shutil.rmtree(runs)
print({k: tuple(v["samples"].shape) for k, v in expected.items()})
