"""minidl.io: atomic writes (temporary file, fsync, rename, fsync of the folder) and JSON."""
import json
import os

import numpy as np
import pytest

from minidl import io


def _leftovers(folder):
    return [n for n in os.listdir(folder) if n.startswith(".")]


def test_write_json_round_trip_with_numpy_values(tmp_path):
    path = tmp_path / "sub" / "m.json"        # the folder is created
    obj = {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "b": np.bool_(True), "t": (1, 2)}
    io.write_json(path, obj)
    back = io.read_json(path)
    assert back == {"i": 3, "f": 0.5, "a": [0, 1, 2], "b": True, "t": [1, 2]}
    assert back == io.as_json(obj)
    assert path.read_text() == json.dumps(back, indent=2)
    assert _leftovers(path.parent) == []


def test_as_json_rejects_what_json_cannot_hold():
    with pytest.raises(TypeError, match="not JSON serializable: object"):
        io.as_json({"x": object()})


def test_an_error_while_writing_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "report.md"
    path.write_text("old")
    with pytest.raises(RuntimeError, match="boom"):
        with io.atomic_write(path) as f:
            f.write("half of the new")
            raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert _leftovers(tmp_path) == []
    with pytest.raises(TypeError):               # json.dump fails midway: same guarantee
        io.write_json(path, {"ok": 1, "bad": object()})
    assert path.read_text() == "old" and _leftovers(tmp_path) == []


def test_the_new_file_appears_only_at_the_end(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"old")
    with io.atomic_write(path, "wb") as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"       # readers still see the old file
        assert len(_leftovers(tmp_path)) == 1
    assert path.read_bytes() == b"new" and _leftovers(tmp_path) == []


def test_file_and_folder_are_fsynced(tmp_path, monkeypatch):
    synced = []
    real = os.fsync

    def record(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd") else fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", record)
    io.write_json(tmp_path / "x.json", [1])
    assert len(synced) == 2                      # the temporary file, then the folder
    if os.path.exists("/proc/self/fd"):
        assert synced[0].endswith(".tmp") and synced[1] == os.path.realpath(tmp_path)


def test_permissions_follow_the_umask_like_open(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_json(tmp_path / "x.json", 1)
        (tmp_path / "plain").write_text("1")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "x.json").st_mode & 0o777 == os.stat(tmp_path / "plain").st_mode & 0o777 == 0o644


def test_bad_mode_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"atomic_write: mode must be 'w' or 'wb', got 'a'"):
        with io.atomic_write(tmp_path / "x", "a"):
            pass
