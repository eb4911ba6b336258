"""Inference needs no Lightning: omnidiff.load of a model.pt, generate, save and the `sample`
command run in a process where importing Lightning fails."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from omnidiff.model_file import save_inference
from omnidiff.model_spec import ModelSpec
from omnidiff.plugins.check import domain_defaults
from omnidiff.plugins.registry import get_domain
from omnidiff.training.diffusion_module import DiffusionModule

BLOCK = """
import sys
class NoLightning:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("lightning", "lightning_fabric", "pytorch_lightning"):
            raise ImportError("Lightning is blocked in this test: " + name)
sys.meta_path.insert(0, NoLightning())
for m in [m for m in sys.modules if m.split(".")[0] == "lightning"]:
    del sys.modules[m]
"""


def _model_pt(tmp_path, domain: str, cond_spec, model: dict) -> str:
    data, defaults = domain_defaults(get_domain(domain))
    m = DiffusionModule(ModelSpec(domain, {**defaults, **model}, {"name": "cosine"},
                                  (1, 8, 8) if domain == "image" else (2,), cond_spec,
                                  prediction="v", data=data))
    return str(save_inference(m, tmp_path / f"{domain}.pt"))


def test_load_generate_save_and_sample_command_without_lightning(tmp_path):
    points = _model_pt(tmp_path, "points", 0, {"name": "mlp", "width": 8, "depth": 1})
    image = _model_pt(tmp_path, "image", 10, {"base_channels": 16, "channel_mult": [1],
                                               "attn_resolutions": [], "norm_groups": 8,
                                               "num_head_channels": 8, "num_res_blocks": 1})
    script = BLOCK + textwrap.dedent(f"""
        import omnidiff
        from omnidiff.cli import main
        for ckpt, kw in (({points!r}, {{}}), ({image!r}, {{"cond": [1, 2, 3]}})):
            pipe = omnidiff.load(ckpt, device="cpu")
            x = pipe.generate(3, steps=2, seed=0, **kw)
            assert x.shape[0] == 3 and bool(x.isfinite().all()), x.shape
            files = pipe.save(x, {str(tmp_path)!r} + "/out_" + pipe.domain_name)
            assert files and all(f.is_file() for f in files), files
        assert main(["sample", "checkpoint={points}", "n=4", "steps=2",
                     "out={tmp_path / 'cli'}"]) == 0
        assert not any(m.split(".")[0] == "lightning" for m in sys.modules)
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-3000:]
