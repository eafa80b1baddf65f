"""md.save / md.load: round trips, atomic writes, clear errors on bad files and bad values."""
import os

import numpy as np
import pytest

import minidl as md
from minidl import serialization


def listing(folder):
    return sorted(os.listdir(folder))


def test_round_trip_of_nested_state(tmp_path):
    state = {
        "model": {"0.weight": np.arange(6, dtype=np.float32).reshape(2, 3), "0.bias": np.zeros(2)},
        "optimizer": {"lr": 0.1, "steps": 7, "0.velocity": np.ones((2, 3), dtype=np.float64)},
        "tensor": md.tensor([[1.5, -2.0]]),
        "ints": np.array([1, 2, 3], dtype=np.int64),
        "scalar_array": np.array(3.25),
        "epoch": 3,
        "config": {"name": "mlp", "hidden": [256, 256], "flag": True, "none": None, "eps": 0.3},
        "history": [{"loss": 0.5, "acc": 0.9}, {"loss": 0.25, "acc": 0.95}],
        "deep": {"a": {"b": {"c": np.array([True, False])}}},
    }
    path = tmp_path / "ckpt.npz"
    md.save(state, path)
    back = md.load(path)
    assert set(back) == set(state)
    np.testing.assert_array_equal(back["model"]["0.weight"], state["model"]["0.weight"])
    assert back["model"]["0.weight"].dtype == np.float32
    assert back["model"]["0.bias"].dtype == np.float64
    assert back["optimizer"]["lr"] == 0.1 and back["optimizer"]["steps"] == 7
    assert isinstance(back["optimizer"]["steps"], int)
    np.testing.assert_array_equal(back["optimizer"]["0.velocity"], np.ones((2, 3)))
    assert isinstance(back["tensor"], np.ndarray) and back["tensor"].dtype == np.float32
    np.testing.assert_array_equal(back["tensor"], [[1.5, -2.0]])
    np.testing.assert_array_equal(back["ints"], [1, 2, 3])
    assert back["scalar_array"].shape == () and back["scalar_array"] == 3.25
    assert back["epoch"] == 3
    assert back["config"] == state["config"]
    assert back["history"] == state["history"]
    np.testing.assert_array_equal(back["deep"]["a"]["b"]["c"], [True, False])
    assert listing(tmp_path) == ["ckpt.npz"]  # no temporary file left behind


def test_save_accepts_str_paths_and_creates_folders(tmp_path):
    path = str(tmp_path / "a" / "b" / "x.npz")
    md.save({"x": np.ones(2)}, path)
    np.testing.assert_array_equal(md.load(path)["x"], [1.0, 1.0])


def test_overwrite_replaces_the_file(tmp_path):
    path = tmp_path / "x.npz"
    md.save({"x": np.ones(2), "old": 1}, path)
    md.save({"x": np.zeros(3)}, path)
    back = md.load(path)
    assert set(back) == {"x"}
    np.testing.assert_array_equal(back["x"], np.zeros(3))


def test_files_hold_no_pickles(tmp_path):
    path = tmp_path / "x.npz"
    md.save({"x": np.ones(2), "meta": {"k": "v"}}, path)
    with np.load(path, allow_pickle=False) as f:  # would raise if any entry needed pickle
        for k in f.files:
            assert f[k].dtype != object


def test_interrupted_save_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.npz"
    md.save({"x": np.arange(4.0), "epoch": 1}, path)
    original = path.read_bytes()
    real_savez = np.savez

    def failing_savez(file, **arrays):
        file.write(b"PK\x03\x04 partial data")  # some bytes reach the temporary file ...
        raise OSError("disk full")              # ... then the write fails midway

    monkeypatch.setattr(np, "savez", failing_savez)
    with pytest.raises(OSError, match="disk full"):
        md.save({"x": np.zeros(1000), "epoch": 2}, path)
    monkeypatch.setattr(np, "savez", real_savez)
    assert path.read_bytes() == original
    assert listing(tmp_path) == ["ckpt.npz"]  # the temporary file was removed
    back = md.load(path)
    assert back["epoch"] == 1
    np.testing.assert_array_equal(back["x"], np.arange(4.0))


def test_interrupt_by_keyboard_also_cleans_up(tmp_path, monkeypatch):
    def interrupted(file, **arrays):
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "savez", interrupted)
    with pytest.raises(KeyboardInterrupt):
        md.save({"x": np.ones(1)}, tmp_path / "y.npz")
    assert listing(tmp_path) == []


@pytest.mark.parametrize("damage", ["truncate_half", "truncate_tail", "garbage", "empty", "flip_bytes"])
def test_corrupt_file_gives_a_clear_value_error(tmp_path, damage):
    path = tmp_path / "ckpt.npz"
    md.save({"w": np.random.default_rng(0).standard_normal((50, 50)), "meta": {"epoch": 4}}, path)
    data = path.read_bytes()
    if damage == "truncate_half":
        data = data[:len(data) // 2]
    elif damage == "truncate_tail":
        data = data[:-10]
    elif damage == "garbage":
        data = b"this is not a checkpoint at all" * 10
    elif damage == "empty":
        data = b""
    else:  # overwrite the middle of the file (inside the array data and headers)
        mid = len(data) // 2
        data = data[:mid] + bytes(b ^ 0xFF for b in data[mid:mid + 200]) + data[mid + 200:]
        # a damaged payload may still parse as a valid .npz; then its values differ, but the
        # local headers and the CRC check of the zip must catch it
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"ckpt\.npz.*not a valid minidl \.npz file"):
        md.load(path)


def test_corrupt_json_metadata_gives_a_clear_value_error(tmp_path):
    path = tmp_path / "ckpt.npz"
    np.savez(path, **{serialization._JSON_KEY: np.frombuffer(b"{not json", dtype=np.uint8)})
    with pytest.raises(ValueError, match="not a valid minidl"):
        md.load(path)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        md.load(tmp_path / "nope.npz")


def test_non_serializable_values_are_rejected(tmp_path):
    path = tmp_path / "x.npz"
    with pytest.raises(TypeError, match=r"'opt/fn'.*function"):
        md.save({"opt": {"fn": lambda: 0}}, path)
    with pytest.raises(TypeError, match="'obj'"):
        md.save({"obj": object()}, path)
    with pytest.raises(TypeError, match="'arr'"):
        md.save({"arr": np.array([object(), 1], dtype=object)}, path)  # would need pickle
    with pytest.raises(ValueError, match="keys must be strings"):
        md.save({1: np.ones(1)}, path)
    with pytest.raises(ValueError, match="keys must be strings"):
        md.save({"a/b": np.ones(1)}, path)
    with pytest.raises(TypeError, match="must be a dict"):
        md.save([np.ones(1)], path)
    assert listing(tmp_path) == []  # nothing written for a rejected state
