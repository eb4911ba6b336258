"""The image domain: U-Net, data, classifier metrics, artifacts, registry."""

from __future__ import annotations

import pytest
import torch
from PIL import Image

from omnidiff_domains.image import ImageDomain
from omnidiff_domains.image.artifacts import MIN_GRID, MIN_TILE, save_artifacts
from omnidiff_domains.image.data import ImageData
from omnidiff_domains.image.unet import build_unet


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory):
    """A private classifier cache, so the test trains (and times) the classifier itself."""
    mp = pytest.MonkeyPatch()
    mp.setenv("OMNIDIFF_CACHE", str(tmp_path_factory.mktemp("omnidiff_cache")))
    from omnidiff_domains.image import classifier
    classifier._memo.clear()
    yield
    classifier._memo.clear()
    mp.undo()


# ---- U-Net -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shape,cfg", [
    ((1, 8, 8), dict(base_channels=16, channel_mult=(1, 2), num_res_blocks=1,
                     attn_resolutions=[4])),
    ((3, 16, 16), dict(base_channels=16, channel_mult=(1, 2, 2), num_res_blocks=2,
                       attn_resolutions=[8, 4], dropout=0.1, channels_last=True)),
    ((3, 16, 8), dict(base_channels=8, channel_mult=(1, 1), num_res_blocks=1,
                      attn_resolutions=[], norm_groups=4)),
])
def test_unet_shapes_and_conditioning(shape, cfg):
    torch.manual_seed(0)
    net = build_unet(shape, 10, **cfg).eval()
    x, t = torch.randn(4, *shape), torch.rand(4)
    cond = torch.tensor([0, 1, 2, 3])
    out = net(x, t, cond)
    assert out.shape == x.shape
    assert torch.count_nonzero(out) == 0  # zero-initialised output convolution
    for p in net.conv_out.parameters():
        torch.nn.init.normal_(p, std=0.1)
    for m in net.modules():  # also open the zero-initialised residual branches
        if hasattr(m, "conv2"):
            torch.nn.init.normal_(m.conv2.weight, std=0.05)
    with torch.no_grad():
        a = net(x, t, cond)
        b = net(x, t, torch.tensor([4, 5, 6, 7]))
        c = net(x, t, cond, drop=torch.tensor([True, False, True, False]))
        d = net(x, t.flip(0), cond)
    assert a.shape == x.shape and torch.isfinite(a).all()
    assert not torch.allclose(a, b)  # the class changes the output
    assert not torch.allclose(a[0], c[0]) and torch.allclose(a[1], c[1])  # drop -> null class
    assert not torch.allclose(a, d)  # time changes the output


def test_unet_backward_and_unconditional():
    net = build_unet((1, 8, 8), 0, base_channels=16, channel_mult=(1, 2), num_res_blocks=1)
    x = torch.randn(2, 1, 8, 8)
    net(x, torch.rand(2)).square().mean().backward()
    assert net.conv_out.weight.grad is not None


def test_unet_bad_sizes_fail_clearly():
    with pytest.raises(ValueError, match=r"not divisible by 2\*\*\(len\(channel_mult\)-1\) = 4"):
        build_unet((1, 10, 10), 10, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="attn_resolutions"):
        build_unet((1, 8, 8), 10, channel_mult=(1, 2), attn_resolutions=[2])
    with pytest.raises(TypeError, match="unknown image model option"):
        build_unet((1, 8, 8), 10, channel_mul=(1, 2))
    with pytest.raises(ValueError, match="event_shape"):
        build_unet((64,), 10)


# ---- data ------------------------------------------------------------------------------------

def test_digits_data():
    dm = ImageData(name="digits", batch_size=64)
    dm.setup("fit")
    assert dm.event_shape == (1, 8, 8) and dm.num_classes == 10
    a = dm._load()
    assert len(a["x_train"]) + len(a["x_test"]) == 1797
    train = {tuple(v) for v in a["x_train"].flatten(1).tolist()}
    assert not any(tuple(v) in train for v in a["x_test"].flatten(1).tolist())  # disjoint
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (64, 1, 8, 8) and batch["x"].dtype == torch.float32
    assert batch["x"].min() >= -1 and batch["x"].max() <= 1 and batch["x"].min() == -1
    assert batch["cond"].dtype == torch.long and set(batch["cond"].tolist()) <= set(range(10))
    assert not dm.flip
    x, y = dm.reference(100, torch.Generator().manual_seed(0))
    assert x.shape == (100, 1, 8, 8) and y.shape == (100,) and len(set(y.tolist())) == 10
    x2, _ = dm.reference(100, torch.Generator().manual_seed(0))
    assert torch.equal(x, x2)
    dm16 = ImageData(name="digits", image_size=16, train_size=100)
    assert dm16.event_shape == (1, 16, 16) and len(dm16._load()["x_train"]) == 100
    assert len(dm16._load()["x_test"]) == len(a["x_test"])  # the held-out split never moves


def test_digits_without_labels_train_an_unconditional_model():
    dm = ImageData(name="digits", conditional=False)
    assert dm.num_classes == 0 and not dm.cond_spec.conditional and dm.classes == []
    assert ImageData(name="digits").num_classes == 10  # the shared (cached) arrays keep theirs


def test_torchvision_missing_offline_fails_clearly(tmp_path):
    dm = ImageData(name="cifar10", root=str(tmp_path))
    with pytest.raises(FileNotFoundError, match="data.download=true") as e:
        dm.setup("fit")
    assert "\n" not in str(e.value)


def _write(folder, n, mode="L", size=(8, 8), start=0):
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(start)
    for i in range(n):
        c = 1 if mode == "L" else 3
        arr = torch.randint(0, 256, (size[1], size[0], c), generator=g, dtype=torch.uint8)
        Image.fromarray(arr.squeeze(-1).numpy() if c == 1 else arr.numpy(), mode).save(
            folder / f"img{start + i:03d}.png")


def test_folder_data(tmp_path):
    _write(tmp_path / "flat", 10, "RGB")
    dm = ImageData(name="folder", root=str(tmp_path / "flat"), batch_size=4)
    assert dm.event_shape == (3, 8, 8) and dm.num_classes == 0 and dm.flip
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x"} and batch["x"].shape == (4, 3, 8, 8)
    x, y = dm.reference(5)  # 10 images, 10 % held out: capped at the one held-out image
    assert y is None and x.shape == (1, 3, 8, 8)
    assert ImageData(name="folder", root=str(tmp_path / "flat"), channels=1,
                     image_size=16).event_shape == (1, 16, 16)
    _write(tmp_path / "classes" / "cat", 3, "RGB")
    _write(tmp_path / "classes" / "dog", 3, "RGB", start=3)
    dm = ImageData(name="imagefolder", root=str(tmp_path / "classes"), batch_size=2)
    assert dm.num_classes == 2 and dm.classes == ["cat", "dog"]
    assert next(iter(dm.train_dataloader()))["cond"].dtype == torch.long
    same = ImageData(name="folder", root=str(tmp_path / "classes"), batch_size=2)
    assert same.classes == ["cat", "dog"]  # folder: class sub-folders too, as audio and video
    assert same.cond_spec == dm.cond_spec and same.event_shape == dm.event_shape
    with pytest.raises(ValueError, match="sub-folder per class"):
        _ = ImageData(name="folder", root=str(tmp_path / "flat"), conditional=True).num_classes


def test_folder_errors_are_one_clear_line(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no images") as e:
        ImageData(name="folder", root=str(tmp_path / "empty")).setup()
    assert "\n" not in str(e.value)
    _write(tmp_path / "mixed", 2, "L")
    _write(tmp_path / "mixed", 2, "RGB", start=2)
    with pytest.raises(ValueError, match="inconsistent channels.*data.channels") as e:
        ImageData(name="folder", root=str(tmp_path / "mixed")).setup()
    assert "\n" not in str(e.value)
    assert ImageData(name="folder", root=str(tmp_path / "mixed"),
                     channels=3).event_shape == (3, 8, 8)
    _write(tmp_path / "sizes", 2, "L", size=(8, 8))
    _write(tmp_path / "sizes", 2, "L", size=(12, 10), start=2)
    with pytest.raises(ValueError, match="different sizes.*data.image_size") as e:
        ImageData(name="folder", root=str(tmp_path / "sizes")).setup()
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="data.root"):
        ImageData(name="folder")
    with pytest.raises(ValueError, match="unknown image data"):
        ImageData(name="imagenet")


# ---- classifier + metrics --------------------------------------------------------------------

def test_classifier_and_metrics():
    from omnidiff_domains.image.classifier import cache_path, digits_classifier
    from omnidiff_domains.image.data import digits_arrays
    from omnidiff_domains.image.metrics import frechet_distance, image_metrics, is_digits

    d = digits_arrays(8)
    clf = digits_classifier(8)
    assert cache_path((8, 8)).exists()
    with torch.no_grad():
        acc = (clf(d["x_test"]).argmax(1) == d["y_test"]).float().mean().item()
    assert acc >= 0.9, acc
    real = d["x_test"]
    half = len(real) // 2
    assert is_digits(real) and not is_digits(torch.rand_like(real) * 2 - 1)
    same = image_metrics(real[:half], real[half:], cond=d["y_test"][:half])
    noise = image_metrics(torch.randn_like(real[:half]).clamp(-1, 1), real[half:],
                          cond=d["y_test"][:half])
    assert same["class_acc"] >= 0.9 and noise["class_acc"] < 0.5
    assert same["fd"] * 10 < noise["fd"], (same["fd"], noise["fd"])
    assert same["precision"] > 0.7 and same["recall"] > 0.7 and noise["precision"] < 0.2
    assert same["pixel_fd"] < noise["pixel_fd"]
    # without labels: each class's share of the samples against its share of the reference
    assert "class_share_min" not in same  # labelled samples: class_acc instead
    even = image_metrics(real[:half], real[half:])
    assert "class_acc" not in even and even["class_share_min"] > 0.6
    no_zeros = real[:half][d["y_test"][:half] != 0]
    assert image_metrics(no_zeros, real[half:])["class_share_min"] < 0.05  # a class dropped
    # Fréchet distance of identical Gaussians is ~0, and grows with a mean shift
    f = torch.randn(500, 4, generator=torch.Generator().manual_seed(0))
    assert frechet_distance(f, f) < 1e-6
    assert abs(frechet_distance(f, f + 1.0) - 4.0) < 1e-6
    # non-digit images get pixel statistics only
    other = image_metrics(torch.rand(20, 3, 8, 8) * 2 - 1, torch.rand(20, 3, 8, 8) * 2 - 1)
    assert set(other) == {"pixel_fd", "pixel_mean_gap", "pixel_std_gap"}


# ---- artifacts + registry --------------------------------------------------------------------

def test_artifacts_grid(tmp_path):
    x = torch.rand(7, 1, 8, 8) * 2 - 1
    cond = torch.tensor([2, 0, 2, 1, 0, 2, 2])
    paths = save_artifacts(x, tmp_path, cond=cond, prefix="grid")
    assert [p.name for p in paths] == ["grid.png", "grid.pt", "grid.npy"]
    # 4 columns of 8 px tiles: upscaled 8x, so the grid is at least MIN_GRID (256) px wide
    tile, pad = 8 * max(MIN_TILE // 8, -(-MIN_GRID // (4 * 8))), 2
    with Image.open(paths[0]) as im:
        im.load()
        # 3 classes -> 3 rows; the largest class (2) has 4 samples -> 4 columns
        assert im.size == (4 * (tile + pad) + pad, 3 * (tile + pad) + pad) == (266, 200)
        assert im.mode == "L"
    one_class = save_artifacts(x[:4], tmp_path / "one", cond=torch.full((4,), 3))
    with Image.open(one_class[0]) as im:  # one class: a 2 x 2 square, not a 1 x 4 strip
        assert im.size == (2 * (128 + pad) + pad,) * 2
    blob = torch.load(paths[1], weights_only=True)
    assert torch.equal(blob["samples"], x) and torch.equal(blob["cond"], cond)
    import numpy as np
    assert np.load(paths[2]).shape == (7, 1, 8, 8)
    rgb = save_artifacts(torch.rand(5, 3, 32, 32) * 2 - 1, tmp_path / "rgb")
    with Image.open(rgb[0]) as im:
        assert im.mode == "RGB" and im.size == (3 * 98 + 2, 2 * 98 + 2)  # 32 px tiles, 3x
    assert not list(tmp_path.glob(".*.tmp*"))  # nothing half-written left behind


def test_registry_returns_the_image_domain():
    from omnidiff.plugins.contract import Domain
    from omnidiff.plugins.registry import get_domain

    dom = get_domain("image")
    assert isinstance(dom, ImageDomain) and isinstance(dom, Domain)
    assert dom.name == "image" and dom.config_searchpath == "pkg://omnidiff_domains.image.conf"
    net = dom.build_network((1, 8, 8), 10, base_channels=16, channel_mult=[1, 2],
                            num_res_blocks=1, attn_resolutions=[4])
    assert net(torch.randn(2, 1, 8, 8), torch.rand(2), torch.tensor([1, 2])).shape == (2, 1, 8, 8)
    # the full contract (omnidiff.testing.check_domain) runs in tests/test_domain_contract.py


def test_the_image_domain_offers_its_digits_to_other_domains():
    from omnidiff.plugins.registry import get_domain
    from omnidiff_domains.image.classifier import digits_classifier
    from omnidiff_domains.image.data import digits_arrays

    dom = get_domain("image")
    a, b = dom.digits_arrays(12), digits_arrays(12)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert a["x_train"].shape[1:] == (1, 12, 12)
    assert dom.digits_classifier(8) is digits_classifier(8)
