"""Few-step generation: the consistency parametrisation, its levels and loss, the consistency
sampler, distillation of an exact Gaussian-mixture denoiser, and ``omnidiff distill``."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

from omnidiff.cli.commands import main
from omnidiff.core.gaussian_mixture import GaussianMixture
from omnidiff.core.schedules import get_schedule
from omnidiff.methods import consistency as cm
from omnidiff.samplers import sample


class TinyNet(nn.Module):
    """An MLP over 2D points and the log noise level (sigma / alpha) of the schedule."""

    def __init__(self, schedule, width: int = 64):
        super().__init__()
        self.schedule = schedule
        self.f = nn.Sequential(nn.Linear(2 + 16, width), nn.SiLU(), nn.Linear(width, width),
                               nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                               nn.Linear(width, 2))
        self.register_buffer("freqs", torch.exp(torch.linspace(0, math.log(16), 8)))

    def forward(self, x, t, cond=None, drop=None):
        a, s = self.schedule.alpha_sigma(t.double())
        e = (torch.log(s / a).clamp(-20, 20).float() / 4)[:, None] * self.freqs  # (B, 8)
        return self.f(torch.cat([x.float(), torch.sin(e), torch.cos(e)], 1)).to(x.dtype)


@pytest.mark.parametrize("name", ["cosine", "linear", "flow", "edm"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boundary_condition_holds_exactly_at_the_smallest_noise_level(name, dtype):
    sch = get_schedule(name)
    f = cm.ConsistencyModel(TinyNet(sch), sch, "v").to(dtype)
    x = torch.randn(64, 2, dtype=dtype)
    t_min = torch.full((64,), sch.t_min, dtype=dtype)
    with torch.no_grad():
        out = f(x, t_min)
        assert torch.equal(out, x)  # bit for bit, whatever the weights
        for p in f.parameters():
            p.add_(torch.randn_like(p))
        assert torch.equal(f(x, t_min), x)
        later = f(x, torch.full((64,), sch.t_min * 20, dtype=dtype))
    assert not torch.allclose(later, x)  # above t_min the network matters


def test_boundary_coefficients_fall_from_one_to_zero():
    for name in ("cosine", "flow"):
        sch = get_schedule(name)
        t = torch.linspace(sch.t_min, sch.t_max, 50, dtype=torch.float64)
        c_skip, c_out = cm.boundary_coefficients(sch, t)
        assert torch.isfinite(c_skip).all() and c_skip[0] == 1.0 and c_out[0] == 0.0
        assert (c_skip[1:] <= c_skip[:-1]).all() and c_skip[-1] < 1e-3
        assert torch.allclose(c_skip + c_out, torch.ones_like(c_skip))


def test_levels_curriculum_and_level_sampling():
    sch = get_schedule("cosine")
    ts = cm.discretization(sch, 18)
    assert ts[0] == sch.t_min and ts[-1] == sch.t_max and (ts[1:] > ts[:-1]).all()
    # iCT: 10 levels doubling to 1280 in 8 equal stages, +1
    counts = [cm.curriculum(k, 800) for k in (0, 99, 100, 250, 799)]
    assert counts == [11, 11, 21, 41, 1281]
    big = cm.discretization(sch, 641)
    probs = cm.level_probabilities(sch, big, "lognormal", p_mean=-1.1, p_std=2.0)
    assert torch.isclose(probs.sum(), torch.tensor(1.0, dtype=torch.float64))
    sig = torch.exp(-sch.log_snr(big))
    mid = torch.sqrt(sig[1:] * sig[:-1])
    # the median level of the mixture is the log-normal's median, exp(p_mean)
    median = mid[int(torch.searchsorted(probs.cumsum(0), torch.tensor(0.5, dtype=torch.float64)))]
    assert abs(math.log(float(median)) + 1.1) < 0.05
    w = cm.level_weights(sch, big, "ict")
    assert (w > 0).all() and w[0] > w[-1] * 1e3  # 1 / (sigma_{n+1} - sigma_n)
    uniform = cm.level_probabilities(sch, ts, "uniform")
    assert torch.allclose(uniform, torch.full((17,), 1 / 17, dtype=torch.float64))


def test_pseudo_huber_is_quadratic_near_zero_and_linear_far_away():
    a = torch.zeros(2, 3)
    small, large = torch.full((2, 3), 1e-4), torch.full((2, 3), 100.0)
    c = 0.01
    assert torch.allclose(cm.pseudo_huber(small, a, c), torch.full((2,), 3e-8 / (2 * c)),
                          rtol=1e-3)
    assert torch.allclose(cm.pseudo_huber(large, a, c), torch.full((2,), math.sqrt(3) * 100),
                          rtol=1e-3)
    assert math.isclose(cm.huber_c(3072), 0.00054 * math.sqrt(3072))


def test_consistency_sampler_costs_one_evaluation_per_step_and_renoises():
    gm = GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.05, 0.05])
    sch = get_schedule("cosine")
    noise = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for steps in (1, 2, 4):
        st = {}
        x = sample(gm.model(sch, "x0"), noise, schedule=sch, prediction="x0",
                   sampler="consistency", steps=steps, stats=st,
                   generator=torch.Generator().manual_seed(1))
        assert st["nfe"] == steps and st["grid"] == "logsnr_trailing"
        spread = float(x[:, 0].abs().mean())
        if steps == 1:  # one jump from pure noise is the data's mean: the denoiser at t_max
            assert spread < 0.05
        else:  # re-noised to a lower level, the exact denoiser separates the modes
            assert spread > 1.2
    from omnidiff.samplers import timesteps
    ts = timesteps(sch, 4, "logsnr_trailing")
    assert ts[0] == sch.t_max and ts[-2] > sch.t_min * 10 and ts[-1] == 0


def _distil_exact_mixture(gm, sch, steps: int = 1500):
    """Consistency distillation of the exact denoiser of ``gm`` into a tiny MLP."""
    exact = gm.model(sch, "v")
    teacher = lambda x, t, cond=None, drop=None: exact(x, t)  # noqa: E731
    torch.manual_seed(0)
    student = cm.ConsistencyModel(TinyNet(sch), sch, "v")
    target = copy.deepcopy(student).requires_grad_(False)
    levels = cm.discretization(sch, 12)
    probs, weights = cm.level_probabilities(sch, levels), cm.level_weights(sch, levels)
    point = cm.distillation_points(teacher, levels.tolist(), schedule=sch, prediction="v",
                                   solver="heun")
    opt = torch.optim.Adam(student.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x0 = gm.sample(256, g)[0].float()
        loss, _ = cm.consistency_loss(student, target, x0, schedule=sch, levels=levels,
                                      probs=probs, weights=weights, point=point, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        with torch.no_grad():
            for tp, p in zip(target.parameters(), student.parameters()):
                tp.lerp_(p, 0.05)  # target EMA 0.95
    return student.eval()


def _mixture_errors(gm, sch, x):
    x = x.double()
    comp = gm.responsibilities(x, torch.full((len(x),), sch.t_min, dtype=torch.float64),
                               sch).argmax(1)
    weights = torch.bincount(comp, minlength=len(gm.weights)).double() / len(x)
    cov = gm.covariance()
    return (float((x.mean(0) - gm.mean()).abs().max()),
            float((torch.cov(x.T) - cov).abs().max() / cov.diagonal().max()),
            float((weights - gm.weights).abs().max()))


def test_consistency_function_distilled_from_an_exact_mixture_maps_noise_to_it():
    gm = GaussianMixture([0.5, 0.3, 0.2], [[-2.0, 0.0], [2.0, 1.0], [0.5, -2.0]],
                         [0.1, 0.05, 0.2])
    sch = get_schedule("cosine")
    student = _distil_exact_mixture(gm, sch)
    noise = torch.randn(8000, 2, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for steps in (1, 2):
            x = sample(student, noise, schedule=sch, prediction="x0", sampler="consistency",
                       steps=steps, generator=torch.Generator().manual_seed(2))
            mean_err, cov_err, weight_err = _mixture_errors(gm, sch, x)
            assert mean_err < 0.15 and cov_err < 0.2 and weight_err < 0.1, \
                (steps, mean_err, cov_err, weight_err)
        # the teacher's own single step lands on the mean: the student learned the jump
        one = sample(gm.model(sch, "v"), noise.double(), schedule=sch, prediction="v",
                     sampler="ddim", steps=1)
        assert _mixture_errors(gm, sch, one)[1] > 0.8


# ---- omnidiff distill, end to end on tiny runs ---------------------------------------------

TINY = ["trainer.log_every_n_steps=1", "trainer.enable_progress_bar=false",
        "eval.n_samples=64", "eval.n_ref=64", "threads=1", "data.val_size=32",
        "data.train_size=256", "eval.every_n_steps=0", "checkpoint.every_n_train_steps=0"]
DTINY = [*TINY, "distill.grid_samples=128"]  # a distillation's grids: chosen, cheaply


def _cli(args, capsys):
    code = main(args)
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """A tiny points2d teacher on the cosine schedule and one on the flow schedule."""
    root = tmp_path_factory.mktemp("teachers")
    out = {}
    for name, extra in (("cosine", []), ("flow", ["schedule=flow", "loss=flow"])):
        assert main(["train", "recipe=points2d", f"out={root / name}", "trainer.max_steps=30",
                     "model.width=32", "model.depth=1", "data.batch_size=64", *TINY,
                     *extra]) == 0
        out[name] = root / name / "model.pt"
    return out


def test_distill_writes_a_student_that_samples_in_two_steps(teachers, tmp_path, capsys):
    import omnidiff

    run = tmp_path / "cd"
    code, out, err = _cli(["distill", f"teacher={teachers['cosine']}", f"out={run}",
                           "trainer.max_steps=6", "distill.grid_samples=256", *TINY], capsys)
    assert code == 0, err
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["sampler"] == {"name": "consistency", "steps": 2}
    assert payload["distilled"]["method"] == "cd" and payload["consistency"]["scale"] == 10.0
    assert payload["distilled"]["teacher"] == str(teachers["cosine"].resolve())
    pipe = omnidiff.load(run / "model.pt", device="cpu")
    assert isinstance(pipe.model, cm.ConsistencyModel)
    x = pipe.generate(16, seed=0)
    # its 2-step grid was chosen among its training levels at the end of the run
    assert pipe.last_sampler == "consistency" and pipe.last_grid == "calibrated"
    assert x.shape == (16, 2) and torch.isfinite(x).all()
    chosen = payload["grids"]["consistency:2"]
    levels = cm.discretization(pipe.model.schedule, payload["consistency"]["levels"]).tolist()
    assert payload["consistency"]["levels"] == 18 and chosen["n"] == 256
    assert chosen["times"][0] == levels[-1] and chosen["times"][1] in levels
    assert chosen["value"] <= chosen["start_value"] and chosen["metric"] == "sliced_w2"
    summary = json.loads((run / "metrics.json").read_text())
    assert summary["grids"]["2"]["times"] == chosen["times"] and "2-step grid chosen" in out
    assert set(summary["grids"]) == {"2", "4"} and len(payload["grids"]) == 2
    code, out, err = _cli(["calibrate", f"checkpoint={run / 'model.pt'}", "sampler=consistency",
                           "steps=3", "n=128"], capsys)
    assert code == 0 and "sliced_w2 of 128 samples" in out, err
    grids = torch.load(run / "model.pt", weights_only=True)["grids"]
    assert set(grids) == {"consistency:2", "consistency:3", "consistency:4"}
    # the .ckpt reads as the same student (on a named grid: the chosen one is model.pt's)
    ck = omnidiff.load(run / "checkpoints" / "last.ckpt", device="cpu")
    x = pipe.generate(16, seed=0, grid="logsnr_trailing")
    assert torch.allclose(ck.generate(16, seed=0, grid="logsnr_trailing"), x, atol=1e-5)
    # the teacher's weights started the student; its network is unchanged in layout
    teacher = torch.load(teachers["cosine"], weights_only=True)["state_dict"]
    assert set(payload["state_dict"]) == set(teacher)
    code, out, err = _cli(["sample", f"checkpoint={run / 'model.pt'}", "n=8",
                           f"out={tmp_path / 'gen'}"], capsys)
    assert code == 0 and "sampled with consistency" in out, err
    with pytest.raises(Exception, match="no probability-flow ODE"):
        pipe.log_likelihood(x)
    code, _, err = _cli(["distill", f"teacher={run / 'model.pt'}", f"out={tmp_path / 'no'}"],
                        capsys)
    assert code == 2 and "itself a distilled student" in err


def test_consistency_training_without_a_teacher_and_reflow(teachers, tmp_path, capsys):
    run = tmp_path / "ct"
    code, out, err = _cli(["distill", "method=ct", "recipe=distill_points2d", f"out={run}",
                           "trainer.max_steps=6", "model.width=32", "model.depth=1",
                           "data.batch_size=64", *DTINY], capsys)
    assert code == 0, err
    hp = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["distill"]["level_sampling"] == "lognormal" and hp["distill"]["target_ema"] == 0
    assert hp["distill"]["total_steps"] == 6
    run = tmp_path / "reflow"
    code, out, err = _cli(["distill", "method=reflow", f"teacher={teachers['flow']}",
                           f"out={run}", "trainer.max_steps=6", "distill.pairs=128",
                           "distill.teacher_steps=4", *TINY], capsys)
    assert code == 0, err
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["sampler"] == {"name": "euler", "grid": "trailing", "steps": 2}
    assert "consistency" not in payload
    import omnidiff

    pipe = omnidiff.load(run / "model.pt", device="cpu")
    pipe.generate(8, seed=0)
    assert (pipe.last_sampler, pipe.last_grid) == ("euler", "trailing")
    pipe.generate(8, seed=0, sampler="heun")
    assert pipe.last_grid == "uniform"  # another sampler: the schedule's own grid


@pytest.mark.parametrize("args, message", [
    (["method=cd"], "learns from a teacher"),
    (["method=reflow", "teacher=COSINE"], "flow"),
    (["method=xy", "teacher=COSINE"], "choose cd"),
    (["teacher=COSINE", "distill.solver=ddpm"], "deterministic"),
    (["teacher=COSINE", "distill.guidance=2"], "conditional teacher"),
    (["teacher=COSINE", "distill.levle=3"], "did you mean distill.levels"),
    (["teacher=COSINE", "recipe=distill_image_digits"], "'points' model"),
])
def test_distill_mistakes_are_one_line_before_any_run_folder(args, message, teachers, tmp_path,
                                                             capsys):
    out = tmp_path / "never"
    args = [a.replace("COSINE", str(teachers["cosine"])) for a in args]
    code, _, err = _cli(["distill", *args, f"out={out}", *TINY[:3]], capsys)
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_train_sends_a_distillation_recipe_to_distill(capsys, tmp_path):
    code, _, err = _cli(["train", "recipe=distill_points2d", f"out={tmp_path / 'no'}"], capsys)
    assert code == 2 and "omnidiff distill teacher=" in err and "recipe=distill_points2d" in err
    assert not (tmp_path / "no").exists()


def test_guidance_respects_rows_already_dropped():
    """A distillation teacher under the student's condition dropout: dropped rows get the
    unconditional output, the others the guided one."""
    from omnidiff.core.guidance import classifier_free

    def model(x, t, cond=None, drop=None):
        c = cond.float()[:, None].where(~drop[:, None], torch.zeros(1))
        return x + c  # conditional: x + label; unconditional: x
    x, cond = torch.zeros(4, 1), torch.tensor([1, 2, 3, 4])
    drop = torch.tensor([False, True, False, True])
    out = classifier_free(model, cond, 3.0, drop=drop)(x, torch.zeros(4))
    assert out[:, 0].tolist() == [3.0, 0.0, 9.0, 0.0]


def test_a_distillation_resumes_to_the_same_student(teachers, tmp_path, capsys):
    """Stopped after 4 steps and resumed to 8, a CD run ends with the weights of an unbroken
    8-step run (teacher, EMA target, the levels' curriculum and RNG come back with the
    checkpoint)."""
    base = ["distill", f"teacher={teachers['cosine']}", "distill.level_groups=3",
            "distill.target_ema=0.95", "distill.levels=[2,8]", "distill.total_steps=8", *DTINY]
    assert _cli([*base, f"out={tmp_path / 'whole'}", "trainer.max_steps=8"], capsys)[0] == 0
    part = tmp_path / "part"
    assert _cli([*base, f"out={part}", "trainer.max_steps=4"], capsys)[0] == 0
    code, out, err = _cli([*base, f"out={part}", "trainer.max_steps=8", "resume=auto"], capsys)
    assert code == 0, err
    a = torch.load(tmp_path / "whole" / "model.pt", weights_only=True)
    b = torch.load(part / "model.pt", weights_only=True)
    assert b["global_step"] == 8
    for k, v in a["state_dict"].items():
        assert torch.equal(v, b["state_dict"][k]), k


def test_cd_levels_can_double_over_training_like_cts_curriculum(teachers, tmp_path, capsys):
    """``distill.levels=[s0, s1]``: CD's levels follow iCT's doubling over the run's steps
    (ECT's shrinking step); a bad value is one line."""
    from types import SimpleNamespace

    from omnidiff.methods.distill_options import distill_options
    from omnidiff.training.distill_module import DistillModule

    run = tmp_path / "cur"
    code, _, err = _cli(["distill", f"teacher={teachers['cosine']}", f"out={run}",
                         "distill.levels=[4,16]", "trainer.max_steps=6", *DTINY], capsys)
    assert code == 0, err
    hp = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["hyper_parameters"]
    assert hp["distill"]["levels"] == [4, 16] and hp["distill"]["total_steps"] == 6
    counts = [DistillModule.n_levels(SimpleNamespace(hparams=hp, method="cd", global_step=k))
              for k in (0, 1, 2, 3, 5)]
    assert counts == [5, 5, 9, 9, 17]  # 4, 8, 16 levels in three equal stages, + 1
    assert distill_options({"teacher": "t", "levels": [8, 64]})["levels"] == [8, 64]
    for bad in ([8], [64, 8], 1, [2.5, 8]):
        with pytest.raises(Exception, match="distill.levels"):
            distill_options({"teacher": "t", "levels": bad})


def test_choose_times_moves_each_inner_time_to_the_best_candidate_in_order():
    """Coordinate search over inner times: the best candidate strictly between neighbours,
    kept only where it beats the grid so far; t_max and 0 never move."""
    target = [1.0, 0.6, 0.27, 0.0]
    calls = []

    def score(grid):
        calls.append(grid)
        assert all(a > b for a, b in zip(grid, grid[1:]))  # always a valid grid
        return sum((a - b) ** 2 for a, b in zip(grid, target))

    cands = [0.9, 0.7, 0.5, 0.3, 0.2, 0.1]
    grid, value, first = cm.choose_times(score, [1.0, 0.8, 0.4, 0.0], cands)
    assert grid == [1.0, 0.7, 0.3, 0.0] and first == pytest.approx(0.2 ** 2 + 0.13 ** 2)
    assert value == pytest.approx(0.1 ** 2 + 0.03 ** 2) and len(calls) == 1 + 3 + 4
    # no candidate helps: the start stays
    assert cm.choose_times(lambda g: 0.0, [1.0, 0.5, 0.0], cands)[0] == [1.0, 0.5, 0.0]


def test_level_candidates_are_training_levels_in_a_noise_range():
    sch = get_schedule("cosine")
    levels = cm.discretization(sch, 18).tolist()
    cands = cm.level_candidates(sch, 18, lo=0.05, hi=5.0)
    s = [float(cm._sigma_tilde(sch, torch.tensor([t]))) for t in cands]
    assert cands == sorted(cands, reverse=True) and set(cands) <= set(levels)
    assert all(0.05 <= v <= 5.0 for v in s) and len(cands) == 7
    below = [t for t in levels if t not in cands and t < cands[-1]]
    assert float(cm._sigma_tilde(sch, torch.tensor([below[-1]]))) < 0.05
    many = cm.level_candidates(sch, 1281)  # a curriculum's last stage: thinned, ends kept
    inside = [t for t in cm.discretization(sch, 1281).tolist()
              if 0.05 <= float(cm._sigma_tilde(sch, torch.tensor([t]))) <= 5.0]
    assert len(many) == 12 and many[0] == max(inside) and many[-1] == min(inside)


def test_multistep_segments_end_at_the_students_grid():
    """``segments=K``: the levels gain the K-step grid's inner times, each level's segment ends
    at the boundary at or below it, and the DDIM move to a segment's end lands on the point
    itself at the end (whatever the estimate) and keeps the estimate at t_min."""
    sch = get_schedule("cosine")
    ts, ends = cm.segment_ends(sch, cm.discretization(sch, 10), 2)
    mid = float(cm.timesteps(sch, 2, cm.SEGMENT_GRID)[1])
    assert len(ts) == 11 and (ts[1:] > ts[:-1]).all() and torch.isclose(
        ts, torch.tensor(mid, dtype=torch.float64)).any()
    assert torch.equal(ends, torch.where(ts >= mid, torch.tensor(mid, dtype=torch.float64),
                                         ts[0]))
    x_t, x0 = torch.randn(5, 2, dtype=torch.float64), torch.randn(5, 2, dtype=torch.float64)
    t = torch.full((5,), mid, dtype=torch.float64)
    a, _ = sch.alpha_sigma(t)
    assert torch.allclose(cm.to_segment_end(x0, x_t, t, t, sch), x_t / a[:, None])
    low = torch.full((5,), float(ts[0]), dtype=torch.float64)
    assert torch.equal(cm.to_segment_end(x0, x_t, t, low, sch), x0)


def test_a_multistep_student_samples_by_ddim_on_its_grid(teachers, tmp_path, capsys):
    import omnidiff

    run = tmp_path / "ms"
    code, _, err = _cli(["distill", f"teacher={teachers['cosine']}", f"out={run}",
                         "distill.segments=3", "trainer.max_steps=6", *TINY], capsys)
    assert code == 0, err
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["sampler"] == {"name": "ddim", "grid": cm.SEGMENT_GRID, "steps": 3}
    assert payload["distilled"]["segments"] == 3
    pipe = omnidiff.load(run / "model.pt", device="cpu")
    x = pipe.generate(16, seed=0)
    assert (pipe.last_sampler, pipe.last_grid) == ("ddim", cm.SEGMENT_GRID)
    assert pipe.last_stats["nfe"] == 3 and torch.isfinite(x).all()
    code, _, err = _cli(["distill", f"teacher={teachers['cosine']}", "distill.segments=0",
                         f"out={tmp_path / 'no'}"], capsys)
    assert code == 2 and "distill.segments" in err


def test_teacher_substeps_follow_the_exact_ode_more_closely():
    """CD's teacher step split in substeps (``distill.teacher_steps``) lands nearer the exact
    ODE of a narrow-mode mixture where trajectories choose their modes."""
    from omnidiff.core.forward import add_noise
    from omnidiff.core.gaussian_mixture import random_mixture

    sch = get_schedule("cosine")
    law = random_mixture(2, width="narrow", seed=0)
    model = law.model(sch, "v")
    x0, _ = law.sample(512, torch.Generator().manual_seed(0))
    ts = cm.discretization(sch, 18)
    t_hi, t_lo = float(ts[6]), float(ts[5])  # sigma/alpha 1.1 -> 0.58
    x = add_noise(x0, torch.full((512,), t_hi, dtype=torch.float64), sch,
                  torch.randn(512, 2, generator=torch.Generator().manual_seed(1),
                              dtype=torch.float64))
    exact = cm.teacher_step(model, x, t_hi, t_lo, schedule=sch, prediction="v", substeps=100)
    errs = [float((cm.teacher_step(model, x, t_hi, t_lo, schedule=sch, prediction="v",
                                   substeps=k) - exact).norm(dim=1).mean()) for k in (1, 2, 3)]
    assert errs[0] > 3 * errs[1] > 6 * errs[2] and errs[0] > 0.01
