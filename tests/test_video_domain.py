"""The video domain: moving digits, the spacetime DiT (layouts, positions, frame
conditioning), metrics that score what they claim, clip files, artifacts, and the T = 1 DiT
learning digits."""

from __future__ import annotations

import pytest
import torch

from omnidiff.nn import apply_rotary, rotary_tables
from omnidiff_domains.video.data import VideoData, first_frames, random_masks
from omnidiff_domains.video.dit import PRESETS, VideoDiT
from omnidiff_domains.video.files import VideoFileError, find_clips, read_clip
from omnidiff_domains.video.metrics import centre_of_mass, frame_scores, video_metrics
from omnidiff_domains.video.moving import bounce

SMALL = dict(depth=2, width=24, heads=2)


@pytest.fixture(scope="module")
def clips():
    d = VideoData(train_size=16, val_size=120, seed=3)
    d.setup()
    return d, *d.reference(120)


def _randomise(net: torch.nn.Module) -> torch.nn.Module:
    """adaLN-Zero starts as the identity / zero output: give every weight a value."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.2 * torch.randn(p.shape, generator=g))
    return net


# ---- data ----------------------------------------------------------------------------------

def test_bounce_reflects_at_both_walls():
    path = bounce(torch.tensor([[0, 10]]), torch.tensor([[3, -4]]), 6, 10)[0]
    assert path[:, 0].tolist() == [0, 3, 6, 9, 8, 5]  # 12 -> 8 at the wall 10
    assert path[:, 1].tolist() == [10, 6, 2, 2, 6, 10]  # -2 -> 2 at the wall 0


def test_moving_digits_are_exact_translations(clips):
    d, x, y = clips
    assert x.shape == (120, 8, 1, 32, 32) and x.min() >= -1 and x.max() <= 1
    ink = (x + 1).flatten(2).sum(-1)  # (N, T): the same digit in every frame
    assert torch.allclose(ink, ink[:, :1].expand_as(ink), rtol=1e-5)
    com, _ = centre_of_mass(x)
    step = (com[:, 1:] - com[:, :-1]).abs()  # |velocity| per axis, constant between bounces
    assert (step <= d.max_speed + 1e-4).all()
    assert set(y.tolist()) == set(range(10))


def test_two_digit_clips_label_the_first_digit():
    d = VideoData(train_size=40, val_size=40, max_digits=2, p_two=1.0)
    d.setup()
    one = VideoData(train_size=40, val_size=40)
    one.setup()
    assert (d._load()["x_train"] + 1).sum() > 1.5 * (one._load()["x_train"] + 1).sum()


def test_random_masks_mix_generation_continuation_and_filling():
    torch.manual_seed(0)
    m = random_masks(4000, 8, p_none=0.25, p_fill=0.25)
    none = (m.sum(1) == 0).float().mean()
    prefix = torch.tensor([torch.equal(r, first_frames(1, 8, int(r.sum()))[0]) for r in m])
    some = m.sum(1) > 0
    assert 0.22 < float(none) < 0.28  # p_none (plus the empty random subsets, 1/256 of them)
    share = float(prefix[some].float().mean())  # first-k: 0.5 of 0.75, and chance prefixes
    assert 0.62 < share < 0.74, share
    k = m[prefix & some].sum(1)
    assert k.min() >= 1 and k.max() <= 7


def test_reference_alternates_generation_and_continuation():
    d = VideoData(train_size=16, val_size=16, cond="label+frames", eval_given=2)
    d.setup()
    x, c = d.reference(6)
    assert c["mask"].sum(1).tolist() == [0, 2, 0, 2, 0, 2]
    assert torch.equal(c["frames"][1, :2], x[1, :2]) and (c["frames"][1, 2:] == 0).all()
    cont = d.continuation(x[:3, :2], 2, labels=[1, 2, 3])
    assert cont["mask"].sum(1).tolist() == [2, 2, 2] and cont["label"].tolist() == [1, 2, 3]
    with pytest.raises(ValueError, match="1 <= k < 8"):
        d.continuation(x, 8)
    with pytest.raises(ValueError, match="not frame-conditional"):
        VideoData(cond="label").continuation(x, 2)
    with pytest.raises(ValueError, match="pass labels="):  # was: silently every clip a 0
        d.continuation(x[:3, :2], 2)
    with pytest.raises(ValueError, match="2 labels for n=3 samples"):
        d.continuation(x[:3, :2], 2, labels=[1, 2])
    with pytest.raises(ValueError, match="class label 10 is out of range"):
        d.continuation(x[:3, :2], 2, labels=10)
    assert d.continuation(x[:3, :2], 2, labels=4)["label"].tolist() == [4, 4, 4]


@pytest.mark.parametrize("kw,match", [({"name": "nope"}, "data.name"),
                                      ({"cond": "mel"}, "data.cond"),
                                      ({"name": "folder"}, "data.root"),
                                      ({"eval_given": 8}, "eval_given"),
                                      ({"channels": 2}, "channels"),
                                      ({"max_digits": 3}, "max_digits")])
def test_bad_data_settings_are_one_line(kw, match):
    with pytest.raises(ValueError, match=match):
        VideoData(**kw)


def test_without_the_image_domain_digits_and_metrics_fail_in_one_line(monkeypatch):
    """The digits and the digits classifier come from the image domain, through the registry."""
    import omnidiff_domains.video as video
    from omnidiff.errors import UnknownDomainError

    def no_image(name):
        raise UnknownDomainError(f"unknown domain {name!r}")

    monkeypatch.setattr(video, "get_domain", no_image)
    with pytest.raises(UnknownDomainError, match="need the image domain") as info:
        VideoData(train_size=4, val_size=4).setup()
    assert "\n" not in str(info.value)
    with pytest.raises(UnknownDomainError, match="need the image domain"):
        frame_scores(torch.zeros(1, 2, 1, 16, 16), 12)


# ---- the network ---------------------------------------------------------------------------

@pytest.mark.parametrize("attention", ["joint", "factorised"])
@pytest.mark.parametrize("pos", ["sincos", "rope"])
def test_dit_shapes_and_zero_start(attention, pos):
    spec = VideoData(cond="label+frames", frames=4, size=16).cond_spec
    net = VideoDiT((4, 1, 16, 16), spec, patch=(2, 4, 4), attention=attention, pos=pos, **SMALL)
    x = torch.randn(3, 4, 1, 16, 16)
    cond = {"label": torch.tensor([0, 1, 2]), "frames": torch.randn_like(x),
            "mask": first_frames(3, 4, 1)}
    y = net(x, torch.rand(3), cond)
    assert y.shape == x.shape and torch.count_nonzero(y) == 0  # adaLN-Zero: starts at zero


def test_presets_follow_dit():
    assert PRESETS["XL"] == (28, 1152, 16) and PRESETS["B"] == (12, 768, 12)
    assert PRESETS["S"] == (12, 384, 6) and PRESETS["L"] == (24, 1024, 16)


@pytest.mark.parametrize("kw,match", [({"patch": (3, 4, 4)}, "not divisible"),
                                      ({"patch": (1, 5, 4)}, "not divisible"),
                                      ({"attention": "sparse"}, "model.attention"),
                                      ({"size": "XXL"}, "model.size"),
                                      ({"patch": (4, 4)}, "three sizes")])
def test_bad_network_settings_are_one_line(kw, match):
    with pytest.raises(ValueError, match=match):
        VideoDiT((4, 1, 16, 16), None, **{**SMALL, **kw})
    with pytest.raises(ValueError, match="is \\(T, C, H, W\\)"):
        VideoDiT((1, 16, 16), None)


def test_factorised_spatial_attention_stays_within_a_frame():
    """One spatial block: frame 0 cannot reach frame 1. Joint attention: it does."""
    x = torch.randn(1, 2, 1, 8, 8)
    x2 = x.clone()
    x2[:, 0] += 1.0
    t = torch.full((1,), 0.5)
    for attention, leaks in (("factorised", False), ("joint", True)):
        torch.manual_seed(0)
        net = _randomise(VideoDiT((2, 1, 8, 8), None, patch=(1, 4, 4), attention=attention,
                                  depth=1, width=24, heads=2))
        diff = (net(x, t) - net(x2, t))[:, 1].abs().max()
        assert (diff > 1e-4) == leaks, attention


def test_rotary_scores_depend_on_relative_position():
    cos, sin = rotary_tables((12,), 8)
    q, k = torch.randn(8), torch.randn(8)
    qs = apply_rotary(q.expand(12, 8), cos, sin)
    ks = apply_rotary(k.expand(12, 8), cos, sin)
    scores = qs @ ks.T  # (12, 12): a function of i - j only
    assert torch.allclose(scores.diagonal(3)[:-1], scores.diagonal(3)[1:], atol=1e-5)
    assert not torch.allclose(scores.diagonal(0), scores.diagonal(3)[0].expand(12), atol=1e-3)
    cos3, _ = rotary_tables((2, 3, 4), 12)
    assert cos3.shape == (24, 6)


def test_frames_condition_the_output_only_where_given():
    spec = VideoData(cond="frames", frames=4, size=8).cond_spec
    torch.manual_seed(0)
    net = _randomise(VideoDiT((4, 1, 8, 8), spec, patch=(1, 4, 4), **SMALL))
    x, t = torch.randn(2, 4, 1, 8, 8), torch.full((2,), 0.5)
    frames = torch.randn_like(x)
    none = {"frames": frames, "mask": torch.zeros(2, 4)}
    given = {"frames": frames, "mask": first_frames(2, 4, 2)}
    other = {"frames": frames + 1.0, "mask": torch.zeros(2, 4)}
    assert torch.allclose(net(x, t, none), net(x, t, other))  # unmasked frames are ignored
    assert not torch.allclose(net(x, t, none), net(x, t, given))
    dropped = net(x, t, given, drop=torch.tensor([True, False]))
    assert torch.allclose(dropped[0], net(x, t, none)[0], atol=1e-6)  # drop: no frame given
    assert torch.allclose(dropped[1], net(x, t, given)[1], atol=1e-6)


def test_t1_dit_trains_on_digits():
    """The same DiT as an image model (T = 1): the loss falls and guided samples look like
    the asked digits to the project's classifier."""
    from omnidiff.core.conditions import LabelCond
    from omnidiff.core.losses import diffusion_loss
    from omnidiff.core.model import DiffusionModel
    from omnidiff.samplers.generate import generate_samples
    from omnidiff_domains.image.classifier import digits_classifier
    from omnidiff_domains.image.data import digits_arrays

    torch.manual_seed(0)
    a = digits_arrays(8)
    x, y = a["x_train"][:, None], a["y_train"]  # (N, 1, 1, 8, 8)
    net = VideoDiT((1, 1, 8, 8), LabelCond(10), patch=(1, 2, 2), depth=3, width=96, heads=4)
    model = DiffusionModel(net, "cosine", "v")
    opt = torch.optim.AdamW(net.parameters(), lr=2e-3)
    losses = []
    for step in range(300):
        idx = torch.randint(0, len(x), (128,))
        loss, _ = diffusion_loss(model, x[idx], schedule=model.schedule, prediction="v",
                                 cond=y[idx], p_uncond=0.1)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert sum(losses[-30:]) / 30 < 0.6 * sum(losses[:30]) / 30
    labels = torch.arange(10).repeat(6)
    with torch.no_grad():
        out, _ = generate_samples(model.eval(), event_shape=(1, 1, 8, 8), cond_spec=LabelCond(10),
                                  sampler="dpmpp_2m", steps=20, guidance=2.0, cond=labels,
                                  seed=0, clip_x0=1.0)
    acc = (digits_classifier(8)(out[:, 0]).argmax(1) == labels).float().mean()
    assert acc > 0.5, float(acc)


# ---- metrics -------------------------------------------------------------------------------

def test_metrics_score_true_clips_high_and_noise_low(clips):
    d, x, y = clips
    m = video_metrics(x[:60], x[60:], cond=y[:60], data=d)
    assert m["class_acc"] > 0.85 and m["identity_acc"] > 0.9 and m["class_conf"] > 0.7
    assert m["com_accel"] < 0.5 and m["ink_cv"] < 1e-4 and m["fd"] < 20
    assert m["random_com_accel"] > 4 * max(m["ref_com_accel"], 0.25)  # the incoherent end
    noise = torch.rand_like(x[:60]) * 2 - 1
    bad = video_metrics(noise, x[60:], cond=y[:60], data=d)
    assert bad["class_acc"] < 0.4 and bad["fd"] > 5 * m["fd"]


def test_continuation_metrics_against_holding_still(clips):
    _, x, y = clips
    d = VideoData(cond="label+frames", train_size=16, val_size=16)
    mask = first_frames(len(x), 8, 2)
    mask[::2] = 0
    ref_cond = d.make_cond(x, y, mask)
    perfect = video_metrics(x, x, cond=ref_cond, ref_cond=ref_cond, data=d)
    assert perfect["cont_com_err"] < 1e-4 and perfect["hold_com_err"] > 1.0
    held = x.clone()
    held[:, 2:] = x[:, 1:2]
    m = video_metrics(held, x, cond=ref_cond, ref_cond=ref_cond, data=d)
    assert abs(m["cont_vs_hold"] - 1.0) < 1e-4
    assert "class_acc" in m  # the generation half is scored too


# ---- files and artifacts -------------------------------------------------------------------

def test_artifacts_write_gifs_and_a_strip(clips, tmp_path):
    from PIL import Image

    from omnidiff_domains.video.artifacts import save_artifacts

    d, x, y = clips
    files = save_artifacts(x[:3], tmp_path, cond=y[:3], data=d)
    gifs = sorted((tmp_path / "samples_gif").glob("*.gif"))
    assert len(gifs) == 3 and gifs[0].name == f"000_{int(y[0])}.gif"
    with Image.open(gifs[0]) as im:
        assert im.n_frames == 8 and im.size == (128, 128)
    assert (tmp_path / "samples.png").is_file() and len(files) == 6
    back = read_clip(gifs[0], 8, 128)  # the GIF reads back as the clip (8-bit, 4x larger)
    big = x[0].repeat_interleave(4, -1).repeat_interleave(4, -2)
    assert (back - big).abs().max() < 1 / 127


def test_clip_folders_gifs_and_frame_folders(clips, tmp_path):
    from PIL import Image

    from omnidiff_domains.video.artifacts import write_gif

    _, x, y = clips
    for i, cls in enumerate(["cat", "dog"]):
        (tmp_path / cls).mkdir()
        write_gif(x[i], tmp_path / cls / "a.gif", scale=1)
        frames = tmp_path / cls / "b"
        frames.mkdir()
        for f in range(5):  # a short clip: its last frame is held
            im = ((x[i, f, 0] + 1) * 127.5).round().byte().numpy()
            Image.fromarray(im).convert("RGB").save(frames / f"{f:02d}.png")
    paths, names = find_clips(tmp_path)
    assert names == ["cat", "cat", "dog", "dog"] and len(paths) == 4
    clip = read_clip(tmp_path / "dog" / "b", 8, 16, channels=3)
    assert clip.shape == (8, 3, 16, 16) and torch.equal(clip[5], clip[7])
    d = VideoData(name="folder", root=str(tmp_path), frames=8, size=16, channels=1,
                  cond="label", holdout=0.25)
    d.setup()
    assert d.classes == ["cat", "dog"] and d.event_shape == (8, 1, 16, 16)
    assert len(d._load()["x_train"]) == 3


def test_clip_file_errors_are_one_line(tmp_path):
    with pytest.raises(VideoFileError, match="holds no clips"):
        find_clips(tmp_path)
    (tmp_path / "bad.gif").write_bytes(b"not a gif")
    with pytest.raises(VideoFileError, match="cannot be read"):
        read_clip(tmp_path / "bad.gif", 4, 8)
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(VideoFileError, match="not a clip"):
        read_clip(tmp_path / "x.txt", 4, 8)
    (tmp_path / "empty").mkdir()
    with pytest.raises(VideoFileError, match="without frame images"):
        read_clip(tmp_path / "empty", 4, 8)
    with pytest.raises(VideoFileError, match="not a folder"):
        find_clips(tmp_path / "missing")
    try:
        import av  # noqa: F401
    except ImportError:
        (tmp_path / "c.mp4").write_bytes(b"\0")
        with pytest.raises(VideoFileError, match="omnidiff\\[video\\]"):
            read_clip(tmp_path / "c.mp4", 4, 8)
