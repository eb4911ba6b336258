"""Control at sampling time against exact answers: Gaussian mixtures whose conditional laws,
noisy classifiers and denoisers are known in closed form (no training)."""

from __future__ import annotations

import pytest
import torch

from omnidiff.core.gaussian_mixture import eight_gaussians, random_mixture
from omnidiff.core.guidance import autoguided
from omnidiff.core.steering import guided_by_xt
from omnidiff.errors import UserError
from omnidiff.samplers import sample
from omnidiff_domains.points.metrics import sliced_wasserstein

SCHED, PRED = "cosine", "eps"


def _distance(x: torch.Tensor, ref: torch.Tensor) -> float:
    if x.shape[1] == 1:  # W2 itself in 1D
        return float((x[:, 0].sort().values - ref[:, 0].sort().values).pow(2).mean().sqrt())
    return sliced_wasserstein(x, ref)


def _impute(gm, obs, y, n, method, sampler="ddpm", steps=20, seed=0):
    known = torch.zeros(gm.dim, dtype=torch.float64)
    known[obs] = y
    noise = torch.randn(n, gm.dim, dtype=torch.float64,
                        generator=torch.Generator().manual_seed(seed))
    return sample(gm.model(SCHED, PRED), noise, schedule=SCHED, prediction=PRED,
                  sampler=sampler, steps=steps, known=known, mask=obs, method=method,
                  generator=torch.Generator().manual_seed(seed + 1))


@pytest.mark.parametrize("dim", [2, 8])
def test_default_imputation_follows_the_exact_conditional(dim):
    """The default (tds) keeps the observed coordinates and lands at most half as far from the
    exact conditional law as plain replacement at the same number of model calls."""
    gm = eight_gaussians() if dim == 2 else random_mixture(8, width="narrow", seed=0)
    obs = torch.zeros(dim, dtype=torch.bool)
    obs[: dim // 2] = True
    ys = gm.sample(6 if dim == 2 else 3, torch.Generator().manual_seed(11))[0][:, obs]
    ours, plain = [], []
    for j, y in enumerate(ys):
        ref = gm.conditional(obs, y).sample(2000, torch.Generator().manual_seed(j))[0]
        x = _impute(gm, obs, y, 2000, None, seed=j)
        assert (x[:, obs] - y).abs().max() <= 1e-6
        ours.append(_distance(x[:, ~obs], ref))
        plain.append(_distance(_impute(gm, obs, y, 2000, "replace", seed=j)[:, ~obs], ref))
    assert sum(ours) <= 0.5 * sum(plain), (ours, plain)


def test_conditional_of_a_mixture_matches_rejection():
    """GaussianMixture.conditional (the tests' ground truth) against samples of the joint law
    kept where the observed coordinate falls in a thin slab."""
    gm = eight_gaussians()
    x = gm.sample(400_000, torch.Generator().manual_seed(0))[0]
    near = x[(x[:, 0] - 1.0).abs() < 0.01, 1:]
    exact = gm.conditional(torch.tensor([True, False]), torch.tensor([1.0]))
    ref = exact.sample(len(near), torch.Generator().manual_seed(1))[0]
    assert abs(float(near.mean()) - float(exact.mean())) < 0.1
    assert _distance(near, ref) < 0.15


@pytest.mark.parametrize("method", ["replace", "repaint", "dps",
                                    {"name": "tds", "particles": 2}])
@pytest.mark.parametrize("sampler", ["dpmpp_2m", "euler_ancestral"])
def test_every_method_keeps_the_known_part_with_any_sampler(method, sampler):
    gm = random_mixture(4, width="wide", seed=1)
    obs = torch.tensor([True, False, True, False])
    y = torch.tensor([0.3, -0.2], dtype=torch.float64)
    x = _impute(gm, obs, y, 64, method, sampler=sampler, steps=6)
    assert torch.isfinite(x).all()
    assert (x[:, obs] - y).abs().max() <= 1e-6
    assert x[:, ~obs].std(0).min() > 0  # the hidden part is sampled, not copied


def test_classifier_guidance_with_the_exact_noisy_classifier_samples_the_mode():
    """With the exact noisy classifier p(k | x_t) (the mixture's responsibilities) at scale 1,
    classifier guidance is exact: samples are those of component k."""
    gm = eight_gaussians()
    k, schedule = 3, "cosine"
    from omnidiff.core.schedules import get_schedule
    sched = get_schedule(schedule)

    def log_p_k(x_t, t):
        return torch.log(gm.responsibilities(x_t, t, sched)[:, k])

    guided = guided_by_xt(gm.model(schedule, PRED), log_p_k, 1.0, schedule, PRED)
    noise = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = sample(guided, noise, schedule=schedule, prediction=PRED, sampler="dpmpp_2m",
               steps=40)
    comp = (x[:, None, :] - gm.means).norm(dim=-1).argmin(1)
    assert (comp == k).float().mean() > 0.99
    assert torch.allclose(x.mean(0), gm.means[k], atol=0.02)
    assert torch.allclose(x.std(0), torch.full((2,), 0.2, dtype=torch.float64), atol=0.02)


def test_editing_keeps_the_law_and_stays_near_the_input():
    """SDEdit from data samples: the output follows the data law again (the noising matches
    the grid's start), and strength orders how far it moves."""
    gm = eight_gaussians()
    init = gm.sample(4000, torch.Generator().manual_seed(0))[0]
    ref = gm.sample(4000, torch.Generator().manual_seed(1))[0]
    noise = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    moved, stay = {}, {}
    for strength in (0.3, 0.6, 1.0):
        x = sample(gm.model(SCHED, PRED), noise, schedule=SCHED, prediction=PRED,
                   sampler="ddpm", steps=40, init=init, strength=strength,
                   generator=torch.Generator().manual_seed(3))
        assert sliced_wasserstein(x, ref) < 0.1
        moved[strength] = float((x - init).norm(dim=1).mean())
        mode = (x[:, None] - gm.means).norm(dim=-1).argmin(1)
        stay[strength] = float((mode == (init[:, None] - gm.means).norm(dim=-1).argmin(1))
                               .float().mean())
    assert moved[0.3] < moved[0.6] < moved[1.0]
    assert moved[1.0] > 2.0  # 2.6: two independent points of the circle
    assert stay[0.3] > 0.7 > stay[0.6] > stay[1.0] and stay[1.0] < 0.3  # 1/8: independent


def test_autoguidance_is_the_linear_rule():
    gm, weak = eight_gaussians(), eight_gaussians(std=0.4)
    m, w = gm.model(SCHED, PRED), weak.model(SCHED, PRED)
    x, t = torch.randn(5, 2, dtype=torch.float64), torch.full((5,), 0.4, dtype=torch.float64)
    g = autoguided(m, w, 2.5)
    assert torch.allclose(g(x, t), w(x, t) + 2.5 * (m(x, t) - w(x, t)))
    assert torch.allclose(autoguided(m, w, 1.0)(x, t), m(x, t))
    assert g.cfg_batches == 2


def test_autoguidance_undoes_an_error_the_weak_model_has_more_of():
    """Modes too wide (std 0.3 for 0.2), guided by a model with more of that error (0.4): the
    guided samples' modes are narrower than the model's, each mode keeps its share, and a
    larger scale narrows them further."""
    truth, main, weak = (eight_gaussians(std=s) for s in (0.2, 0.3, 0.4))
    noise = torch.randn(4000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))

    def spread(model):
        x = sample(model, noise, schedule=SCHED, prediction=PRED, sampler="dpmpp_2m", steps=30)
        mode = torch.cdist(x, truth.means).argmin(1)
        shares = torch.bincount(mode, minlength=8) / len(x)
        return float((x - truth.means[mode]).pow(2).sum(1).mean().div(2).sqrt()), shares

    m, w = main.model(SCHED, PRED), weak.model(SCHED, PRED)
    alone, _ = spread(m)
    guided, shares = spread(autoguided(m, w, 2.0))
    more, _ = spread(autoguided(m, w, 3.0))
    assert abs(alone - 0.3) < 0.02
    assert more < guided < alone - 0.05 and guided < 0.26, (alone, guided, more)
    assert shares.min() > 0.125 / 2


def test_guide_by_a_function_moves_samples_towards_its_mode():
    gm = eight_gaussians()
    noise = torch.randn(2000, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    plain = sample(gm.model(SCHED, PRED), noise, schedule=SCHED, prediction=PRED, steps=20)
    x = sample(gm.model(SCHED, PRED), noise, schedule=SCHED, prediction=PRED, steps=20,
               guide=lambda x0: -((x0 - torch.tensor([2.0, 0.0])) ** 2).sum(1), guide_scale=1.0)
    right = lambda v: float(((v - torch.tensor([2.0, 0.0])).norm(dim=1) < 0.8).float().mean())
    assert right(x) > 2 * right(plain)


@pytest.mark.parametrize("kw, words", [
    ({"known": torch.zeros(2)}, "both"),
    ({"known": torch.zeros(2), "mask": torch.ones(2, dtype=torch.bool)}, "nothing to fill"),
    ({"known": torch.zeros(2), "mask": torch.zeros(2)}, "hides every value"),
    ({"known": torch.zeros(3), "mask": torch.tensor([1, 0])}, "shape"),
    ({"known": torch.zeros(2), "mask": torch.tensor([0.5, 0])}, "boolean"),
    ({"known": torch.zeros(2), "mask": torch.tensor([1, 0]), "method": "nope"}, "replace"),
    ({"known": torch.zeros(2), "mask": torch.tensor([1, 0]),
      "method": {"name": "repaint", "particles": 2}}, "resample"),
    ({"method": "tds"}, "known="),
    ({"init": torch.zeros(2), "strength": 0.0}, "(0, 1]"),
    ({"init": torch.zeros(2), "strength": 1.5}, "(0, 1]"),
    ({"strength": 0.5}, "init="),
    ({"init": torch.zeros(5, 3)}, "shape"),
    ({"guide": 3.0}, "guide="),
    ({"known": torch.zeros(2), "mask": torch.tensor([1, 0]), "guide": lambda x: x.sum(1)},
     "tds"),
])
def test_control_mistakes_are_one_line_before_sampling(kw, words):
    calls = []

    def model(x, t):
        calls.append(1)
        return torch.zeros_like(x)
    with pytest.raises(UserError, match=None) as info:
        sample(model, torch.randn(5, 2), schedule=SCHED, prediction=PRED, steps=3, **kw)
    assert words in str(info.value) and "\n" not in str(info.value)
    assert not calls


# ---- the same through omnidiff.load(...).generate -------------------------------------------
DENSITY = {"kind": "density", "name": "moons", "train_size": 512, "val_size": 64,
           "batch_size": 64}


def _points_ckpt(path, prediction="v"):
    from omnidiff.model_file import save_inference
    from omnidiff.model_spec import ModelSpec
    from omnidiff.training.diffusion_module import DiffusionModule
    torch.manual_seed(0)
    module = DiffusionModule(ModelSpec("points", {"name": "mlp", "width": 32, "depth": 1},
                                       {"name": "cosine"}, (2,), 0, prediction=prediction,
                                       data=DENSITY))
    return save_inference(module, path)


@pytest.fixture(scope="module")
def points_pipe(tmp_path_factory):
    import omnidiff
    root = tmp_path_factory.mktemp("control")
    return omnidiff.load(_points_ckpt(root / "model.pt"), device="cpu"), root


@pytest.mark.parametrize("method", ["tds", "replace", "repaint", "dps"])
def test_pipeline_imputation_per_sample_and_batched(points_pipe, method):
    pipe, _ = points_pipe
    known = torch.linspace(-1, 1, 9)[:, None].expand(9, 2)  # one observation per sample
    mask = torch.tensor([True, False])
    a = pipe.generate(9, steps=4, seed=2, known=known, mask=mask, method=method)
    b = pipe.generate(9, steps=4, seed=2, known=known, mask=mask, method=method, batch_size=4)
    assert torch.equal(a[:, 0], known[:, 0]) and torch.equal(b[:, 0], known[:, 0])
    assert torch.isfinite(a).all()
    if method == "dps":  # the others draw fresh noise per batch, as stochastic samplers do
        assert torch.allclose(a, b, atol=1e-5)
    evals = pipe.last_stats["network_evals"]
    assert evals == {"tds": 4 * 8 + 1, "replace": 4, "repaint": 3 * 10 + 1, "dps": 4}[method]


def test_pipeline_autoguidance_and_its_checks(points_pipe, tmp_path):
    pipe, root = points_pipe
    same = pipe.generate(6, steps=4, seed=1)
    guided = pipe.generate(6, steps=4, seed=1, guide_model=root / "model.pt", guidance=3.0)
    assert torch.allclose(same, guided, atol=1e-5)  # guided by itself: the model
    assert pipe.last_stats["network_evals"] == 8
    other = _points_ckpt(tmp_path / "eps.pt", prediction="eps")
    with pytest.raises(UserError, match="prediction differs"):
        pipe.generate(6, steps=4, guide_model=other, guidance=2.0)
    with pytest.raises(UserError, match="needs guidance"):
        pipe.generate(6, steps=4, guide_model=root / "model.pt")
    with pytest.raises(UserError, match="one sample"):
        pipe.generate(6, steps=4, known=torch.zeros(5, 2), mask=torch.tensor([True, False]))


# ---- classifier guidance with a trained noise-aware classifier ---------------------------------
def test_stage_classifier_trains_a_classifier_that_guides_to_the_asked_mode(tmp_path, capsys):
    """``omnidiff train stage=classifier`` on the eight-mode density; its classifier guides the
    exact denoiser of the same (standardised) density into the asked mode."""
    import json

    from omnidiff.cli.commands import main
    from omnidiff.core.gaussian_mixture import GaussianMixture
    from omnidiff.core.schedules import get_schedule
    from omnidiff.methods.classifier import load_classifier
    from omnidiff_domains.points.densities import _stats

    out = tmp_path / "clf"
    code = main(["train", "recipe=points2d", "data.name=eight_gaussians",
                 "data.conditional=true", "stage=classifier", "classifier.width=64",
                 "classifier.depth=2", "trainer.max_steps=400", "optim.warmup=20",
                 "eval.n_ref=512", f"out={out}", "trainer.enable_progress_bar=false"])
    assert code == 0
    assert "classifier: " in capsys.readouterr().out
    final = json.loads((out / "metrics.json").read_text())["final"]
    assert final["acc_t0.0"] > 0.95 and final["acc_t0.9"] < final["acc_t0.0"]
    clf, payload = load_classifier(out / "model.pt")
    assert payload["num_classes"] == 8 and payload["schedule"]["name"] == "cosine"
    mean, std = _stats("eight_gaussians")
    gm = eight_gaussians()
    gm = GaussianMixture(gm.weights, (gm.means - mean) / std, torch.full((8,), (0.2 / std) ** 2))
    sched = get_schedule("cosine")
    hits = []
    for k in (0, 3, 6):
        labels = torch.full((400,), k)
        guided = guided_by_xt(gm.model(sched, "v"),
                              lambda x, t: clf.log_prob(x.float(), t, labels), 1.0, sched, "v")
        noise = torch.randn(400, 2, dtype=torch.float64,
                            generator=torch.Generator().manual_seed(k))
        x = sample(guided, noise, schedule=sched, prediction="v", steps=20)
        hits.append(float(((x[:, None] - gm.means).norm(dim=-1).argmin(1) == k).float().mean()))
    assert min(hits) > 0.9, hits


def test_stage_classifier_needs_labels(tmp_path, capsys):
    from omnidiff.cli.commands import main
    code = main(["train", "recipe=points2d", "stage=classifier", f"out={tmp_path / 'x'}"])
    assert code != 0
    assert "labelled data" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unconditional_digits_from_a_guided_recipe(tmp_path, capsys):
    """``data.conditional=false`` on image_digits (a recipe with guidance 2): the guidance is dropped
    with one line before training, the run's evaluation samples unguided and reports each
    class's share, and the model is guided by its own early checkpoint (autoguidance)."""
    import json

    import omnidiff
    from omnidiff.cli.commands import main

    out = tmp_path / "u"
    code = main(["train", "recipe=image_digits", "data.conditional=false", f"out={out}",
                 "trainer.max_steps=20", "checkpoint.every_n_train_steps=10", "checkpoint.keep=-1",
                 "model.base_channels=16", "model.channel_mult=[1]", "model.num_res_blocks=1",
                 "model.attn_resolutions=[]", "model.norm_groups=8", "model.num_head_channels=8",
                 "sampler.steps=4", "eval.n_samples=40", "eval.n_ref=80",
                 "trainer.enable_progress_bar=false"])
    assert code == 0
    assert "sampler.guidance=2.0 dropped" in capsys.readouterr().out
    assert "class_share_min" in json.loads((out / "metrics.json").read_text())["final"]
    pipe = omnidiff.load(out / "model.pt", device="cpu")
    assert not pipe.spec.cond.conditional
    x = pipe.generate(4, steps=3, seed=0, guide_model=out / "checkpoints" / "step=10.ckpt",
                      guidance=2.0)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
    assert pipe.last_stats["network_evals"] == 6


def test_tds_calls_a_model_bound_to_one_condition_per_sample_on_that_many_rows():
    """A model closing over B rows of conditions (what generate builds) sees B rows per call:
    tds evaluates its particles one particle at a time."""
    gm = eight_gaussians()
    exact = gm.model(SCHED, PRED)
    rows = []

    def model(x, t):
        rows.append(x.shape[0])
        return exact(x, t)
    obs = torch.tensor([True, False])
    x = sample(model, torch.randn(5, 2, dtype=torch.float64), schedule=SCHED, prediction=PRED,
               steps=4, known=torch.tensor([2.0, 0.0]), mask=obs,
               method={"name": "tds", "particles": 3})
    assert set(rows) == {5} and torch.equal(x[:, 0], torch.full((5,), 2.0, dtype=x.dtype))


@pytest.mark.parametrize("method", [{"name": "tds", "particles": 4},
                                    {"name": "smc", "particles": 4}])
def test_particle_methods_keep_each_sample_with_its_own_observation(method):
    """Rows with different observations in one batch: each completion follows its own
    conditional (x = 2 on the circle: y near 0; x = 0: y near +-2), so particles are never
    handed to another sample."""
    gm = eight_gaussians()
    known = torch.tensor([[2.0, 0.0], [0.0, 0.0]], dtype=torch.float64).repeat(100, 1)
    x = sample(gm.model(SCHED, PRED), torch.randn(200, 2, dtype=torch.float64), schedule=SCHED,
               prediction=PRED, sampler="ddpm", steps=10, known=known,
               mask=torch.tensor([True, False]), method=method,
               generator=torch.Generator().manual_seed(0))
    assert (x[0::2, 1].abs() < 0.8).float().mean() > 0.9  # the mode at (2, 0)
    assert ((x[1::2, 1].abs() - 2.0).abs() < 0.8).float().mean() > 0.9  # the modes at (0, +-2)


# ---- files: samples and masks from the command line, artifacts that show the given part -------
def test_audio_and_video_masks_and_their_mistakes(tmp_path):
    from omnidiff.errors import DataError
    from omnidiff_domains.audio.data import AudioData
    from omnidiff_domains.video.data import VideoData

    audio = AudioData()
    m = audio.read_mask("0.10-0.13")
    assert m.shape == audio.event_shape and int((~m).sum()) == round(0.03 * audio.sample_rate)
    assert not m[0, int(0.11 * audio.sample_rate)] and m[0, 0]
    with pytest.raises(DataError, match="gaps in seconds"):
        audio.read_mask("0.2-0.1")
    video = VideoData(frames=8, size=16, digit_size=8)
    m = video.read_mask("0,1,6,7")
    assert m.shape == video.event_shape and m[[0, 1, 6, 7]].all() and not m[2:6].any()
    with pytest.raises(DataError, match="frames run from 0 to 7"):
        video.read_mask([0, 9])


def test_artifacts_show_the_filled_part(tmp_path):
    import numpy as np
    from PIL import Image

    from omnidiff_domains.audio.artifacts import save_artifacts as audio_save
    from omnidiff_domains.image.artifacts import save_artifacts as image_save
    from omnidiff_domains.video.artifacts import save_artifacts as video_save

    x = torch.rand(4, 1, 8, 8) * 2 - 1
    known = torch.zeros_like(x, dtype=torch.bool)
    known[..., :4, :] = True
    png = image_save(x, tmp_path, known=known)[0]
    rgb = np.asarray(Image.open(png).convert("RGB"))
    assert ((rgb == (230, 40, 40)).all(-1)).sum() >= 4 * 32  # one red line per tile
    wav = torch.sin(torch.arange(2000) * 0.3).view(1, 1, -1).repeat(2, 1, 1) * 0.5
    gap = torch.ones_like(wav, dtype=torch.bool)
    gap[..., 800:1040] = False
    assert any(p.suffix == ".png" for p in audio_save(wav, tmp_path / "a", known=gap))
    clips = torch.rand(2, 4, 1, 16, 16) * 2 - 1
    frames = torch.zeros_like(clips, dtype=torch.bool)
    frames[:, [0, 3]] = True
    assert any(p.suffix == ".png" for p in video_save(clips, tmp_path / "v", known=frames))


def test_cli_completes_an_image_from_png_files(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    from omnidiff.cli.commands import main
    from omnidiff.model_file import save_inference
    from omnidiff.model_spec import ModelSpec
    from omnidiff.training.diffusion_module import DiffusionModule

    torch.manual_seed(0)
    unet = {"base_channels": 16, "channel_mult": [1], "num_res_blocks": 1,
            "attn_resolutions": [], "norm_groups": 8, "num_head_channels": 8}
    ckpt = save_inference(DiffusionModule(ModelSpec("image", unet, {"name": "cosine"},
                                                    (1, 8, 8), 10, prediction="v",
                                                    data={"name": "digits"})),
                          tmp_path / "model.pt")
    pixels = (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4)
    Image.fromarray(pixels, "L").save(tmp_path / "digit.png")
    hole = np.zeros((8, 8), dtype=np.uint8)
    hole[4:] = 255  # white: fill in
    Image.fromarray(hole, "L").save(tmp_path / "hole.png")
    out = tmp_path / "out"
    code = main(["sample", f"checkpoint={ckpt}", f"known={tmp_path / 'digit.png'}",
                 f"mask={tmp_path / 'hole.png'}", "cond=3", "n=2", "steps=2",
                 "method=replace", f"out={out}"])
    assert code == 0, capsys.readouterr().err
    assert "imputed by replace" in capsys.readouterr().out
    x = np.load(out / "samples.npy")  # (2, 1, 8, 8) in [-1, 1]
    assert np.allclose(x[:, 0, :4], pixels[:4] / 127.5 - 1, atol=1e-5)
    rgb = np.asarray(Image.open(out / "samples.png").convert("RGB"))
    assert ((rgb == (230, 40, 40)).all(-1)).any()
    code = main(["sample", f"checkpoint={ckpt}", f"known={tmp_path / 'digit.png'}",
                 "mask=0.1-0.2", f"out={tmp_path / 'never'}"])
    assert code != 0 and "not an image file" in capsys.readouterr().err
