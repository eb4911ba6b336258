"""What a new user meets in their first hour: files others can read, a quiet console, threads,
class names as conditions, a step callback, ``omnidiff info``."""

from __future__ import annotations

import os
import stat

import pytest
import torch

from omnidiff.io import atomic_save_npy, atomic_torch_save, atomic_write_json, atomic_write_text


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_atomic_writes_keep_the_permissions_a_plain_write_would_have(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        files = [atomic_write_text("x", tmp_path / "a.txt"),
                 atomic_write_json({"a": 1}, tmp_path / "b.json"),
                 atomic_torch_save({"w": torch.ones(2)}, tmp_path / "c.pt"),
                 atomic_save_npy(torch.ones(3), tmp_path / "d.npy")]
        with open(tmp_path / "plain.txt", "w") as fh:
            fh.write("x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "plain.txt").stat().st_mode) == mode
    for f in files:
        assert stat.S_IMODE(f.stat().st_mode) == mode, f


def test_an_atomic_rewrite_keeps_the_files_own_mode(tmp_path):
    f = atomic_write_text("one", tmp_path / "a.txt")
    f.chmod(0o640)
    atomic_write_text("two", f)
    assert f.read_text() == "two" and stat.S_IMODE(f.stat().st_mode) == 0o640
