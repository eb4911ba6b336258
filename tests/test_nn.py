"""Shared network parts (omnidiff.nn): condition embeddings of every kind with their nulls,
adaLN-Zero, the transformer block, the GroupNorm helper. (Patches: tests/test_nn_patches.py.)"""

from __future__ import annotations

import pytest
import torch
from timm.layers import Mlp as TimmMlp

from omnidiff.core.conditions import LabelCond, NamedCond, NoCond, TensorCond
from omnidiff.nn import (
    ClassEmbedding,
    ConditionEmbedding,
    Conditioning,
    FinalLayer,
    Mlp,
    TransformerBlock,
    group_count,
    modulate,
    null_where,
)

B, D = 5, 16


def _embed(spec, cond, drop=None):
    torch.manual_seed(0)
    emb = ConditionEmbedding(spec, D)
    with torch.no_grad():
        for p in emb.parameters():
            p.normal_()
    return emb, emb(cond, drop, B, torch.device("cpu"))


CASES = [
    (LabelCond(4), torch.tensor([0, 1, 2, 3, 1])),
    (TensorCond((3,)), torch.randn(B, 3)),
    (TensorCond((2, 2)), torch.randn(B, 2, 2)),
    (NamedCond({"label": LabelCond(4), "v": TensorCond((3,))}),
     {"label": torch.tensor([0, 1, 2, 3, 1]), "v": torch.randn(B, 3)}),
]


@pytest.mark.parametrize("spec,cond", CASES, ids=lambda v: str(v)[:20])
def test_condition_embedding_null_and_dependence(spec, cond):
    emb, out = _embed(spec, cond)
    assert out.shape == (B, D)
    null = emb(None, None, B, torch.device("cpu"))
    assert torch.allclose(null, null[:1].expand(B, -1))  # one null vector
    drop = torch.tensor([True, False, True, False, False])
    mixed = emb(cond, drop, B, torch.device("cpu"))
    torch.testing.assert_close(mixed[drop], null[drop])
    torch.testing.assert_close(mixed[~drop], out[~drop])
    assert not torch.allclose(out, null)  # the condition is read
    if isinstance(spec, TensorCond):  # and it is read per sample
        other = emb(cond + 1.0, None, B, torch.device("cpu"))
        assert not torch.allclose(other, out)


def test_labels_match_class_embedding_weights():
    """Label embeddings keep ClassEmbedding's parameter name, so older checkpoints load."""
    old = ClassEmbedding(4, D)
    new = ConditionEmbedding(LabelCond(4), D)
    new.load_state_dict(old.state_dict())
    c, drop = torch.tensor([0, 3, 1, 2, 0]), torch.tensor([False, True, False, False, True])
    torch.testing.assert_close(new(c, drop, B, torch.device("cpu")),
                               old(c, drop, B, torch.device("cpu")))
    assert set(ConditionEmbedding(NoCond(), D).state_dict()) == {"table.weight"}


def test_conditioning_loads_legacy_label_keys():
    a = Conditioning(LabelCond(3), D)
    legacy = {k.replace("embed.", "label."): v for k, v in a.state_dict().items()}
    b = Conditioning(LabelCond(3), D)
    b.load_state_dict(legacy)
    t = torch.rand(B)
    c = torch.tensor([0, 1, 2, 0, 1])
    torch.testing.assert_close(a(t, c, None, B), b(t, c, None, B))


def test_variable_shape_tensor_is_not_a_global_embedding():
    with pytest.raises(ValueError, match="fixed shape"):
        ConditionEmbedding(TensorCond((80, None)), D)
    spec = NamedCond({"label": LabelCond(2), "mel": TensorCond((8, None))})
    emb = ConditionEmbedding(spec, D)  # the dense field is left to the network
    assert list(emb.parts) == ["label"]


def test_null_where():
    cond = torch.ones(3, 2, 4)
    out = null_where(torch.tensor([False, True, False]), cond, torch.zeros(()))
    assert out[1].abs().sum() == 0 and out[0].sum() == 8 and out[2].sum() == 8
    assert null_where(None, cond, torch.zeros(())) is cond


def test_adaln_zero_starts_as_identity_and_final_layer_at_zero():
    torch.manual_seed(0)
    block, final = TransformerBlock(D, heads=4), FinalLayer(D, 3)
    h, c = torch.randn(2, 7, D), torch.randn(2, D)
    torch.testing.assert_close(block(h, c), h)  # gates are zero at init
    assert final(h, c).abs().max() == 0
    with torch.no_grad():
        for p in block.parameters():
            p.normal_(std=0.1)
    out = block(h, c)
    assert not torch.allclose(out, h)
    # permutation equivariant over tokens (no position information inside the block)
    perm = torch.randperm(7)
    torch.testing.assert_close(block(h[:, perm], c), out[:, perm], rtol=1e-5, atol=1e-5)


def test_modulate_broadcasts_over_tokens():
    h = torch.randn(2, 3, 4, D)
    shift, scale = torch.randn(2, D), torch.randn(2, D)
    out = modulate(h, shift, scale)
    torch.testing.assert_close(out[1, 2, 3], h[1, 2, 3] * (1 + scale[1]) + shift[1])


@pytest.mark.parametrize("channels,groups,expected", [(64, 32, 32), (48, 32, 24), (7, 32, 7),
                                                       (10, 4, 2), (1, 32, 1)])
def test_group_count(channels, groups, expected):
    assert group_count(channels, groups) == expected


def test_mlp_is_timms_in_names_initialisation_and_output():
    """The DiT block's feed-forward layer was timm's ``Mlp``: ours has its parameter names, draws
    the same weights from the same seed and computes the same function, so checkpoints written
    with timm's load and sample unchanged."""
    torch.manual_seed(0)
    theirs = TimmMlp(16, 64, act_layer=torch.nn.GELU, drop=0.0)
    torch.manual_seed(0)
    ours = Mlp(16, 64, torch.nn.GELU, 0.0)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    x = torch.randn(3, 5, 16)
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=0)
