"""The points domain: densities, clouds, data module, networks, metrics, artifacts."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from omnidiff_domains.points import PointsDomain
from omnidiff_domains.points.clouds import SHAPES, digit_images, sample_digit_clouds, sample_shapes
from omnidiff_domains.points.data import PointsData
from omnidiff_domains.points.densities import DENSITIES, NUM_MODES, sample_density
from omnidiff_domains.points.metrics import (
    chamfer_matrix,
    cloud_metrics,
    compute_metrics,
    knn_classify,
    mmd_rbf,
    sliced_wasserstein,
)
from omnidiff_domains.points.networks import build_network


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# -- registry and config -------------------------------------------------------------------

def test_registry_returns_points_domain():
    from omnidiff.plugins.registry import get_domain

    dom = get_domain("points")
    assert isinstance(dom, PointsDomain)
    assert dom.name == "points"
    assert dom.config_searchpath == "pkg://omnidiff_domains.points.conf"
    from lightning.pytorch import LightningDataModule

    from omnidiff.plugins.contract import Domain, DomainData

    assert isinstance(dom, Domain)
    dm = dom.build_data(train_size=10, val_size=10)
    assert isinstance(dm, LightningDataModule) and isinstance(dm, DomainData)


def test_domain_config_composes_and_builds():
    from hydra import compose, initialize_config_module

    with initialize_config_module("omnidiff_domains.points.conf", version_base="1.3"):
        cfg = compose(overrides=["+domain=points", "data.train_size=512", "data.val_size=64"])
    assert set(cfg) == {"model", "data"}
    dom = PointsDomain()
    dm = dom.build_data(**cfg.data)
    net = dom.build_network(dm.event_shape, dm.num_classes, **cfg.model)
    batch = next(iter(dm.train_dataloader()))
    assert net(batch["x"], torch.rand(len(batch["x"]))).shape == batch["x"].shape


# -- densities ------------------------------------------------------------------------------

@pytest.mark.parametrize("name", [d for d in DENSITIES if d != "mixture"])  # own scale: below
def test_density_moments_and_determinism(name):
    x, y = sample_density(name, 20_000, gen(1))
    assert x.shape == (20_000, 2) and x.dtype == torch.float32 and y.shape == (20_000,)
    assert x.mean(0).abs().max() < 0.05
    assert 0.9 < x.var(0).mean() < 1.1  # standardised: unit variance per coordinate on average
    assert torch.equal(x, sample_density(name, 20_000, gen(1))[0])
    assert not torch.equal(x, sample_density(name, 20_000, gen(2))[0])
    if NUM_MODES[name]:
        assert set(y.unique().tolist()) == set(range(NUM_MODES[name]))


def test_density_shapes():
    x, y = sample_density("eight_gaussians", 8000, gen(0))
    ang = torch.atan2(x[:, 1], x[:, 0])  # modes every 45 degrees, tight around their centre
    err = torch.remainder(ang - y * math.pi / 4 + math.pi, 2 * math.pi) - math.pi
    assert err.abs().median() < 0.1
    r = x.norm(dim=1)
    assert r.std() / r.mean() < 0.15
    x, y = sample_density("rings", 8000, gen(0))
    r = x.norm(dim=1)
    for k in range(4):  # concentric rings: radii in ratio 1:2:3:4
        rk = r[y == k]
        assert rk.std() < 0.1 * r[y == 3].mean()
        assert abs(rk.mean() / r[y == 3].mean() - (k + 1) / 4) < 0.03
    x, _ = sample_density("checkerboard", 8000, gen(0))
    cells = torch.floor(x / x.abs().max() * 2 * 0.999) + 2  # 4x4 board
    assert ((cells[:, 0] + cells[:, 1]) % 2 == 0).float().mean() > 0.99


def test_unknown_density_lists_valid_names():
    with pytest.raises(ValueError, match="valid: moons, eight_gaussians"):
        PointsData(kind="density", name="moonz")
    with pytest.raises(ValueError, match="valid: shapes, digits"):
        PointsData(kind="cloud", name="moons")
    with pytest.raises(ValueError, match="data.kind"):
        PointsData(kind="blob")


# -- metrics: densities ---------------------------------------------------------------------

def test_density_metrics_same_vs_different():
    a, _ = sample_density("moons", 4000, gen(1))
    b, _ = sample_density("moons", 4000, gen(2))
    c, _ = sample_density("eight_gaussians", 4000, gen(3))
    dom = PointsDomain()
    same, diff = dom.metrics(a, b), dom.metrics(c, b)
    assert all(isinstance(v, float) for v in same.values())
    assert same["sliced_w2"] < 0.04 and abs(same["mmd_rbf"]) < 0.003
    assert diff["sliced_w2"] > 0.2 and diff["mmd_rbf"] > 0.03
    assert diff["sliced_w2"] > 8 * same["sliced_w2"]
    assert same["finite_frac"] == 1.0
    # unequal counts (quantile interpolation) still give ~0 for the same law
    assert sliced_wasserstein(a[:1000], b) < 0.15 < diff["sliced_w2"]


def test_sliced_wasserstein_decreases_toward_reference():
    ref, _ = sample_density("eight_gaussians", 3000, gen(1))
    y, _ = sample_density("eight_gaussians", 3000, gen(2))
    shift = torch.tensor([1.5, -1.0])
    sw = [sliced_wasserstein(y + (1 - a) * shift, ref) for a in (0.0, 0.25, 0.5, 0.75, 1.0)]
    assert all(s1 > s2 for s1, s2 in zip(sw, sw[1:])), sw
    mmd = [mmd_rbf(y[:1000] + (1 - a) * shift, ref[:1000]) for a in (0.0, 0.5, 1.0)]
    assert mmd[0] > mmd[1] > mmd[2]
    # a shift s moves every projection by <u, s>: SW2 = sqrt(E_u <u, s>^2) = |s| / sqrt(2)
    assert sliced_wasserstein(ref + shift, ref) == pytest.approx(
        float(shift.norm()) / math.sqrt(2), rel=0.05)


def test_density_class_acc_and_nonfinite():
    dm = PointsData(name="eight_gaussians", conditional=True, train_size=2000, val_size=10)
    assert dm.num_classes == 8
    ref, ref_c = dm.reference(2000)
    x, c = sample_density("eight_gaussians", 500, gen(5))
    m = compute_metrics(x, ref, cond=c, ref_cond=ref_c)
    assert m["class_acc"] > 0.95
    m = compute_metrics(x, ref, cond=(c + 4) % 8, ref_cond=ref_c)  # wrong labels
    assert m["class_acc"] < 0.05
    x[:50] = float("nan")
    m = compute_metrics(x, ref)
    assert m["finite_frac"] == pytest.approx(0.9) and math.isfinite(m["sliced_w2"])


# -- metrics: clouds ------------------------------------------------------------------------

def test_chamfer_matches_brute_force():
    a, b = torch.randn(5, 7, 2, generator=gen(0)), torch.randn(4, 9, 2, generator=gen(1))
    d = chamfer_matrix(a, b, max_elements=100)  # forces chunking
    for i in range(5):
        for j in range(4):
            d2 = (a[i, :, None] - b[j, None]).pow(2).sum(-1)
            want = d2.min(1).values.mean() + d2.min(0).values.mean()
            assert d[i, j] == pytest.approx(float(want), rel=1e-4)


def test_cloud_metrics_same_vs_different():
    a, _ = sample_shapes(100, 32, gen(1))
    b, _ = sample_shapes(100, 32, gen(2))
    img, _ = digit_images()
    c = sample_digit_clouds(img[:100], 32, gen(3))
    same, diff = cloud_metrics(a, b), cloud_metrics(c, b)
    assert 0.3 < same["nna_cd"] < 0.7
    assert diff["nna_cd"] > 0.9
    assert same["mmd_cd"] < 0.7 * diff["mmd_cd"]
    assert same["coverage_cd"] > diff["coverage_cd"] + 0.15
    assert cloud_metrics(b, b)["mmd_cd"] == pytest.approx(0.0, abs=1e-5)


def test_digit_knn_classifier_on_real_clouds():
    dm = PointsData(kind="cloud", name="digits", num_points=64, train_size=200, val_size=10)
    dm.setup()
    x, y = dm._data["train"]  # clouds of training images
    ref, ref_y = dm.reference(300)  # clouds of held-out images
    acc = float((knn_classify(chamfer_matrix(x, ref), ref_y, k=5) == y).float().mean())
    print(f"digit k-NN accuracy on real held-out clouds: {acc:.3f}")
    assert acc >= 0.6  # chance is 0.1
    m = PointsDomain().metrics(x[:40], ref[:60], cond=y[:40], ref_cond=ref_y[:60])
    assert m["class_acc"] > 0.3  # the same classifier through metrics(), tiny reference
    assert PointsDomain().metrics(x[:40], ref[:60], cond=(y[:40] + 1) % 10,
                                  ref_cond=ref_y[:60])["class_acc"] < m["class_acc"]
    # and knn_classify itself: exact on its own reference
    d = chamfer_matrix(ref[:50], ref[:50])
    assert torch.equal(knn_classify(d, ref_y[:50], k=1), ref_y[:50])


# -- data module ----------------------------------------------------------------------------

def test_density_data_module_batches_and_reference():
    dm = PointsData(name="moons", batch_size=64, train_size=1000, val_size=100, seed=3)
    assert dm.event_shape == (2,) and dm.num_classes == 0
    batch = next(iter(dm.train_dataloader()))
    assert set(batch) == {"x"} and batch["x"].shape == (64, 2)
    assert batch["x"].dtype == torch.float32
    ref, c = dm.reference(500)
    assert ref.shape == (500, 2) and c is None
    train = dm._data["train"][0]
    assert not (torch.cdist(ref, train).min(1).values == 0).any()  # not the training points
    dm2 = PointsData(name="moons", batch_size=64, train_size=1000, val_size=100, seed=3)
    assert torch.equal(next(iter(dm2.train_dataloader()))["x"], batch["x"])  # seeded
    assert torch.equal(dm2.reference(500)[0], ref)


def test_cloud_data_modules():
    dm = PointsData(kind="cloud", name="shapes", num_points=48, batch_size=16, train_size=64,
                    val_size=16)
    assert dm.event_shape == (48, 2) and dm.num_classes == len(SHAPES)
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (16, 48, 2) and batch["cond"].dtype == torch.long
    dm = PointsData(kind="cloud", name="digits", num_points=32, batch_size=8, train_size=64,
                    val_size=16)
    assert dm.num_classes == 10
    # held-out digit images are disjoint from the training images
    assert set(dm._held_idx.tolist()).isdisjoint(dm._train_idx.tolist())
    assert len(dm._held_idx) + len(dm._train_idx) == 1797
    x, c = dm.reference(20)
    assert x.shape == (20, 32, 2) and c.shape == (20,)
    assert PointsData(kind="cloud", name="digits", conditional=False).num_classes == 0


# -- user files -----------------------------------------------------------------------------

def test_user_points_files(tmp_path):
    pts = np.random.default_rng(0).normal(size=(300, 2)).astype(np.float32)
    np.save(tmp_path / "p.npy", pts)
    np.savetxt(tmp_path / "p.csv", pts, delimiter=",", header="x,y", comments="")
    for f in ("p.npy", "p.csv"):
        dm = PointsData(kind="density", path=tmp_path / f, batch_size=32)
        assert dm.event_shape == (2,) and dm.num_classes == 0
        dm.setup()
        train, held = dm._data["train"][0], dm.reference(60)[0]
        assert len(train) == 240  # holdout 0.2
        assert torch.cdist(held, train).min() > 0  # held-out rows are not training rows
        np.testing.assert_allclose(torch.cat([train, dm.reference(60)[0]]).sort(0).values,
                                   np.sort(pts, 0), atol=1e-5)
    np.savez(tmp_path / "l.npz", x=pts, y=np.arange(300) % 3)
    dm = PointsData(path=tmp_path / "l.npz")  # a file with labels is conditional
    assert dm.num_classes == 3 and dm.reference(10)[1].shape == (10,)


def test_user_cloud_file(tmp_path):
    clouds = np.random.default_rng(0).normal(size=(40, 20, 2))
    np.save(tmp_path / "c.npy", clouds)
    dm = PointsData(kind="cloud", path=tmp_path / "c.npy", num_points=None, batch_size=4)
    assert dm.event_shape == (20, 2) and dm.num_classes == 0
    assert next(iter(dm.train_dataloader()))["x"].shape == (4, 20, 2)
    dm = PointsData(kind="cloud", path=tmp_path / "c.npy", num_points=8)
    assert dm.reference(5)[0].shape == (5, 8, 2)
    with pytest.raises(ValueError, match=r"data.num_points<=20"):
        PointsData(kind="cloud", path=tmp_path / "c.npy", num_points=64)


def test_bad_user_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        PointsData(path=tmp_path / "missing.npy")
    np.save(tmp_path / "three.npy", np.zeros((10, 3)))
    with pytest.raises(ValueError, match=r"shape \(10, 3\); expected \(M, 2\)"):
        PointsData(path=tmp_path / "three.npy")
    with pytest.raises(ValueError, match=r"shape \(10, 3\); expected \(M, N, 2\)"):
        PointsData(kind="cloud", path=tmp_path / "three.npy")
    bad = np.zeros((10, 2))
    bad[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match="NaN or infinite values in 1 of 10"):
        PointsData(path=tmp_path / "nan.npy")
    (tmp_path / "text.csv").write_text("a,b\nfoo,bar\n")
    with pytest.raises(ValueError, match=r"expected a numeric array of shape \(M, 2\)"):
        PointsData(path=tmp_path / "text.csv")
    (tmp_path / "p.txt").write_text("1,2\n")
    with pytest.raises(ValueError, match="unsupported suffix"):
        PointsData(path=tmp_path / "p.txt")
    np.save(tmp_path / "ok.npy", np.zeros((10, 2)))
    with pytest.raises(ValueError, match="no class labels; set data.conditional=false"):
        PointsData(path=tmp_path / "ok.npy", conditional=True)


# -- networks -------------------------------------------------------------------------------

def _randomise_output(net):
    with torch.no_grad():
        for p in net.out.parameters():
            p.normal_(0, 0.1, generator=gen(7))


def test_mlp_shapes_zero_init_and_drop():
    net = build_network((2,), 8, name="mlp")
    x, t = torch.randn(16, 2), torch.rand(16)
    cond = torch.randint(0, 8, (16,))
    assert net(x, t, cond).shape == (16, 2)
    assert net(x, t, cond).abs().max() == 0  # zero-initialised output layer
    _randomise_output(net)
    out, dropped = net(x, t, cond), net(x, t, cond, drop=torch.ones(16, dtype=torch.bool))
    assert not torch.allclose(out, dropped)
    assert torch.allclose(dropped, net(x, t))  # drop == the null class == no cond
    assert torch.allclose(net(x, t, cond, drop=torch.zeros(16, dtype=torch.bool)), out)


def test_set_transformer_equivariant_and_drop():
    torch.manual_seed(0)
    net = build_network((24, 2), 10, name="set_transformer", width=32, depth=2, heads=4)
    _randomise_output(net)
    with torch.no_grad():  # make adaLN non-trivial so blocks are not identities
        for blk in net.blocks:
            blk.ada[1].weight.normal_(0, 0.05, generator=gen(8))
    net.eval()
    x, t, cond = torch.randn(3, 24, 2), torch.rand(3), torch.tensor([1, 4, 9])
    out = net(x, t, cond)
    assert out.shape == (3, 24, 2)
    perm = torch.randperm(24, generator=gen(3))
    torch.testing.assert_close(net(x[:, perm], t, cond), out[:, perm], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(net(x, t, cond, drop=torch.ones(3, dtype=torch.bool)), out)


def test_build_network_errors():
    with pytest.raises(ValueError, match="valid: mlp, set_transformer"):
        build_network((2,), 0, name="unet")
    with pytest.raises(TypeError, match="valid keys: width, depth"):
        build_network((2,), 0, name="mlp", dim=3)
    with pytest.raises(ValueError, match="event shape"):
        build_network((2,), 0, name="set_transformer")
    assert build_network((8, 2), 0, name="set_transformer", width=None)  # null -> default


# -- artifacts ------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["density", "cloud"])
def test_artifacts_written(tmp_path, kind):
    if kind == "density":
        x, c = sample_density("pinwheel", 500, gen(0))
    else:
        x, c = sample_shapes(10, 32, gen(0))
    paths = PointsDomain().save_artifacts(x, tmp_path / "out", cond=c, prefix="s")
    names = sorted(p.name for p in paths)
    assert names == ["s.npy", "s.png", "s_cond.npy"]
    for p in paths:
        assert p.exists()
    png = (tmp_path / "out" / "s.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 2000
    from PIL import Image

    assert Image.open(tmp_path / "out" / "s.png").size[0] >= 300
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "s.npy"), x.numpy())
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "s_cond.npy"), c.numpy())
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temps
    paths = PointsDomain().save_artifacts(x, tmp_path / "nocond")
    assert sorted(p.name for p in paths) == ["samples.npy", "samples.png"]


# -- the mixture density: a sharp law known exactly -------------------------------------------
def test_the_mixture_density_samples_its_exact_law_in_any_dimension():
    from omnidiff_domains.points.densities import mixture_law

    law = mixture_law(8)
    x, y = sample_density("mixture", 40_000, gen(0), dim=8)
    assert x.shape == (40_000, 8) and x.dtype == torch.float32
    assert torch.equal(x, sample_density("mixture", 40_000, gen(0), dim=8)[0])
    assert torch.allclose(x.double().mean(0), law.mean(), atol=0.03)
    assert torch.allclose(torch.cov(x.double().T), law.covariance(), atol=0.05)
    share = torch.bincount(y, minlength=8).double() / len(y)
    assert torch.allclose(share, law.weights, atol=0.01)
    data = PointsData(kind="density", name="mixture", dim=8, train_size=64, val_size=8)
    data.setup()
    assert data.event_shape == (8,) and next(iter(data.train_dataloader()))["x"].shape[1] == 8
    with pytest.raises(ValueError, match="only data.name=mixture"):
        PointsData(kind="density", name="moons", dim=3)


def test_a_mixtures_reference_gives_each_mode_exactly_its_share():
    from omnidiff_domains.points.densities import mixture_law
    from omnidiff_domains.points.metrics import sliced_wasserstein

    law, n = mixture_law(2), 20_000
    x, comp = law.sample(n, gen(2), stratified=True)
    counts = torch.bincount(comp, minlength=8)
    assert int(counts.sum()) == n and ((counts - law.weights * n).abs() < 1).all()
    assert not (comp[1:] >= comp[:-1]).all()  # shuffled, not in blocks
    for k in range(8):  # each mode's points are still its Gaussian's
        assert torch.allclose(x[comp == k].mean(0), law.means[k], atol=0.01)
    # the held-out reference of a mixture run is stratified; its training data is not
    data = PointsData(kind="density", name="mixture", dim=2)
    ref, _ = data.reference(n)
    _, ref_comp = law.clean_components(ref)[0].max(-1)
    assert ((torch.bincount(ref_comp, minlength=8) - law.weights * n).abs() < 3).all()
    # without the reference's own weight noise, a perfect sample scores lower against it
    iid = [law.sample(n, gen(s))[0] for s in (3, 4)]
    assert sliced_wasserstein(iid[0], ref.double()) < sliced_wasserstein(iid[0], iid[1])


def test_mixture_metrics_see_wide_modes_and_wrong_weights():
    from omnidiff_domains.points.densities import mixture_law
    from omnidiff_domains.points.metrics import mixture_metrics

    law = mixture_law(2)
    x, comp = law.sample(20_000, gen(1))
    exact = mixture_metrics(x, law)
    assert abs(exact["mode_width"] - 1.0) < 0.03 and exact["mode_weight_err"] < 0.015
    # the same points pushed away from their means: modes 1.5x wider
    wide = law.means[comp] + 1.5 * (x - law.means[comp])
    assert abs(mixture_metrics(wide, law)["mode_width"] - 1.5) < 0.1
    # the heaviest mode's points dropped: its share is off by about its weight
    k = int(law.weights.argmax())
    err = mixture_metrics(x[comp != k], law)["mode_weight_err"]
    assert err > 0.8 * float(law.weights[k])
    # a mixture run's evaluation reports both
    data = PointsData(kind="density", name="mixture", dim=2)
    out = compute_metrics(x[:2000].float(), x[2000:4000].float(), data=data)
    assert {"mode_weight_err", "mode_width", "sliced_w2"} <= set(out)
