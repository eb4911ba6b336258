"""Patch tokens, PatchEmbed and N-d sine-cosine position embeddings (omnidiff.nn.patches)."""

import itertools
import math

import pytest
import torch

from omnidiff.nn.patches import (
    PatchEmbed,
    patchify,
    sincos_1d,
    sincos_embedding,
    token_grid,
    unpatchify,
)


@pytest.mark.parametrize("grid,patch", [
    ((12,), (3,)),
    ((6, 10), (2, 5)),
    ((4, 6, 9), (2, 3, 1)),
    ((4, 6, 8), 2),
])
def test_round_trip_exact(grid, patch):
    torch.manual_seed(0)
    x = torch.randn(2, 3, *grid)
    p = (patch,) * len(grid) if isinstance(patch, int) else patch
    tokens = patchify(x, patch)
    assert tokens.shape == (2, math.prod(g // q for g, q in zip(grid, p)), math.prod(p) * 3)
    assert torch.equal(unpatchify(tokens, patch, x.shape[2:], 3), x)


def test_patchify_matches_loop_reference_2d():
    torch.manual_seed(0)
    p, q = 2, 3
    x = torch.randn(2, 4, 3 * p, 2 * q)  # token grid (3, 2)
    tokens = patchify(x, (p, q))
    assert tokens.shape == (2, 6, p * q * 4)
    for i, j in itertools.product(range(3), range(2)):
        block = x[:, :, i * p:(i + 1) * p, j * q:(j + 1) * q]  # (B, C, p, q)
        ref = block.permute(0, 2, 3, 1).reshape(2, -1)  # (B, p*q*C), channels last
        assert torch.equal(tokens[:, i * 2 + j], ref)
    # one feature spelled out: offset (1, 2) in token (2, 1), channel 3
    assert tokens[0, 2 * 2 + 1, (1 * q + 2) * 4 + 3] == x[0, 3, 2 * p + 1, 1 * q + 2]


def test_patchify_matches_loop_reference_3d():
    x = torch.arange(2 * 4 * 6 * 2, dtype=torch.float32).reshape(1, 2, 4, 6, 2)
    tokens = patchify(x, (2, 3, 1))
    tg = (2, 2, 2)
    for idx, (a, b, c) in enumerate(itertools.product(*map(range, tg))):
        block = x[:, :, 2 * a:2 * a + 2, 3 * b:3 * b + 3, c:c + 1]
        assert torch.equal(tokens[:, idx], block.permute(0, 2, 3, 4, 1).reshape(1, -1))


@pytest.mark.parametrize("grid,patch,ndim", [
    ((9,), (3,), 1),
    ((4, 6), (2, 3), 2),
    ((2, 4, 6), (1, 2, 3), 3),
])
def test_patch_embed_equals_linear_map_of_patchify(grid, patch, ndim):
    torch.manual_seed(0)
    c, d = 3, 5
    embed = PatchEmbed(c, d, patch, ndim).double()
    x = torch.randn(2, c, *grid, dtype=torch.float64)
    out = embed(x)
    w = embed.proj.weight  # (D, C, *patch)
    perm = (0, *range(2, 2 + ndim), 1)
    w_flat = w.permute(*perm).reshape(d, -1)  # (D, prod(patch) * C), features (p..., C)
    ref = patchify(x, patch) @ w_flat.T + embed.proj.bias  # (B, L, D)
    assert out.shape == (2, math.prod(token_grid(grid, patch)), d)
    torch.testing.assert_close(out, ref)


def test_patch_embed_int_patch_and_bad_grid():
    embed = PatchEmbed(2, 4, 2, ndim=2)
    assert embed(torch.randn(1, 2, 4, 6)).shape == (1, 6, 4)
    with pytest.raises(ValueError, match="axis 1"):
        embed(torch.randn(1, 2, 4, 5))


def test_sincos_1d_formula():
    pos = torch.tensor([0.0, 1.0, 7.0])
    emb = sincos_1d(pos, 8)
    assert emb.shape == (3, 8) and emb.dtype == torch.float32
    omega = torch.tensor([1.0 / 10000.0 ** (k / 4) for k in range(4)])
    torch.testing.assert_close(emb[:, :4], torch.sin(pos[:, None] * omega))
    torch.testing.assert_close(emb[:, 4:], torch.cos(pos[:, None] * omega))
    assert torch.equal(emb[0], torch.tensor([0.0] * 4 + [1.0] * 4))


def test_sincos_embedding_2d_axis_blocks():
    h, w, dim = 3, 5, 16
    emb = sincos_embedding((h, w), dim)
    assert emb.shape == (h * w, dim) and emb.dtype == torch.float32
    first, second = sincos_1d(torch.arange(h).float(), dim // 2), sincos_1d(
        torch.arange(w).float(), dim // 2)
    for i, j in itertools.product(range(h), range(w)):
        row = emb[i * w + j]  # row-major token order, as patchify
        torch.testing.assert_close(row[:dim // 2], first[i])
        torch.testing.assert_close(row[dim // 2:], second[j])
    assert torch.unique(emb, dim=0).shape[0] == h * w  # rows distinct


def test_sincos_embedding_1d_and_3d():
    torch.testing.assert_close(sincos_embedding((6,), 8), sincos_1d(torch.arange(6.0), 8))
    emb = sincos_embedding((2, 3, 4), 12).reshape(2, 3, 4, 12)
    torch.testing.assert_close(emb[1, 2, 3, 4:8], sincos_1d(torch.tensor([2.0]), 4)[0])
    torch.testing.assert_close(emb[1, 2, 3, 8:], sincos_1d(torch.tensor([3.0]), 4)[0])
    assert torch.unique(emb.reshape(24, 12), dim=0).shape[0] == 24


@pytest.mark.parametrize("grid,dim", [((4, 4), 6), ((4, 4), 10), ((2, 2, 2), 9), ((3,), 5)])
def test_sincos_embedding_bad_dim(grid, dim):
    with pytest.raises(ValueError, match=f"divisible by {2 * len(grid)}"):
        sincos_embedding(grid, dim)


def test_divisibility_errors_name_axis():
    with pytest.raises(ValueError, match=r"axis 1 has size 7.*patch size 2"):
        patchify(torch.randn(1, 1, 4, 7), 2)
    with pytest.raises(ValueError, match=r"axis 2 has size 5.*patch size 3"):
        token_grid((4, 6, 5), (2, 3, 3))
    with pytest.raises(ValueError, match="axis 0"):
        unpatchify(torch.randn(1, 2, 4), 2, (5, 4), 1)
    with pytest.raises(ValueError, match="one patch size per axis"):
        patchify(torch.randn(1, 1, 4, 4), (2, 2, 2))
    assert token_grid((4, 6, 5), (2, 3, 5)) == (2, 2, 1)
