"""Text-to-video: captioned moving digits, prompts on the video DiT, the judge and its metrics."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

import omnidiff
from omnidiff.cli.commands import main
from omnidiff.core.conditions import NamedCond, SequenceCond
from omnidiff.plugins.check import check_domain
from omnidiff.plugins.registry import get_domain
from omnidiff_domains.video.artifacts import write_gif
from omnidiff_domains.video.captions import (
    DIGIT_WORDS,
    DIRECTIONS,
    HELD_OUT_PAIRS,
    PART_FORMS,
    PHRASES,
    TEMPLATES,
    captioned_pairs,
    digit_part,
    eval_prompts,
)
from omnidiff_domains.video.data import VideoData
from omnidiff_domains.video.dit import build_dit
from omnidiff_domains.video.text_data import clip_speed, text_clips_arrays
from omnidiff_domains.video.text_metrics import (
    judge_clips,
    judge_direction,
    text_video_metrics,
)

SMALL_DATA = {"name": "text_moving_digits", "frames": 4, "size": 16, "digit_size": 8,
              "train_size": 64, "batch_size": 8}
SMALL_MODEL = {"depth": 2, "width": 24, "heads": 2, "patch": [2, 4, 4], "text_layers": 1}


@pytest.fixture(scope="module")
def arrays():
    digits = get_domain("image").digits_arrays(8)
    return text_clips_arrays(400, digits, frames=8, size=16, max_speed=1)


def test_held_out_pairs_never_train_and_clips_move_as_captioned(arrays):
    train = {c for c in arrays["captions_train"]}
    truth = arrays["truth"]
    assert all((truth[c][0], truth[c][1]) not in HELD_OUT_PAIRS for c in train)
    sets = {truth[c][2] for c in arrays["captions_test"]}
    assert sets == {"held_in", "held_out"}
    held_out = {c for c in arrays["captions_test"] if truth[c][2] == "held_out"}
    assert held_out and not held_out & train
    assert all((truth[c][0], truth[c][1]) in HELD_OUT_PAIRS for c in held_out)
    # the clips move the captioned way, 1 px a frame, and never leave the canvas
    direction = torch.tensor([truth[c][1] for c in arrays["captions_train"]])
    assert torch.equal(judge_direction(arrays["x_train"]), direction)
    assert arrays["speed"] == 1
    # every digit keeps three directions and every direction seven or eight digits in training
    pairs = {(truth[c][0], truth[c][1]) for c in train}
    assert len(pairs) == 30


def test_caption_grammar_covers_every_wording():
    texts = captioned_pairs(3000, np.random.default_rng(0))["captions"]
    joined = "\n".join(texts)
    for template in TEMPLATES:
        pattern = re.escape(template).replace(r"\{ad\}", "an? .+").replace(
            r"\{d\}", ".+").replace(r"\{where\}", ".+")
        assert any(re.fullmatch(pattern, t) for t in texts), template
    for phrases in PHRASES:
        for p in phrases:
            assert any(t.endswith(" " + p) for t in texts), p
    assert any(w in joined for w in DIGIT_WORDS) and any(t[0].isdigit() for t in texts)
    assert "an eight" in joined and "an 8" in joined
    sets = eval_prompts(64)
    again = eval_prompts(64)
    assert [s["captions"] for s in sets.values()] == [s["captions"] for s in again.values()]
    assert [len(s["captions"]) for s in sets.values()] == [64, 64]
    assert len(DIRECTIONS) == 4


def test_judge_reads_true_clips_and_a_reversed_clip_moves_wrong(arrays):
    x, captions = arrays["x_test"], arrays["captions_test"]
    scores = text_video_metrics(x, captions, arrays["truth"], digit_size=8)
    for name in ("held_in", "held_out"):
        assert scores[f"digit_acc_{name}"] > 0.9 and scores[f"direction_acc_{name}"] == 1.0
    back = text_video_metrics(x.flip(1), captions, arrays["truth"], digit_size=8)
    assert back["direction_acc"] == 0.0 and back["digit_acc"] > 0.9
    still = x[:, :1].expand_as(x)
    assert (judge_direction(still) == -1).all()


def test_part_captions_name_the_clips_digit_alone():
    """data.part_captions: that share of training captions names the digit alone, the digit
    the clip shows; the full captions and the held-out reference are as before."""
    digits = get_domain("image").digits_arrays(8)
    a = text_clips_arrays(400, digits, frames=4, size=16, max_speed=1, part_captions={"digit": 0.3})
    full = [c in a["truth"] for c in a["captions_train"]]
    parts = [i for i, f in enumerate(full) if not f]
    assert 0.2 < len(parts) / 400 < 0.4
    forms = [re.escape(f).replace(r"\{ad\}", "an? (.+)").replace(r"\{d\}", "(.+)")
             for f in PART_FORMS]
    named = []
    for i in parts:
        text = a["captions_train"][i]
        word = next(m.group(1) for f in forms if (m := re.fullmatch(f, text)))
        named.append(DIGIT_WORDS.index(word) if word in DIGIT_WORDS else int(word))
    read = judge_clips(a["x_train"][parts], 8)["digit"].mode(1).values
    assert (read == torch.tensor(named)).float().mean() > 0.9
    assert all(len(c.split()) > 2 for c, f in zip(a["captions_train"], full) if f)
    assert digit_part("the digit seven drifts up", 7) == "a seven"
    assert digit_part("8 going left", 8) == "an 8"
    dm = VideoData(**{**SMALL_DATA, "cond": "text", "part_captions": {"digit": 0.25}})
    test = dm.captions_of(dm.reference(6, torch.Generator().manual_seed(0))[1])
    truth = dm.caption_truth()
    want = [("an " if truth[c][0] == 8 else "a ") for c in test]
    got = dm.caption_parts(test)["digit"]
    assert [g.startswith(w) for g, w in zip(got, want)] == [True] * 6
    assert all(g.split()[1] in c.split() for g, c in zip(got, test))
    dirs = dm.caption_parts(test)["direction"]
    assert all(d.startswith("moving ") and c.endswith(" " + d[7:]) for c, d in zip(test, dirs))
    with pytest.raises(ValueError, match="parts are unknown"):
        dm.caption_parts(["a 7 dancing"])
    b = text_clips_arrays(400, digits, frames=4, size=16, max_speed=1,
                          part_captions={"direction": 0.3})
    alone = [i for i, c in enumerate(b["captions_train"]) if c not in b["truth"]]
    assert 0.2 < len(alone) / 400 < 0.4
    said = [next(k for k, ps in enumerate(PHRASES) for p in ps
                 if b["captions_train"][i].endswith(" " + p)) for i in alone]
    assert torch.equal(judge_direction(b["x_train"][alone]), torch.tensor(said))


@pytest.mark.parametrize("cond,att,blocks,extra", [
    ("text", "factorised", "spatial", {"text_bag": True, "text_pooled": False}),
    ("text+frames", "joint", "all", {"seam_conv": True})])
def test_text_dit_passes_the_domain_contract(cond, att, blocks, extra, tmp_path):
    report = check_domain(get_domain("video"), data={**SMALL_DATA, "cond": cond},
                          model={**SMALL_MODEL, "attention": att, "pos": "rope",
                                 "text_blocks": blocks, **extra}, out_dir=tmp_path)
    assert any(k.startswith("direction_acc_held") for k in report["metrics"])
    assert any(f.endswith(".png") for f in map(str, report["files"]))


@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("video_text") / "run"
    overrides = [f"data.{k}={v}" for k, v in SMALL_DATA.items() if k != "name"]
    code = main(["train", "recipe=video_text_digits", "data.cond=text+frames", *overrides,
                 "model.depth=2", "model.width=24", "model.heads=2", "model.patch=[2,4,4]",
                 "model.text_layers=1", "trainer.max_steps=3",
                 "trainer.enable_progress_bar=false", "eval.n_samples=4", "eval.n_ref=4",
                 "sampler.steps=2", f"out={run}", "threads=1"])
    assert code == 0
    return run


def test_trained_model_generates_from_prompts_and_continues(text_model, tmp_path):
    pipe = omnidiff.load(text_model / "model.pt", device="cpu")
    x = pipe.generate(prompt=["a 7 moving left", "the digit two drifts up"], n=2, steps=2,
                      guidance=3.0, seed=0)
    assert x.shape == (4, 4, 1, 16, 16) and torch.isfinite(x).all()
    files = pipe.save(x, tmp_path / "out")
    assert any("a_7_moving_left" in f.name for f in files)
    clips = x[:2]
    cond = pipe.data().continuation(clips, k=1)
    y = pipe.generate(prompt=["a 7 moving right", "a 2 going down"], cond=cond, steps=2,
                      guidance=3.0, seed=0)
    assert y.shape == (2, 4, 1, 16, 16) and pipe.last_prompts[1] == "a 2 going down"
    with_text = pipe.data().continuation(clips, k=1, prompts="a 7 moving right")
    assert with_text["text"] == ["a 7 moving right"] * 2
    assert (text_model / "samples" / "samples.png").is_file()
    assert any("moving" in p.name or "going" in p.name or "travels" in p.name
               or "slides" in p.name or "heading" in p.name or "drifts" in p.name
               for p in (text_model / "samples" / "samples_gif").glob("*.gif"))


@pytest.mark.parametrize("override,needle", [
    ("+sampler.compose.colour=2", "the captions' parts are ['digit', 'direction']"),
    ("sampler.guidance=null", "set sampler.guidance too"),
    ("sampler.compose.digit=-1", ">= 0")])
def test_composed_evaluation_mistakes_stop_before_training(override, needle, tmp_path, capsys):
    overrides = [f"data.{k}={v}" for k, v in SMALL_DATA.items() if k != "name"]
    code = main(["train", "recipe=video_text_digits", *overrides, "model.depth=1",
                 "model.width=24", "model.heads=2", "model.patch=[2,4,4]", "model.text_layers=1",
                 "trainer.max_steps=1", "trainer.enable_progress_bar=false", override,
                 f"out={tmp_path / 'run'}", "threads=1"])
    err = capsys.readouterr().err
    assert code != 0 and needle in err, err
    assert not (tmp_path / "run" / "model.pt").exists()


def test_folder_clips_with_metadata_become_prompts(tmp_path):
    root = tmp_path / "clips"
    root.mkdir()
    rows = []
    for i in range(5):
        clip = torch.rand(4, 1, 16, 16) * 2 - 1
        write_gif(clip, root / f"{i}.gif", scale=1)
        rows.append({"file_name": f"{i}.gif", "text": f"clip number {i % 3} moving up"})
    (root / "metadata.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    dm = VideoData("folder", root=str(root), frames=4, size=16, cond="text", text={},
                   holdout=0.4, batch_size=4)
    spec = dm.cond_spec
    assert isinstance(spec, NamedCond) and isinstance(spec.field_specs["text"], SequenceCond)
    batch = next(iter(dm.train_dataloader()))
    spec.check_batch(batch["cond"], batch["x"].shape[0])
    assert set(dm.captions_of(batch["cond"])) <= {r["text"] for r in rows}
    (root / "metadata.jsonl").write_text(json.dumps(rows[0]))
    with pytest.raises(ValueError, match="metadata.jsonl has no caption"):
        VideoData("folder", root=str(root), frames=4, size=16, cond="text", text={}).setup()


@pytest.mark.parametrize("make,needle", [
    (lambda: VideoData("moving_digits", cond="text", text={}), "text_moving_digits"),
    (lambda: VideoData("text_moving_digits"), "data.cond=text"),
    (lambda: VideoData("folder", root="x", cond="text"), "data.text"),
    (lambda: clip_speed(8, 16, 12, 1), "without bouncing"),
    (lambda: VideoData("text_moving_digits", cond="text", part_captions={"digit": 0.6,
                                                                       "direction": 0.4}),
     "sum below 1"),
    (lambda: VideoData("text_moving_digits", cond="text", part_captions={"colour": 0.1}),
     "digit and direction"),
    (lambda: VideoData("moving_digits", part_captions={"digit": 0.2}), "text_moving_digits"),
    (lambda: VideoData("moving_digits").caption_parts(["a 7"]), "names no parts"),
    (lambda: build_dit((4, 1, 16, 16), None, attention="joint", text_blocks="spatial"),
     "factorised"),
])
def test_mistakes_are_one_line(make, needle):
    with pytest.raises(ValueError, match=needle) as info:
        make()
    assert "\n" not in str(info.value)


def test_seam_conv_starts_as_the_plain_network_and_learns_across_patch_borders():
    torch.manual_seed(0)
    plain = build_dit((4, 1, 8, 8), None, depth=2, width=16, heads=2, patch=[2, 4, 4])
    seam = build_dit((4, 1, 8, 8), None, depth=2, width=16, heads=2, patch=[2, 4, 4],
                     seam_conv=True)
    seam.load_state_dict(plain.state_dict(), strict=False)
    with torch.no_grad():
        for p in plain.final.parameters():
            p.normal_()  # a trained output layer
        seam.final.load_state_dict(plain.final.state_dict())
    x, t = torch.randn(2, 4, 1, 8, 8), torch.rand(2)
    assert torch.equal(plain(x, t), seam(x, t))
    with torch.no_grad():
        seam.seam.conv.weight[0, 0, 1, 1, 0] = 1.0  # each pixel reads its left neighbour
    y, y0 = seam(x, t), plain(x, t)
    assert torch.allclose(y[..., 1:] - y0[..., 1:], y0[..., :-1], atol=1e-5)
