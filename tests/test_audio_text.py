"""Text-to-audio: the captioned tones (grammar, held-out combinations), the judge that hears
pitch, loudness, decay and timbre, prompted data from a folder, DiffWave reading a prompt, and
prompts through training, the API and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile
import torch

import omnidiff
from omnidiff.cli.commands import main
from omnidiff.core.conditions import NamedCond, SequenceCond
from omnidiff_domains.audio.captions import (
    SHAPES,
    ToneAttrs,
    caption,
    draw_attrs,
    eval_prompts,
    held_out,
    omit,
)
from omnidiff_domains.audio.data import AudioData
from omnidiff_domains.audio.diffwave import build_diffwave
from omnidiff_domains.audio.text_data import _tones, text_tones_arrays
from omnidiff_domains.audio.text_metrics import caption_scores, judge_tones

TONE_CFG = {"harmonics": 6, "detune_cents": 10.0}


def _words_of(a: ToneAttrs) -> set[str]:
    pairs = ((a.loud, "loud", "soft"), (a.long, "long", "short"), (a.bright, "bright", "dark"))
    return {yes if v else no for v, yes, no in pairs if v >= 0}


def test_captions_name_what_is_asked_in_every_shape_and_spelling():
    rng = np.random.default_rng(0)
    shapes, sharps = set(), set()
    for a in draw_attrs(400, rng) + draw_attrs(100, rng, "held_out"):
        a = omit(a, rng, 0.3)
        text = caption(a, rng)
        words = set(text.replace(",", " ").replace(":", " ").split())
        assert words & {"loud", "soft", "long", "short", "bright", "dark"} == _words_of(a), text
        if "#" in text or "sharp" in text:
            sharps.add("#" in text)
        shapes.add(text.split()[0] in ("a", "an"))
    assert sharps == {True, False} and shapes == {True, False}
    assert len(SHAPES) >= 4


def test_held_out_combinations_never_reach_training():
    a = text_tones_arrays(300, 8000, 400, TONE_CFG)
    assert a["x_train"].shape == (300, 1, 400)
    train = [a["truth"][c][0] for c in a["captions_train"]]
    assert not any(held_out(t.pitch, t.loud, t.long) for t in train if min(t.as_tuple()) >= 0)
    sets = eval_prompts(40)
    assert all(held_out(t.pitch, t.loud, t.long) for t in sets["held_out"][1])
    assert not any(held_out(t.pitch, t.loud, t.long) for t in sets["held_in"][1])
    assert not set(sets["held_out"][0]) & set(a["captions_train"])
    # the rule leaves out 9 of the 48 (pitch, loudness, decay), at most one per pitch
    combos = [(p, lo, lg) for p in range(12) for lo in (0, 1) for lg in (0, 1)]
    out = [c for c in combos if held_out(*c)]
    assert len(out) == 9 and len({c[0] for c in out}) == 9


def test_judge_hears_every_attribute_and_catches_each_mistake():
    rng = np.random.default_rng(1)
    attrs = draw_attrs(64, rng) + draw_attrs(32, rng, "held_out")
    x = _tones(attrs, 8000, 2000, torch.Generator().manual_seed(0), TONE_CFG)
    assert caption_scores(x, attrs, 8000)["all_acc"] == 1.0
    flip = {"loud": lambda a: ToneAttrs(a.pitch, 1 - a.loud, a.long, a.bright),
            "decay": lambda a: ToneAttrs(a.pitch, a.loud, 1 - a.long, a.bright),
            "timbre": lambda a: ToneAttrs(a.pitch, a.loud, a.long, 1 - a.bright),
            "pitch": lambda a: ToneAttrs((a.pitch + 1) % 12, a.loud, a.long, a.bright)}
    for name, f in flip.items():
        scores = caption_scores(x, [f(a) for a in attrs], 8000)
        assert scores[f"{name}_acc"] == 0.0 and scores["all_acc"] == 0.0, name
    # an attribute the caption leaves out is not judged
    loose = [ToneAttrs(a.pitch, -1, -1, -1) for a in attrs]
    assert caption_scores(x, loose, 8000)["all_acc"] == 1.0
    # a long tone cut off after 60 ms is heard as short
    long = torch.tensor([a.long == 1 for a in attrs])
    cut = x[long].clone()
    cut[..., 480:] = 0.0
    assert judge_tones(x[long], 8000)["long"].all() and not judge_tones(cut, 8000)["long"].any()
    assert judge_tones(torch.zeros(2, 1, 2000), 8000)["semitone"].isnan().all()


def test_text_tones_data_prompts_and_one_line_mistakes():
    dm = AudioData("text_tones", cond="text", train_size=40, batch_size=8, clip_seconds=0.05)
    spec = dm.cond_spec
    assert isinstance(spec, NamedCond) and isinstance(spec.field_specs["text"], SequenceCond)
    assert dm.classes == [] and dm.event_shape == (1, 400)
    batch = next(iter(dm.train_dataloader()))
    spec.check_batch(batch["cond"], 8)
    truth = dm.caption_truth()
    assert all(c in truth for c in dm.captions_of(batch["cond"]))
    x, cond = dm.reference(300)
    names = dm.captions_of(cond)
    assert x.shape[0] == len(names) == 192  # every evaluation prompt, once
    assert {truth[c][1] for c in names} == {"held_in", "held_out"}
    for kwargs, needle in [(dict(name="text_tones"), "data.cond=text"),
                           (dict(cond="text"), "needs captions"),
                           (dict(cond="label", text={}), "data.cond=text")]:
        with pytest.raises(ValueError, match=needle):
            AudioData(**kwargs)


def _caption_folder(root, style, write_captions):
    root.mkdir()
    texts = ["a loud C4", "soft, dark E4", "G4 with a long decay"] * 2
    for i in range(len(texts)):
        soundfile.write(root / f"{i}.wav", 0.3 * np.sin(2 * np.pi * 300 * np.arange(800) / 8000),
                        8000)
    return write_captions(root, [(f"{i}.wav", t) for i, t in enumerate(texts)], style)


@pytest.mark.parametrize("style", ["jsonl", "txt"])
def test_folder_recordings_with_captions_become_prompts(style, tmp_path, write_captions):
    root = _caption_folder(tmp_path / "wavs", style, write_captions)
    dm = AudioData("folder", root=str(root), cond="text", holdout=0.34, batch_size=4,
                   clip_seconds=0.1)
    batch = next(iter(dm.train_dataloader()))
    dm.cond_spec.check_batch(batch["cond"], batch["x"].shape[0])
    assert batch["x"].shape[1:] == (1, 800)
    assert set(dm.captions_of(batch["cond"])) <= {"a loud C4", "soft, dark E4",
                                                  "G4 with a long decay"}
    (root / "0.txt").unlink(missing_ok=True)
    (root / "metadata.jsonl").unlink(missing_ok=True)
    with pytest.raises(ValueError, match="metadata.jsonl"):
        AudioData("folder", root=str(root), cond="text").setup()


def test_diffwave_without_a_prompt_keeps_its_parameters():
    """Older audio models load unchanged: no prompt, no new parameter."""
    net = build_diffwave((1, 400), None, layers=3, channels=8, cycle=2)
    assert not [k for k in net.state_dict() if k.startswith(("text", "cross"))]
    spec = NamedCond({"text": SequenceCond(8, vocab_size=20)})
    cross = build_diffwave((1, 400), spec, layers=4, channels=8, cycle=2, text_width=16,
                           text_cross=2)
    assert sorted(cross.cross) == ["1", "3"]
    with pytest.raises(TypeError, match="text_crosss"):
        build_diffwave((1, 400), spec, text_crosss=2)


@pytest.fixture(scope="module")
def tones_model(tmp_path_factory):
    run = tmp_path_factory.mktemp("tt") / "run"
    code = main(["train", "recipe=audio_text_tones", "data.train_size=64", "data.batch_size=8",
                 "data.clip_seconds=0.05", "model.layers=3", "model.channels=8",
                 "model.cycle=2", "model.text_width=16", "model.text_layers=1",
                 "model.text_heads=2", "model.text_cross=3", "model.text_rate=20",
                 "trainer.max_steps=4", "trainer.enable_progress_bar=false", "eval.n_samples=8",
                 "eval.n_ref=8", "sampler.steps=2", f"out={run}", "threads=1"])
    assert code == 0
    return run


def test_prompted_tones_train_sample_and_label_their_files(tones_model, tmp_path, capsys):
    metrics = json.loads((tones_model / "metrics.json").read_text())
    assert {"pitch_acc_held_in", "all_acc_held_out", "decay_acc_held_in"} <= set(
        metrics.get("final", metrics))
    pipe = omnidiff.load(tones_model / "model.pt", device="cpu")
    x = pipe.generate(prompt=["a loud E4 with a long decay", "soft, dark C4"], n=2,
                      guidance=2.0, steps=2, seed=0)
    assert x.shape == (4, 1, 400) and torch.isfinite(x).all()
    code = main(["sample", f"checkpoint={tones_model / 'model.pt'}",
                 "prompt=a loud E4 with a long decay", "n=2", "steps=2", f"out={tmp_path}"])
    assert code == 0, capsys.readouterr().err
    wavs = sorted((tmp_path / "samples_wav").glob("*.wav"))
    assert [w.name for w in wavs] == ["000_a-loud-E4-with-a-long-decay.wav",
                                      "001_a-loud-E4-with-a-long-decay.wav"]
