import json
import os

import numpy as np
import pytest

from widthscan.store import atomic as atomic_mod
from widthscan.store import atomic_write_bytes, atomic_write_json, atomic_write_text


def test_write_then_replace(tmp_path):
    target = tmp_path / "sub" / "f.txt"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new content")
    assert target.read_text() == "new content"
    assert os.listdir(target.parent) == ["f.txt"]


def test_failed_rename_keeps_old_content_and_no_litter(tmp_path, monkeypatch):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")

    def boom(src, dst):
        raise OSError("disk gone")

    monkeypatch.setattr(atomic_mod.os, "replace", boom)
    with pytest.raises(OSError, match="disk gone"):
        atomic_write_bytes(target, b"new" * 1000)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_crash_mid_write_keeps_old_content(tmp_path):
    target = tmp_path / "f.bin"
    atomic_write_bytes(target, b"old")
    with pytest.raises(RuntimeError), atomic_mod.atomic_open(target, "wb") as f:
        f.write(b"half of the new")
        raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["f.bin"]


def test_crash_on_first_write_leaves_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(atomic_mod.os, "replace", lambda s, d: (_ for _ in ()).throw(OSError()))
    with pytest.raises(OSError):
        atomic_write_text(tmp_path / "new.txt", "x")
    assert os.listdir(tmp_path) == []


def test_json_roundtrip_with_numpy_values(tmp_path):
    target = tmp_path / "c.json"
    atomic_write_json(target, {"a": np.int64(3), "b": np.arange(3), "c": [1.5, "x"]})
    assert json.loads(target.read_text()) == {"a": 3, "b": [0, 1, 2], "c": [1.5, "x"]}
    assert atomic_mod.is_temp_file(tmp_path / ".c.json.0a1b.tmp")
    assert not atomic_mod.is_temp_file(target)
