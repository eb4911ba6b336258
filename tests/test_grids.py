"""Sample grids are capped at a size a person reads at a glance; the raw files keep every
sample."""

import numpy as np
import pytest
import torch
from PIL import Image

from omnidiff.plots import pick_for_grid

N = 512


def _labels(n=N, k=10):
    return torch.arange(n) % k


# ---- the shared picker ------------------------------------------------------------------------

def test_pick_for_grid_classes_and_plain():
    c = torch.tensor([3, 1, 3, 1, 1, 0, 3, 3])
    assert pick_for_grid(8, c, per_class=2).tolist() == [5, 1, 3, 0, 2]  # class order, in order
    assert pick_for_grid(8, c, per_class=2, max_classes=2).tolist() == [5, 1, 3]
    assert pick_for_grid(8, c.numpy(), per_class=1).tolist() == [5, 1, 0]  # numpy labels too
    idx = pick_for_grid(N, _labels())
    assert len(idx) == 100 and torch.bincount(_labels()[idx]).tolist() == [10] * 10
    assert pick_for_grid(N).tolist() == list(range(64))
    assert pick_for_grid(5).tolist() == list(range(5))
    assert pick_for_grid(N, torch.rand(N, 3), max_items=16).tolist() == list(range(16))
    assert pick_for_grid(N, {"mask": torch.ones(N, 4)}, max_items=16).tolist() == list(range(16))


# ---- image ------------------------------------------------------------------------------------

def _tiles(size, tile, pad=2):
    w, h = size
    assert (w - pad) % (tile + pad) == 0 and (h - pad) % (tile + pad) == 0
    return (w - pad) // (tile + pad), (h - pad) // (tile + pad)  # (columns, rows)


@pytest.mark.parametrize("conditional", [True, False])
def test_image_grid_is_capped_and_raw_files_hold_everything(tmp_path, conditional):
    from omnidiff_domains.image.artifacts import MIN_TILE, save_artifacts

    x = torch.rand(N, 1, 8, 8) * 2 - 1
    cond = _labels() if conditional else None
    paths = save_artifacts(x, tmp_path, cond=cond, prefix="s")
    with Image.open(paths[0]) as im:
        size = im.size
    cols, rows = _tiles(size, MIN_TILE)
    if conditional:
        assert (cols, rows) == (10, 10)  # one row per class, ten of each
    else:
        assert cols <= 8 and rows <= 8 and abs(cols - rows) <= 1  # near square
    assert max(size) < 12 * (MIN_TILE + 2)
    blob = torch.load(paths[1], weights_only=True)
    assert torch.equal(blob["samples"], x)
    assert np.load(paths[2]).shape == (N, 1, 8, 8)


def test_image_grid_rows_follow_the_classes_shown():
    from omnidiff_domains.image.artifacts import MIN_TILE, image_grid

    x = torch.rand(N, 1, 8, 8) * 2 - 1
    grid = image_grid(x, _labels(k=3))  # 3 classes -> 3 rows of 10
    assert _tiles((grid.shape[1], grid.shape[0]), MIN_TILE) == (10, 3)
    grid = image_grid(x, _labels(k=40))  # 40 classes -> the first 10, 10 each (13 of each exist)
    assert _tiles((grid.shape[1], grid.shape[0]), MIN_TILE) == (10, 10)


# ---- points -----------------------------------------------------------------------------------

@pytest.mark.parametrize("conditional", [True, False])
def test_points_cloud_grid_is_capped(tmp_path, conditional):
    from omnidiff_domains.points import artifacts as pa

    drawn = []
    orig = pa.cloud_grid_figure

    def spy(clouds, cond=None):
        fig = orig(clouds, cond)
        drawn.append((fig, cond))
        return fig

    x = torch.randn(N, 16, 2)
    cond = _labels() if conditional else None
    pa.cloud_grid_figure = spy
    try:
        pa.save_artifacts(x, tmp_path, cond=cond, prefix="s")
    finally:
        pa.cloud_grid_figure = orig
    (fig, shown), = drawn
    panels = len(fig.axes)
    if conditional:
        assert panels == 10 * pa.GRID_PER_CLASS <= 64
        assert np.bincount(shown).tolist() == [pa.GRID_PER_CLASS] * 10
        assert list(shown) == sorted(shown)  # class order
        np.testing.assert_array_equal(np.load(tmp_path / "s_cond.npy"), cond.numpy())
    else:
        assert panels == 64
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), x.numpy())


# ---- video ------------------------------------------------------------------------------------

@pytest.mark.parametrize("cond", ["label", "none", "label+frames"])
def test_video_frame_strip_is_capped(cond):
    from omnidiff_domains.video.artifacts import frame_strip

    n, t = 64, 4
    x = torch.rand(n, t, 1, 8, 8) * 2 - 1
    labels = _labels(n)
    c = {"label": labels, "mask": torch.zeros(n, t)} if cond == "label+frames" else (
        labels if cond == "label" else None)
    fig = frame_strip(x, c)
    rows = len(fig.axes) // t
    assert len(fig.axes) % t == 0
    if cond == "none":
        assert rows == 16
    else:
        assert rows == 20  # two clips of each of the ten classes
        names = [fig.axes[i * t].get_ylabel() for i in range(rows)]
        assert names == [str(k) for k in range(10) for _ in range(2)]


def test_video_raw_files_hold_every_clip(tmp_path):
    from omnidiff_domains.video.artifacts import save_artifacts

    n = 24
    x = torch.rand(n, 4, 1, 8, 8) * 2 - 1
    save_artifacts(x, tmp_path, cond=_labels(n, 2))
    assert np.load(tmp_path / "samples.npy").shape == (n, 4, 1, 8, 8)
    assert len(list((tmp_path / "samples_gif").glob("*.gif"))) == n
