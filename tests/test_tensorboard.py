"""``logger=tensorboard``: event files that TensorBoard's own reader loads, with the run's
scalars and the domain's samples (images, audio, animated GIFs)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from omnidiff.cli.commands import main

TINY = ["recipe=points2d", "threads=1", "data.train_size=256", "data.val_size=32",
        "data.batch_size=64", "model.width=32", "model.depth=1", "eval.n_samples=64",
        "eval.n_ref=64", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1"]


def _events(logdir: Path) -> EventAccumulator:
    ea = EventAccumulator(str(logdir), size_guidance={"images": 0, "audio": 0, "scalars": 0})
    ea.Reload()
    return ea


def test_tensorboard_run_logs_scalars_and_sample_images(tmp_path, capsys):
    import json

    run = tmp_path / "run"
    assert main(["train", *TINY, "logger=tensorboard", "trainer.max_steps=12",
                 "eval.every_n_steps=6", f"out={run}"]) == 0
    ea = _events(run / "logs" / "tensorboard")
    tags = ea.Tags()
    loss = ea.Scalars("train/loss")
    assert [e.step for e in loss] == list(range(12))  # every step (steps count from 0)
    assert all(np.isfinite(e.value) for e in loss)
    w2 = ea.Scalars("sample/sliced_w2")
    assert [e.step for e in w2] == [6, 12]
    final = json.loads((run / "metrics.json").read_text())["final"]
    assert ea.Scalars("final/sliced_w2")[-1].value == pytest.approx(final["sliced_w2"])
    # the scatter plot of every evaluation, and the second of points2d's two PNGs
    assert {"samples"} <= set(tags["images"])
    shots = ea.Images("samples")
    assert sorted({e.step for e in shots}) == [6, 12]
    with Image.open(io.BytesIO(shots[0].encoded_image_string)) as im:
        assert im.format == "PNG" and im.size == (shots[0].width, shots[0].height)
        assert np.asarray(im.convert("L")).std() > 1  # a picture, not a blank
    assert (run / "logs" / "metrics.csv").is_file()  # the CSV log stays beside it


def test_audio_and_gif_artifacts_reach_tensorboard(tmp_path):
    """The hook reads the files a domain writes: WAV as audio, GIF as an animated image."""
    import soundfile
    from torch.utils.tensorboard import SummaryWriter

    from omnidiff.training.tensorboard import MAX_MEDIA, write_media

    out = tmp_path / "samples"
    (out / "step0000010_wav").mkdir(parents=True)
    (out / "step0000010_gif").mkdir()
    rate = 8000
    tone = np.sin(2 * np.pi * 440 * np.arange(rate // 4) / rate).astype("float32") * 0.5
    wavs = []
    for i in range(MAX_MEDIA + 2):  # more than are logged
        wavs.append(out / "step0000010_wav" / f"{i:03d}_a4.wav")
        soundfile.write(wavs[-1], tone, rate)
    frames = [Image.fromarray(np.full((16, 16), 40 * k, dtype=np.uint8)) for k in range(4)]
    gif = out / "step0000010_gif" / "000_3.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:], duration=100, loop=0)
    logdir = tmp_path / "tb"
    writer = SummaryWriter(str(logdir))
    write_media(writer, [*wavs, gif, out / "step0000010.npy"], 10, "step0000010")
    writer.close()
    ea = _events(logdir)
    audio = sorted(ea.Tags()["audio"])
    assert audio == [f"samples/wav/{i:03d}_a4" for i in range(MAX_MEDIA)]
    clip = ea.Audio(audio[0])[0]
    assert clip.step == 10 and clip.sample_rate == rate
    assert clip.length_frames == len(tone)
    shot = ea.Images("samples/gif/000_3")[0]
    assert shot.encoded_image_string[:4] == b"GIF8" and (shot.width, shot.height) == (16, 16)
    with Image.open(io.BytesIO(shot.encoded_image_string)) as im:
        assert im.n_frames == 4  # it plays


def test_tensorboard_missing_is_one_line(monkeypatch, tmp_path, capsys):
    from omnidiff.training import tensorboard

    monkeypatch.setattr(tensorboard, "available", lambda: False)
    assert main(["train", *TINY, "logger=tensorboard", f"out={tmp_path / 'r'}"]) == 2
    err = capsys.readouterr().err
    assert "pip install 'omnidiff[tensorboard]'" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "r").exists()
