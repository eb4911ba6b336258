"""Sequence conditions and prompts: the core's SequenceCond, guidance with a negative prompt,
cross-attending networks (U-Net, DiT and DiffWave), the text encoders (a fitted tokenizer; a frozen
``transformers`` encoder loaded from a local folder), captioned data and the prompt API / CLI."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import omnidiff
from omnidiff.cli.commands import main
from omnidiff.core.conditions import (
    LabelCond,
    NamedCond,
    SequenceCond,
    as_cond_spec,
    cat_conds,
    index_cond,
)
from omnidiff.core.guidance import classifier_free
from omnidiff.core.model import DiffusionModel
from omnidiff.errors import ConditionError, PipelineError, UserError
from omnidiff.nn import Layout, SequenceConditioning, SequenceEncoder, WordBag
from omnidiff.plugins.check import _check_network
from omnidiff.samplers import generate_samples
from omnidiff.text import PromptEncoder, fit_tokenizer, text_condition, tokenize
from omnidiff_domains.audio.diffwave import build_diffwave
from omnidiff_domains.image.data import ImageData
from omnidiff_domains.image.unet import build_unet
from omnidiff_domains.video.dit import build_dit

CAPTIONS = ["a 3 on the left and a 7 on the right", "seven on the right, three on the left",
            "left: 3, right: 7", "a 1 on the left", "right: 9"]
TOKENS = SequenceCond(10, vocab_size=30)
SMALL_UNET = dict(base_channels=16, channel_mult=[1, 2], attn_resolutions=[4], norm_groups=8,
                  num_head_channels=8, text_width=16, text_layers=1, text_heads=2)


# ---- the core: one line per mistake, padding, named sets, CFG concatenation -----------------
def test_sequence_cond_checks_pads_and_round_trips():
    value, n = TOKENS.check({"tokens": [4, 5, 6]}, 3)
    assert n == 3 and value["tokens"].shape == (3, 10) and value["mask"].shape == (3, 10)
    assert value["mask"][0].tolist() == [True] * 3 + [False] * 7
    assert value["tokens"][:, 3:].eq(0).all()
    TOKENS.check_batch(value, 3)
    spec = SequenceCond(8, dim=4, encoder={"kind": "pretrained", "name": "x"})
    assert as_cond_spec(spec.to_dict()) == spec
    assert as_cond_spec(spec.to_dict()).encoder == {"kind": "pretrained", "name": "x"}
    emb, n = spec.check({"embeddings": torch.randn(2, 5, 4), "mask": torch.ones(2, 5).bool()})
    assert n == 2 and emb["embeddings"][:, 5:].eq(0).all() and not emb["mask"][:, 5:].any()


@pytest.mark.parametrize("cond, needle", [
    ({"tokens": [1, 30]}, "token id 30 is out of range"),
    ({"tokens": list(range(11))}, "longer than this model's maximum of 10"),
    ({"tokens": [1.5]}, "integer token ids"),
    ({"tokens": [1, 2], "mask": [True]}, "mask"),
    ("a prompt", "pass prompt="),
    ({"ids": [1]}, "cond must be {'tokens'"),
])
def test_sequence_cond_mistakes_are_one_line(cond, needle):
    with pytest.raises(ConditionError) as info:
        TOKENS.check(cond, 1)
    assert needle in str(info.value) and "\n" not in str(info.value)


def test_sequences_combine_with_labels_and_concatenate():
    spec = NamedCond({"label": LabelCond(10), "text": TOKENS})
    cond, n = spec.check({"label": [1, 2], "text": {"tokens": [3, 4]}})  # one prompt, two labels
    assert n == 2 and cond["text"]["tokens"].shape == (2, 10)
    both = cat_conds([cond, cond])
    assert both["text"]["mask"].shape == (4, 10) and both["label"].tolist() == [1, 2, 1, 2]
    assert index_cond(both, slice(1, 3))["text"]["tokens"].shape == (2, 10)
    with pytest.raises(UserError):
        SequenceCond(8)  # neither token ids nor embeddings


def test_negative_condition_takes_the_null_conditions_place():
    """u + s (c - u) with u from ``uncond`` (drop False on that half), in one batched call."""
    calls = []

    def model(x, t, cond=None, drop=None):
        calls.append(drop.tolist())
        return x * 0 + torch.where(drop, -1.0, cond.float())[:, None]

    x, t = torch.zeros(2, 1), torch.rand(2)
    out = classifier_free(model, torch.tensor([2, 3]), 2.0, uncond=torch.tensor([1, 1]))(x, t)
    assert out[:, 0].tolist() == [1 + 2 * (2 - 1), 1 + 2 * (3 - 1)]
    assert calls == [[False] * 4]
    plain = classifier_free(model, torch.tensor([2, 3]), 2.0)(x, t)
    assert plain[:, 0].tolist() == [-1 + 2 * 3, -1 + 2 * 4]
    assert calls[-1] == [False] * 2 + [True] * 2


# ---- networks --------------------------------------------------------------------------------
def _randomised(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return net.eval()


NETWORKS = {
    "unet": lambda spec: build_unet((1, 8, 16), spec, **SMALL_UNET),
    "unet-layout": lambda spec: build_unet((1, 8, 16), spec, **SMALL_UNET, text_layout=True,
                                           text_pooled=False),
    "dit-joint": lambda spec: build_dit((4, 1, 8, 8), spec, depth=2, width=16, heads=2,
                                        patch=[2, 4, 4], text_layers=1),
    "dit-factorised": lambda spec: build_dit((4, 1, 8, 8), spec, depth=2, width=16, heads=2,
                                             patch=[2, 4, 4], attention="factorised"),
    "diffwave": lambda spec: build_diffwave((1, 200), spec, layers=4, channels=8, cycle=2,
                                            text_width=16, text_layers=1, text_heads=2),
    "dit-bag": lambda spec: build_dit((4, 1, 8, 8), spec, depth=2, width=16, heads=2,
                                      patch=[2, 4, 4], text_bag=True),
    "diffwave-bag": lambda spec: build_diffwave((1, 200), spec, layers=4, channels=8, cycle=2,
                                                text_width=16, text_layers=1, text_heads=2,
                                                text_bag=True),
    "diffwave-cross": lambda spec: build_diffwave((1, 200), spec, layers=4, channels=8, cycle=2,
                                                  text_width=16, text_layers=1, text_heads=2,
                                                  text_pooled=False, text_cross=2, text_rate=30),
    "diffwave-bagonly": lambda spec: build_diffwave((1, 200), spec, layers=4, channels=8,
                                                    cycle=2, text_pooled=False, text_bag=True),
    "dit-bagonly": lambda spec: build_dit((4, 1, 8, 8), spec, depth=2, width=16, heads=2,
                                          patch=[2, 4, 4], text_bag=True, text_pooled=False,
                                          text_blocks="none"),
}
EVENTS = {"unet": (1, 8, 16), "dit": (4, 1, 8, 8), "diffwave": (1, 200)}


def test_word_bag_adds_each_word_whatever_the_prompt_around_it():
    """A word adds the same vector to a short and a long prompt (a mean would shrink it), the
    words start at a label embedding's scale (distinct from the first step), padding adds
    nothing, and a dropped row or no prompt has the empty bag; encoded once for sampling, it
    is what training computes."""
    torch.manual_seed(0)
    spec = NamedCond({"text": TOKENS})
    cond_net = SequenceConditioning(spec, 16, layers=1, heads=2, bag_dim=8)
    ids = torch.tensor([[5, 0, 0, 0, 0], [5, 7, 9, 11, 0]])
    value = {"tokens": ids, "mask": ids > 0}
    assert 0.8 < float(cond_net.words.table.weight.std()) < 1.2
    bag = cond_net.words(value)
    table = cond_net.words.table.weight
    torch.testing.assert_close(bag[0], table[5])
    torch.testing.assert_close(bag[1] - bag[0], table[7] + table[9] + table[11])
    drop = torch.tensor([False, True])
    out = cond_net.bag({"text": value}, drop, 2, "cpu")
    assert torch.equal(out[1], torch.zeros(8)) and torch.equal(out[0], bag[0])
    assert torch.equal(cond_net.bag(None, None, 3, "cpu"), torch.zeros(3, 8))
    encoded = cond_net.encode_cond({"text": value})
    torch.testing.assert_close(cond_net.bag(encoded, None, 2, "cpu"), bag)


def test_word_bag_gain_starts_at_the_same_scale_and_learns_that_many_times_faster():
    """A bag with ``gain`` g draws the same N(0, 1) vectors (scale) and one Adam step moves
    them g times as far as the plain bag's, for token ids and for embeddings alike."""
    ids = torch.tensor([[5, 7, 0], [9, 0, 0]])
    value = {"tokens": ids, "mask": ids > 0}
    embeddings = {"embeddings": torch.randn(2, 3, 12), "mask": ids > 0}
    for seq, x in ((TOKENS, value), (SequenceCond(5, dim=12), embeddings)):
        moved = []
        for gain in (1.0, 8.0):
            torch.manual_seed(0)
            bag = WordBag(seq, 64, gain=gain)
            before = bag(x).detach()
            assert 0.7 < float(before[1].std() / (x["mask"][1].sum() ** 0.5)) < 1.3
            opt = torch.optim.Adam(bag.parameters(), lr=1e-3)
            bag(x).sum().backward()
            opt.step()
            moved.append(float((bag(x).detach() - before).abs().mean()))
        assert abs(moved[1] / moved[0] - 8.0) < 0.5, moved
    with pytest.raises(ValueError, match="gain > 0"):
        WordBag(TOKENS, 8, gain=0.0)
    spec = NamedCond({"text": TOKENS})  # model.text_bag_gain reaches both networks' bags
    dit = build_dit((4, 1, 8, 8), spec, depth=2, width=16, heads=2, patch=[2, 4, 4],
                    text_bag=True, text_bag_gain=4.0)
    wave = build_diffwave((1, 200), spec, layers=2, channels=8, cycle=2, text_pooled=False,
                          text_bag=True, text_bag_gain=4.0)
    assert dit.text.words.gain == wave.text.words.gain == 4.0


def test_layout_starts_at_zero_and_gives_each_position_its_words():
    torch.manual_seed(0)
    layout = Layout(16, 8, heads=2)
    context, mask = torch.randn(2, 5, 8), torch.ones(2, 5, dtype=torch.bool)
    assert layout((4, 8), context, mask).abs().max() == 0  # untrained: changes nothing
    layout = _randomised(layout)
    with torch.no_grad():
        out = layout((4, 8), context, mask)  # (B, dim, 4, 8)
        assert out.shape == (2, 16, 4, 8)
        assert (out[..., :4] - out[..., 4:]).abs().mean() > 1e-3  # places differ
        # one visible token: every position can only read that token, so all agree
        one = layout((4, 8), context, torch.arange(5).expand(2, 5) == 2)
        assert torch.allclose(one, one[..., :1, :1].expand_as(one), atol=1e-5)
        assert not torch.allclose(one[0], one[1], atol=1e-4)  # and it is the prompt's


@pytest.mark.parametrize("name", sorted(NETWORKS))
@pytest.mark.parametrize("kind", ["tokens", "embeddings", "label+tokens"])
def test_networks_read_a_sequence(name, kind):
    seq = TOKENS if kind != "embeddings" else SequenceCond(10, dim=12)
    spec = NamedCond({"label": LabelCond(10), "text": seq}) if "label" in kind else seq
    net = NETWORKS[name](spec)
    value = ({"tokens": torch.randint(2, 30, (3, 6))} if seq.vocab_size
             else {"embeddings": torch.randn(3, 6, 12)})
    cond, _ = spec.check({"label": [1, 2, 3], "text": value} if "label" in kind else value)
    x = torch.randn(3, *EVENTS[name.split("-")[0]])
    # the shared contract: shape, drop and None give the null condition, the condition matters
    _check_network(name, net, x, cond, spec, seed=0)
    net = _randomised(net)
    t = torch.rand(3)
    with torch.no_grad():
        out = net(x, t, cond)
        assert torch.allclose(out, net(x, t, net.encode_cond(cond)), atol=1e-5)
        text = cond["text"] if "label" in kind else cond
        with_text = (lambda v: {"label": cond["label"], "text": v}) if "label" in kind else (
            lambda v: v)
        empty, _ = seq.check({seq.key: text[seq.key][:, :0],
                              "mask": torch.zeros(3, 0, dtype=torch.bool)})
        if "label" not in kind:  # the empty prompt is the null prompt
            assert torch.allclose(net(x, t, empty), net(x, t, None), atol=1e-5)
        if seq.vocab_size:  # word order matters: the same tokens reversed give another output
            tokens = text["tokens"]
            rev = {**text, "tokens": torch.cat([tokens[:, :6].flip(1), tokens[:, 6:]], 1)}
            same = torch.allclose(out, net(x, t, with_text(rev)), atol=1e-4)
            assert same == name.endswith("bagonly")  # ... except to a bag of words alone


def test_prompt_encoded_once_and_one_network_call_per_step(monkeypatch):
    """Sampling a prompted model: one batched network call per step (as a labelled model at the
    same guidance), and the text encoder runs once per sampling run, not per step."""
    spec = NamedCond({"text": TOKENS})
    net = _randomised(build_unet((1, 8, 16), spec, **SMALL_UNET))
    model = DiffusionModel(net, "cosine", "v")
    encoder_calls, net_calls = [], []
    monkeypatch.setattr(SequenceEncoder, "forward", _counting(SequenceEncoder.forward,
                                                                encoder_calls))
    monkeypatch.setattr(type(net), "forward", _counting(type(net).forward, net_calls))
    cond = {"text": {"tokens": torch.randint(2, 30, (4, 6))}}
    counts = {}
    for steps in (3, 6):
        encoder_calls.clear(), net_calls.clear()
        stats = {}
        generate_samples(model, 4, event_shape=(1, 8, 16), cond_spec=spec, cond=cond,
                         guidance=3.0, steps=steps, sampler="dpmpp_2m", stats=stats, seed=0)
        assert len(net_calls) == steps and stats["network_evals"] == 2 * steps
        counts[steps] = len(encoder_calls)
    assert counts[3] == counts[6] == 2  # the prompt and the null prompt, once each


def _counting(fn, calls):
    def wrapped(self, *args, **kwargs):
        calls.append(1)
        return fn(self, *args, **kwargs)
    return wrapped


# ---- text encoders ---------------------------------------------------------------------------
def test_learned_encoder_hears_word_order_from_the_start():
    # positions as strong as the words: the "3" of "3 left 7 right" and of "7 left 3 right"
    # must be encoded differently at initialisation, or training finds which digits long before
    # it finds where (with positions 50x weaker than words they differed by 3%)
    torch.manual_seed(0)
    enc = SequenceEncoder(TOKENS, width=32, layers=2, heads=4).eval()
    tokens = torch.tensor([[3, 20, 7, 21]])
    mask = torch.ones(1, 4, dtype=torch.bool)
    with torch.no_grad():
        a = enc({"tokens": tokens, "mask": mask})["context"]  # (1, 1 + 4, W)
        b = enc({"tokens": tokens[:, [2, 1, 0, 3]], "mask": mask})["context"]
    three_a, three_b = a[0, 1], b[0, 3]  # after the start token
    assert (three_a - three_b).norm() > 0.5 * three_a.norm()
    assert (a.mean(1) - b.mean(1)).norm() > 0.05 * a.mean(1).norm()  # pooled: 0.7% before


def test_fitted_tokenizer_unknown_words_lengths_and_storage():
    spec, enc = text_condition(CAPTIONS)
    assert spec.vocab_size == fit_tokenizer(CAPTIONS).get_vocab_size()
    value = enc(["a 3 on the left", "a zebra on the moon"])
    unk = 1
    assert value["tokens"][1, 1].item() == unk and value["tokens"][1, 4].item() == unk
    assert value["mask"].sum(1).tolist() == [5, 5]
    # stored as a dict (model.pt) and rebuilt: the same ids
    again = PromptEncoder(as_cond_spec(spec.to_dict()))(["a 3 on the left", "a zebra on the moon"])
    assert torch.equal(again["tokens"], value["tokens"])
    with pytest.raises(ConditionError, match="at most"):
        enc(["left " * (spec.max_length + 1)])
    with pytest.raises(ConditionError, match="empty"):
        enc([])
    ids, mask = tokenize(fit_tokenizer(CAPTIONS, kind="bpe", vocab_size=60), ["left: 3"], 8)
    assert mask.sum().item() >= 3 and ids[0, 0].item() > 1


def _tiny_encoder(folder: Path, kind: str) -> Path:
    """A randomly initialised CLIP or T5 text encoder with a tokenizer, saved like a hub
    download (nothing is fetched)."""
    transformers = pytest.importorskip("transformers")
    tok = fit_tokenizer(CAPTIONS + ["a zebra"])
    v = tok.get_vocab_size()
    if kind == "clip":
        config = transformers.CLIPTextConfig(
            vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=0,
            pad_token_id=0)
        model = transformers.CLIPTextModel(config)
    else:
        config = transformers.T5Config(vocab_size=v, d_model=32, d_kv=16, d_ff=64, num_layers=1,
                                       num_heads=2, pad_token_id=0, decoder_start_token_id=0)
        model = transformers.T5EncoderModel(config)
    model.save_pretrained(folder)
    transformers.PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]",
                                         unk_token="[UNK]").save_pretrained(folder)
    return folder


def _caption_folder(root: Path, style: str, write_captions) -> Path:
    """Six 8x8 images with captions in metadata.jsonl or .txt files."""
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (8, 8), dtype=np.uint8)).save(root / f"{i}.png")
    return write_captions(root, [(f"{i}.png", CAPTIONS[i % len(CAPTIONS)]) for i in range(6)],
                          style)


@pytest.mark.parametrize("style", ["jsonl", "txt"])
def test_folder_captions_become_prompts(style, tmp_path, write_captions):
    dm = ImageData("folder", root=str(_caption_folder(tmp_path / "imgs", style,
                                                      write_captions)), text={},
                   holdout=0.34, batch_size=4)
    spec = dm.cond_spec
    assert isinstance(spec, NamedCond) and isinstance(spec.field_specs["text"], SequenceCond)
    batch = next(iter(dm.val_dataloader()))
    spec.check_batch(batch["cond"], batch["x"].shape[0])
    assert set(dm.captions_of(batch["cond"])) <= set(CAPTIONS)
    (tmp_path / "bad").mkdir()
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "bad" / "a.png")
    with pytest.raises(ValueError, match="metadata.jsonl"):
        ImageData("folder", root=str(tmp_path / "bad"), text={}).setup()


@pytest.mark.parametrize("kind", ["clip", "t5"])
def test_frozen_encoder_from_a_local_folder_trains_and_samples(kind, tmp_path, capsys,
                                                               monkeypatch, write_captions):
    """The real loading path of a ``transformers`` encoder: captions embedded once per
    distinct caption for training, the model trains, is stored with the encoder's folder, loads
    and samples from prompts (each distinct prompt embedded once)."""
    encoder = _tiny_encoder(tmp_path / kind, kind)
    images = _caption_folder(tmp_path / "imgs", "jsonl", write_captions)
    from omnidiff.text.pretrained import PretrainedTextEncoder

    calls = []
    monkeypatch.setattr(PretrainedTextEncoder, "_run", _counting(PretrainedTextEncoder._run,
                                                                  calls))
    run = tmp_path / "run"
    code = main(["train", "recipe=image_text_digits", "data.name=folder", f"data.root={images}",
                 f"data.text.encoder={encoder}", "data.holdout=0.34", "data.batch_size=4",
                 "model.base_channels=8", "model.norm_groups=4", "model.num_head_channels=8",
                 "model.text_width=16", "model.text_layers=1", "model.text_heads=2",
                 "trainer.max_steps=4", "trainer.enable_progress_bar=false", "eval.n_samples=4",
                 "eval.n_ref=2", "sampler.steps=2", f"out={run}", "threads=1"])
    assert code == 0, capsys.readouterr().err
    assert len(calls) == 1  # five distinct captions, one batch, for the whole run
    payload = torch.load(run / "model.pt", weights_only=True)
    assert payload["cond"]["fields"]["text"]["encoder"]["name"] == str(encoder.resolve())
    pipe = omnidiff.load(run / "model.pt", device="cpu")
    calls.clear()
    x = pipe.generate(prompt=["left: 3, right: 7", "a 1 on the left"], n=2, guidance=2.0,
                      steps=2, seed=0)
    pipe.generate(prompt="left: 3, right: 7", n=3, guidance=2.0, steps=4, seed=0)
    assert x.shape == (4, 1, 8, 8) and torch.isfinite(x).all()
    assert len(calls) == 1  # the second call's prompt was embedded by the first


# ---- the prompt API and the CLI ------------------------------------------------------------
@pytest.fixture(scope="module")
def text_model(tmp_path_factory):
    """A few training steps of image_text_digits with a tiny U-Net (for the API, not quality)."""
    run = tmp_path_factory.mktemp("text") / "run"
    code = main(["train", "recipe=image_text_digits", "data.train_size=256",
                 "data.batch_size=32", "model.base_channels=8", "model.norm_groups=4",
                 "model.num_head_channels=8", "model.text_width=16", "model.text_layers=1",
                 "model.text_heads=2", "trainer.max_steps=6", "trainer.enable_progress_bar=false",
                 "eval.n_samples=10", "eval.n_ref=10", "sampler.steps=2", f"out={run}",
                 "threads=1"])
    assert code == 0
    return run / "model.pt"


def test_prompts_as_cond_negative_prompts_and_mistakes(text_model, tmp_path):
    pipe = omnidiff.load(text_model, device="cpu")
    a, b = "a 3 on the left and a 7 on the right", "left: 2"
    x = pipe.generate(prompt=[a, b], n=3, guidance=3.0, steps=3, seed=0)
    assert x.shape == (6, 1, 8, 16) and pipe.last_prompts == [a] * 3 + [b] * 3
    same = pipe.generate(cond={"text": [a] * 3 + [b] * 3}, guidance=3.0, steps=3, seed=0)
    assert torch.equal(x, same)
    neg = pipe.generate(prompt=[a, b], n=3, guidance=3.0, steps=3, seed=0,
                        negative_prompt="right: 7")
    assert not torch.allclose(neg, x)
    files = pipe.save(x, tmp_path / "out")
    assert Image.open(files[0]).size[0] > 2 * 16 * 4  # the caption column beside the tiles
    for kwargs, needle in [(dict(prompt=[]), "empty"), (dict(prompt="left " * 40), "at most"),
                           (dict(prompt="a", negative_prompt="b"), "guidance"),
                           (dict(prompt="a", cond={"text": "b"}), "prompt once")]:
        with pytest.raises(PipelineError, match=needle):
            pipe.generate(steps=2, **kwargs)


def test_composed_prompts_add_their_pushes_to_guidance(text_model):
    """compose=[(part, w)]: u + g (c - u) + w (c_part - u); the prompt itself as its own part
    is guidance g + w; one part per prompt is repeated as the prompts are."""
    pipe = omnidiff.load(text_model, device="cpu")
    a, b = "a 3 on the left and a 7 on the right", "left: 2"
    kw = dict(prompt=[a, b], n=3, steps=3, seed=0)
    plain = pipe.generate(guidance=5.0, **kw)
    same = pipe.generate(guidance=3.0, compose=[([a, b], 2.0)], **kw)
    torch.testing.assert_close(same, plain, atol=1e-4, rtol=1e-4)
    part = pipe.generate(guidance=3.0, compose=[(["left: 3", "right: 1"], 4.0)], **kw)
    assert pipe.last_stats["network_evals"] == 3 * pipe.last_stats["nfe"]
    per_sample = pipe.generate(guidance=3.0, compose=[(["left: 3"] * 3 + ["right: 1"] * 3, 4.0)],
                               **kw)
    assert torch.equal(part, per_sample)  # (a barely trained model: a small push, but real)
    assert (part - plain).abs().max() > 10 * (same - plain).abs().max().clamp_min(1e-7)
    one = pipe.generate(guidance=3.0, compose=[("left: 3", 4.0)], **kw)
    assert torch.equal(one, pipe.generate(guidance=3.0, compose=[(["left: 3"] * 6, 4.0)], **kw))
    zero = pipe.generate(guidance=5.0, compose=[("right: 1", 0.0)], **kw)
    assert torch.equal(zero, plain) and pipe.last_stats["network_evals"] == 2 * 3
    for kwargs, needle in [(dict(compose=[("b", 1.0)]), "guidance= too"),
                           (dict(compose=[("b", -1.0)], guidance=1.0), ">= 0"),
                           (dict(compose="b", guidance=1.0), "pairs")]:
        with pytest.raises(PipelineError, match=needle):
            pipe.generate(prompt="a", steps=2, **kwargs)


def test_sample_command_takes_prompts(text_model, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("left: 3, right: 7\n\na 1 on the left\n")
    code = main(["sample", f"checkpoint={text_model}", f"prompts={prompts}", "n=2", "steps=2",
                 "guidance=2", f"out={tmp_path / 'a'}"])
    assert code == 0, capsys.readouterr().err
    saved = torch.load(tmp_path / "a" / "samples.pt", weights_only=True)
    assert saved["samples"].shape[0] == 4
    code = main(["sample", f"checkpoint={text_model}", "prompt=left: 3, right: 7", "n=2",
                 "steps=2", f"out={tmp_path / 'b'}"])
    assert code == 0, capsys.readouterr().err
    code = main(["sample", f"checkpoint={text_model}", "prompt=left: 3, right: 7", "n=2",
                 "steps=2", "guidance=2", "compose=left: 3", "compose_weight=4",
                 f"out={tmp_path / 'c'}"])
    assert code == 0, capsys.readouterr().err
    composed = torch.load(tmp_path / "c" / "samples.pt", weights_only=True)["samples"]
    plain = torch.load(tmp_path / "b" / "samples.pt", weights_only=True)["samples"]
    assert composed.shape == plain.shape and not torch.equal(composed, plain)
    assert main(["sample", f"checkpoint={text_model}", "prompt=a", "compose=b"]) != 0
    assert "go together" in capsys.readouterr().err
    prompts.write_text("\n")
    assert main(["sample", f"checkpoint={text_model}", f"prompts={prompts}"]) != 0
    assert "holds no prompt" in capsys.readouterr().err


def test_a_bag_alone_builds_no_encoder_and_a_network_that_reads_nothing_is_refused():
    spec = NamedCond({"text": TOKENS})
    net = NETWORKS["diffwave-bagonly"](spec)
    assert net.text.encoder is None and net.text_pool is None
    assert not [k for k in net.state_dict() if ".encoder." in k]
    with pytest.raises(ValueError, match="reads nothing of the prompt"):
        build_diffwave((1, 200), spec, layers=4, channels=8, cycle=2, text_pooled=False)
    dit = NETWORKS["dit-bagonly"](spec)
    assert dit.text.encoder is None and not any(b.cross for b in dit.blocks)
    assert not [k for k in dit.state_dict() if ".encoder." in k]
    with pytest.raises(ValueError, match="reads nothing of the prompt"):
        build_dit((4, 1, 8, 8), spec, depth=2, width=16, heads=2, patch=[2, 4, 4],
                  text_pooled=False, text_blocks="none")
