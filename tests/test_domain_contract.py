"""The domain contract (``omnidiff.testing.check_domain``) over every registered domain.

Heavy domains run with small overrides (``SMALL``); a third-party domain installed in the
environment is checked with its own defaults, unless it is listed here.
"""

from __future__ import annotations

import pytest

from omnidiff.plugins.check import DomainContractError, check_domain
from omnidiff.plugins.registry import available, get_domain

TINY = {"train_size": 64, "val_size": 16, "batch_size": 8}

# (data overrides, model overrides) per domain and variant: small and fast
SMALL = {
    "points": [
        ("density", dict(TINY), {"width": 16, "depth": 1}),
        ("cloud", {**TINY, "kind": "cloud", "name": "shapes", "num_points": 16},
         {"name": "set_transformer", "width": 16, "depth": 1, "heads": 2}),
        # tensor conditions: an affine property vector (computed from data for clouds), and
        # a named set of label + vector
        ("density-affine", {**TINY, "affine": True}, {"width": 16, "depth": 1}),
        ("cloud-affine", {**TINY, "kind": "cloud", "name": "shapes", "num_points": 16,
                          "affine": True, "conditional": False},
         {"name": "set_transformer", "width": 16, "depth": 1, "heads": 2}),
        ("density-label-affine", {**TINY, "affine": True, "conditional": True,
                                  "name": "eight_gaussians"}, {"width": 16, "depth": 1}),
    ],
    "image": [
        ("digits", {"batch_size": 8, "train_size": 64},
         {"base_channels": 16, "num_res_blocks": 1, "norm_groups": 8, "num_head_channels": 8}),
        # a sequence condition: captions, a tokenizer fitted on them, cross-attention
        ("text_digits", {"name": "text_digits", "batch_size": 8, "train_size": 64},
         {"base_channels": 16, "num_res_blocks": 1, "norm_groups": 8, "num_head_channels": 8,
          "text_width": 16, "text_layers": 1, "text_heads": 2}),
    ],
    "audio": [
        (cond.replace("+", "-"), {"train_size": 24, "val_size": 12, "batch_size": 4,
                                  "cond": cond, "clip_seconds": 0.05},
         {"layers": 3, "channels": 8, "cycle": 2, "hop": 50})
        for cond in ("label", "none", "mel", "label+mel")
    ] + [
        # a prompt: the pooled encoding alone, and with cross-attention at a pooled rate
        (f"text_tones-cross{k}", {"name": "text_tones", "cond": "text", "train_size": 24,
                                  "batch_size": 4, "clip_seconds": 0.05},
         {"layers": 3, "channels": 8, "cycle": 2, "hop": 50, "text_width": 16,
          "text_layers": 1, "text_heads": 2, "text_cross": k, "text_rate": 20})
        for k in (0, 2)
    ],
    "video": [
        (f"{cond.replace('+', '-')}-{att}", {"train_size": 16, "val_size": 8, "batch_size": 4,
                                             "cond": cond, "frames": 4, "size": 16,
                                             "digit_size": 8},
         {"depth": 2, "width": 24, "heads": 2, "patch": [2, 4, 4], "attention": att, "pos": pos})
        for cond, att, pos in (("label", "joint", "sincos"), ("none", "factorised", "rope"),
                               ("frames", "joint", "rope"),
                               ("label+frames", "factorised", "sincos"))
    ],
    "timeseries": [
        ("waveforms", dict(TINY), {"width": 16, "depth": 2}),
    ],
}


def _cases():
    for name in sorted(available()):
        for variant, data, model in SMALL.get(name, [("defaults", {}, {})]):
            yield pytest.param(name, data, model, id=f"{name}-{variant}")


@pytest.mark.parametrize("name,data,model", list(_cases()))
def test_domain_contract(name, data, model, tmp_path):
    report = check_domain(get_domain(name), data=data, model=model, out_dir=tmp_path)
    assert report["name"] == name
    assert any(f.endswith(".png") or f.endswith(".wav") or f.endswith(".gif")
               for f in report["files"]), "a domain should write a file people can look at"


def test_check_domain_catches_a_broken_drop(tmp_path):
    """The checker itself: a network that ignores ``drop`` is reported by name."""
    from torch import nn

    points = get_domain("points")

    class IgnoresDrop(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t, cond=None, drop=None):
            return self.inner(x, t, cond, None)

    class Broken:
        name = "broken_drop"
        config_searchpath = None

        def build_data(self, **cfg):
            return points.build_data(**{**TINY, "kind": "cloud", "name": "shapes",
                                        "num_points": 8})

        def build_network(self, event_shape, cond_spec, **cfg):
            return IgnoresDrop(points.build_network(event_shape, cond_spec,
                                                    name="set_transformer", width=16, depth=1,
                                                    heads=2))

        save_artifacts = staticmethod(points.save_artifacts)
        metrics = staticmethod(points.metrics)

    with pytest.raises(DomainContractError, match="broken_drop.*drop is True"):
        check_domain(Broken(), out_dir=tmp_path)


def test_check_domain_catches_an_ignored_tensor_condition(tmp_path):
    """A network that never reads its tensor condition is reported (the probe perturbs the
    tensor, not only labels)."""
    from torch import nn

    points = get_domain("points")
    data = {**TINY, "affine": True}

    class Blind(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x, t, cond=None, drop=None):
            return self.inner(x, t, None, None)

    class Broken:
        name = "blind"
        config_searchpath = None

        def build_data(self, **cfg):
            return points.build_data(**data)

        def build_network(self, event_shape, cond_spec, **cfg):
            return Blind(points.build_network(event_shape, cond_spec, width=16, depth=1))

        save_artifacts = staticmethod(points.save_artifacts)
        metrics = staticmethod(points.metrics)

    with pytest.raises(DomainContractError, match="blind.*ignores cond"):
        check_domain(Broken(), out_dir=tmp_path)


def test_check_domain_catches_a_batch_that_breaks_its_spec(tmp_path):
    points = get_domain("points")

    class WrongDtype:
        def __init__(self, dm):
            self.dm = dm

        def __getattr__(self, k):
            return getattr(self.dm, k)

        def train_dataloader(self):
            loader = self.dm.train_dataloader()

            class L:
                state_dict = loader.state_dict
                load_state_dict = loader.load_state_dict

                def __iter__(self):
                    for b in loader:
                        yield {"x": b["x"], "cond": b["cond"].double()}
            return L()

    class Broken:
        name = "wrong_cond"
        config_searchpath = None

        def build_data(self, **cfg):
            return WrongDtype(points.build_data(**{**TINY, "affine": True}))

        build_network = staticmethod(points.build_network)
        save_artifacts = staticmethod(points.save_artifacts)
        metrics = staticmethod(points.metrics)

    with pytest.raises(DomainContractError, match=r"wrong_cond.*float32 \(8, 3\).*float64"):
        check_domain(Broken(), out_dir=tmp_path)
