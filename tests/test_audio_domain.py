"""The audio domain: DiffWave network, mel spectrogram, tones, pitch, files, data, metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import soundfile
import torch

from omnidiff.core.conditions import LabelCond, NamedCond, NoCond, TensorCond
from omnidiff_domains.audio.data import AudioData
from omnidiff_domains.audio.diffwave import (
    DiffWave,
    MelUpsampler,
    build_diffwave,
    upsample_strides,
)
from omnidiff_domains.audio.files import AudioFileError, read_audio, write_wav
from omnidiff_domains.audio.mel import MelSpec
from omnidiff_domains.audio.metrics import audio_metrics, mr_stft
from omnidiff_domains.audio.pitch import estimate_f0, pitch_stats
from omnidiff_domains.audio.tones import make_tones, semitone_hz

SR = 8000


def _randomise(net: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g))
    return net.eval()


# ---------------------------------------------------------------- network
@pytest.mark.parametrize("hop,expected", [(256, [16, 16]), (50, [10, 5]), (300, None),
                                          (64, [16, 4]), (17, [17]), (1, [1]), (75, None)])
def test_upsample_strides_multiply_to_the_hop(hop, expected):
    strides = upsample_strides(hop)
    assert math.prod(strides) == hop
    assert all(s <= 16 for s in strides) or hop == 17
    if expected is not None:
        assert strides == expected


@pytest.mark.parametrize("hop", [50, 256, 75, 300, 7])
def test_mel_upsampler_reaches_the_waveform_rate(hop):
    up = MelUpsampler(hop)
    mel = torch.rand(2, 5, 9)
    assert up(mel).shape == (2, 5, 9 * hop)


@pytest.mark.parametrize("hop", [50, 256, 75])
def test_mel_upsampler_starts_as_centred_interpolation(hop):
    """Frame j lands on sample j * hop (where the centred STFT puts it); a constant stays
    constant between the ends."""
    up = MelUpsampler(hop)
    impulse = torch.zeros(1, 3, 9)
    impulse[:, :, 4] = 1.0
    with torch.no_grad():
        out = up(impulse)[0]  # (3, 9 * hop)
        assert int(out[1].argmax()) == 4 * hop
        flat = up(torch.full((1, 3, 9), 0.7))[0, :, hop:-hop]
    torch.testing.assert_close(flat, torch.full_like(flat, 0.7), atol=1e-5, rtol=0)


def test_upsampler_is_local_in_time():
    """A change in frame j moves only the samples near j * hop."""
    up = _randomise(MelUpsampler(50))
    mel = torch.rand(1, 4, 12)
    other = mel.clone()
    other[..., 6] += 1.0
    diff = (up(other) - up(mel)).abs().sum(1)[0]  # (T,)
    moved = diff.nonzero().flatten()
    assert moved.min() >= 4 * 50 and moved.max() < 9 * 50


@pytest.mark.parametrize("spec", [NoCond(), LabelCond(12), TensorCond((8, None)),
                                  NamedCond({"label": LabelCond(3), "mel": TensorCond((8, None))})])
def test_diffwave_shapes_zero_output_and_null(spec):
    # seeded: the weights and inputs must not depend on what ran before (an unseeded CI run
    # once drew a mel condition that moved the output by less than the 1e-4 tolerance; over
    # 40 seeds the smallest effect is 5e-4, the median 5e-3)
    torch.manual_seed(0)
    net = build_diffwave((1, 400), spec, layers=3, channels=8, cycle=2, hop=50)
    x, t = torch.randn(2, 1, 400), torch.rand(2)
    cond = {NoCond: None, LabelCond: torch.tensor([0, 2]),
            TensorCond: torch.rand(2, 8, 8)}.get(type(spec))
    if isinstance(spec, NamedCond):
        cond = {"label": torch.tensor([0, 2]), "mel": torch.rand(2, 8, 8)}
    out = net(x, t, cond)
    assert out.shape == x.shape and torch.all(out == 0)  # zero-initialised output
    _randomise(net)
    drop = torch.ones(2, dtype=torch.bool)
    with torch.no_grad():
        assert torch.allclose(net(x, t, cond, drop), net(x, t, None, None), atol=1e-5)
        if spec.conditional:
            assert not torch.allclose(net(x, t, cond), net(x, t, None), atol=1e-4)


def test_diffwave_receptive_field_is_bidirectional_and_bounded():
    net = _randomise(DiffWave(None, layers=4, channels=8, cycle=3))
    assert net.receptive_field == 1 + 2 * (1 + 2 + 4 + 1)
    x = torch.randn(1, 1, 200, requires_grad=True)
    net(x, torch.tensor([0.5]))[0, 0, 100].backward()
    seen = x.grad[0, 0].nonzero().flatten()  # input samples output 100 depends on
    reach = (net.receptive_field - 1) // 2
    assert seen.min() == 100 - reach and seen.max() == 100 + reach  # both sides, exactly


def test_diffwave_errors_are_clear():
    with pytest.raises(ValueError, match="hop length"):
        DiffWave(TensorCond((8, None)))
    with pytest.raises(ValueError, match="labels, a prompt and/or a spectrogram"):
        DiffWave(TensorCond((3,)))
    with pytest.raises(ValueError, match="signals in time"):
        build_diffwave((1, 20, 20), None)
    with pytest.raises(TypeError, match="unknown audio model option"):
        build_diffwave((1, 400), None, width=3)
    net = DiffWave(TensorCond((8, None)), hop=50, layers=1, channels=4, cycle=1)
    with pytest.raises(ValueError, match="8 frames, 8 x hop 50 = 400 samples, but the waveform has 450"):
        net(torch.randn(1, 1, 450), torch.rand(1), torch.rand(1, 8, 8))


# ---------------------------------------------------------------- mel, tones, pitch
def test_mel_frames_normalisation_and_peak():
    mel = MelSpec(SR, {"n_fft": 256, "hop_length": 50, "n_mels": 40})
    t = torch.arange(2000) / SR
    wav = 0.5 * torch.sin(2 * math.pi * 1000.0 * t)
    m = mel(wav[None])
    assert m.shape == (1, 40, 40) and 0 <= m.min() and m.max() <= 1
    mag = mel.magnitude(wav[None])
    assert torch.allclose(mel.denormalise(mel.normalise(mag)), mag.clamp_min(1e-5 * 10),
                          rtol=1e-3) or torch.allclose(mel.denormalise(mel.normalise(mag)), mag,
                                                       rtol=1e-3)
    import torchaudio

    centres = torchaudio.functional.melscale_fbanks(129, 20.0, 4000.0, 40, SR, norm="slaney",
                                                    mel_scale="slaney").argmax(0) * SR / 256
    assert abs(float(centres[m[0].mean(1).argmax()]) - 1000.0) < 120.0
    assert mel(torch.zeros(1, 2000)).max() == 0.0  # silence sits on the floor, no NaN


def test_mel_settings_errors():
    with pytest.raises(ValueError, match="unknown data.mel option"):
        MelSpec(SR, {"hop": 3})
    with pytest.raises(ValueError, match="f_max"):
        MelSpec(SR, {"f_max": 6000})


def test_tones_have_their_pitch_and_are_deterministic():
    labels = torch.arange(12).repeat(4)
    g = torch.Generator().manual_seed(0)
    x = make_tones(labels, SR, 2000, g, detune_cents=0.0)
    assert x.shape == (48, 1, 2000) and x.abs().max() <= 1.0
    f0 = estimate_f0(x, SR)
    cents = 1200 * torch.log2(f0 / semitone_hz(labels))
    assert cents.abs().max() < 5.0  # the estimator is exact to a few cents
    again = make_tones(labels, SR, 2000, torch.Generator().manual_seed(0), detune_cents=0.0)
    assert torch.equal(x, again)
    assert abs(float(semitone_hz(9)) - 440.0) < 1e-9 and abs(float(semitone_hz(0)) - 261.63) < 0.01


def test_pitch_stats_accuracy_histogram_and_silence():
    labels = torch.arange(12).repeat(10)
    x = make_tones(labels, SR, 2000, torch.Generator().manual_seed(1))
    s = pitch_stats(x, SR, labels)
    assert s["pitch_acc"] == 1.0 and s["pitch_coverage"] == 1.0 and s["pitch_tv"] == 0.0
    assert pitch_stats(x, SR, (labels + 1) % 12)["pitch_acc"] == 0.0
    only_c = make_tones(torch.zeros(24, dtype=torch.long), SR, 2000, torch.Generator())
    h = pitch_stats(only_c, SR)
    assert h["pitch_coverage"] == pytest.approx(1 / 12) and h["pitch_share_max"] == 12.0
    silent = pitch_stats(torch.zeros(4, 1, 2000), SR, torch.zeros(4, dtype=torch.long))
    assert silent["pitch_acc"] == 0.0 and silent["in_tune_frac"] == 0.0
    assert torch.isnan(estimate_f0(torch.zeros(1, 1, 100), SR)).all()


def test_mr_stft_and_vocoder_metrics_against_griffin_lim():
    data = AudioData(cond="mel", train_size=12, val_size=12)
    x, mel = data.reference(8, torch.Generator().manual_seed(0))
    assert mr_stft(x, x, SR).abs().max() < 1e-5
    perfect = audio_metrics(x, x, cond=mel, ref_cond=mel, data=data)
    assert perfect["logmel_db"] < 1e-4 and perfect["mrstft"] < 1e-4
    assert perfect["gl_logmel_db"] > 0.5 and perfect["mrstft_vs_gl"] < 1e-3
    noisy = audio_metrics(x + 0.05 * torch.randn_like(x), x, cond=mel, ref_cond=mel, data=data)
    assert noisy["logmel_db"] > 1.0 and noisy["mrstft"] > 0.1
    unpaired = audio_metrics(x, x, cond=mel, ref_cond=None, data=data)
    assert "mrstft" not in unpaired and unpaired["logmel_db"] < 1e-4


def test_griffin_lim_inverts_the_spectrogram():
    from omnidiff_domains.audio.metrics import logmel_db

    data = AudioData(cond="mel")
    x = make_tones(torch.arange(0, 12, 3), SR, 2000, torch.Generator().manual_seed(2))
    mel = data.condition(x)
    y = data.mel.griffin_lim(mel)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert float(logmel_db(data.mel, y, mel).max()) < 4.0  # consistent with its spectrogram
    assert float(logmel_db(data.mel, torch.zeros_like(x), mel).min()) > 20.0


# ---------------------------------------------------------------- files and data
def _write(path, data, rate):
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(str(path), data, rate, subtype="PCM_16")
    return path


def test_read_audio_converts_stereo_and_rate(tmp_path):
    t = np.arange(16000) / 16000
    left, right = 0.5 * np.sin(2 * np.pi * 440 * t), 0.1 * np.sin(2 * np.pi * 440 * t)
    path = _write(tmp_path / "stereo.wav", np.stack([left, right], 1), 16000)
    wav = read_audio(path, SR)
    assert wav.shape == (1, 8000)
    assert abs(float(wav.abs().max()) - 0.3) < 0.01  # the mean of the two channels
    assert abs(float(estimate_f0(wav[None], SR)[0]) - 440.0) < 1.0
    with pytest.raises(AudioFileError, match="holds no samples"):
        read_audio(_write(tmp_path / "empty.wav", np.zeros((0, 1)), SR), SR)
    (tmp_path / "junk.wav").write_text("not audio")
    with pytest.raises(AudioFileError, match="cannot read .*junk.wav"):
        read_audio(tmp_path / "junk.wav", SR)


def test_write_wav_is_pcm16_clamped_and_atomic(tmp_path):
    wav = torch.linspace(-2, 2, 1000)[None]
    path = write_wav(wav, tmp_path / "a.wav", SR)
    data, rate = soundfile.read(str(path), dtype="float32")
    info = soundfile.info(str(path))
    assert rate == SR and info.subtype == "PCM_16" and data.shape == (1000,)
    assert data.max() <= 1.0 and data.min() >= -1.0 and abs(data[500] - wav[0, 500]) < 1e-3
    assert not [p for p in tmp_path.iterdir() if ".tmp" in p.name]


def _folder(tmp_path, labelled=True):
    g = torch.Generator().manual_seed(0)
    root = tmp_path / "clips"
    for k, name in enumerate(["low", "high"]):
        x = make_tones(torch.full((4,), 3 * k), SR, 2000, g)
        for i in range(4):
            sub = root / name if labelled else root
            rate = 16000 if i == 0 else SR  # one file at another rate
            wav = x[i, 0].numpy()
            if rate != SR:
                wav = np.interp(np.arange(4000) / 2, np.arange(2000), wav)
            if i == 1:
                wav = wav[:1200]  # shorter than the clip
            data = np.stack([wav, wav], 1) if i == 2 else wav  # one stereo file
            _write(sub / f"{name}{i}.wav", data, rate)
    _write((root / "low" if labelled else root) / "silent.wav", np.zeros(2000), SR)
    return root


def test_folder_data_labels_lengths_and_conversions(tmp_path, capsys):
    root = _folder(tmp_path)
    dm = AudioData(name="folder", root=str(root), cond="label", batch_size=4, holdout=0.25)
    dm.setup()
    assert dm.classes == ["high", "low"] and dm.cond_spec == LabelCond(2)
    said = capsys.readouterr().out  # once, what reading the folder changes, and how to keep it
    assert said.count("\n") == 1 and "9 audio files" in said
    for what in ("resampled from 8000 Hz / 16000 Hz to 8000 Hz (data.sample_rate)",
                 "mixed down from 2 channels to mono", "2 padded with silence to 0.25 s"):
        assert what in said, said
    dm.setup()
    assert capsys.readouterr().out == ""  # said once
    batch = next(iter(dm.train_dataloader()))
    assert batch["x"].shape == (4, 1, 2000) and batch["cond"].dtype == torch.long
    assert torch.isfinite(batch["x"]).all()
    x, y = dm.reference(50, torch.Generator().manual_seed(0))
    assert x.shape[0] == len(y) <= 3 and x.shape[1:] == (1, 2000)  # the held-out files
    voc = AudioData(name="folder", root=str(root), cond="mel", crop_frames=8)
    assert voc.event_shape == (1, 400)
    b = next(iter(voc.train_dataloader()))
    assert b["x"].shape == (32 if len(voc._load()["train"]) >= 32 else len(
        voc._load()["train"]), 1, 400) and b["cond"].shape[1:] == (40, 8)
    assert torch.allclose(voc.condition(b["x"]), b["cond"])  # crops carry their own mel


def test_folder_errors_are_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(AudioFileError, match="no audio files .* under"):
        AudioData(name="folder", root=str(empty)).setup()
    with pytest.raises(AudioFileError, match="is not a folder"):
        AudioData(name="folder", root=str(tmp_path / "nope")).setup()
    flat = _folder(tmp_path, labelled=False)
    with pytest.raises(AudioFileError, match="needs labels.*data.cond=none"):
        AudioData(name="folder", root=str(flat), cond="label").setup()
    AudioData(name="folder", root=str(flat), cond="none").setup()  # fine unlabelled
    with pytest.raises(ValueError, match="data.root"):
        AudioData(name="folder")
    with pytest.raises(ValueError, match="unknown data.cond"):
        AudioData(cond="words")
    with pytest.raises(ValueError, match="data.sample_rate=80 is too low"):
        AudioData(sample_rate=80)


def test_tones_data_and_condition_hooks():
    dm = AudioData(cond="label+mel", train_size=24, val_size=12, batch_size=6)
    dm.setup()
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (6, 1, 2000) and b["cond"]["mel"].shape == (6, 40, 40)
    dm.cond_spec.check_batch(b["cond"], 6)
    assert dm.event_shape_for(b["cond"]) == (1, 2000)
    assert dm.duration(b["x"]) == pytest.approx(6 * 0.25)
    with pytest.raises(ValueError, match="pass cond="):
        dm.condition(b["x"])
    voc = AudioData(cond="mel")
    assert voc.event_shape_for(torch.zeros(1, 40, 7)) == (1, 350)


def test_tones_vocoder_crops():
    dm = AudioData(cond="mel", crop_frames=8, train_size=24, val_size=8, batch_size=6)
    assert dm.event_shape == (1, 400)
    b = next(iter(dm.train_dataloader()))
    assert b["x"].shape == (6, 1, 400) and b["cond"].shape == (6, 40, 8)
    torch.testing.assert_close(dm.condition(b["x"]), b["cond"])  # each crop's own spectrogram
    x, mel = dm.reference(5, torch.Generator().manual_seed(0))
    again, _ = dm.reference(5, torch.Generator().manual_seed(0))
    assert x.shape == (5, 1, 400) and torch.equal(x, again) and mel.shape == (5, 40, 8)
