"""PyTorch checkpoints read without PyTorch: both torch.save layouts, written here by hand
(so the tests run without torch) and by torch itself where it is installed; the restricted
unpickler refuses planted callables; zoo models load released-style state dicts."""
import collections
import io
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest

import minidl as md
from minidl import torch_format
from minidl.models import get_model, madry_mnist, preact_resnet18, wong_mnist

try:
    import torch
except ImportError:  # the hand-written files below cover the format without it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")


# --- a tiny torch.save writer (pickle opcodes only; no torch needed) ---------------------------
class Global:
    """Pickles as the GLOBAL ``module.name`` without importing it."""

    def __init__(self, module, name):
        self.module, self.name = module, name

    def __call__(self, *args):  # the pickler insists on callables in reduce tuples
        raise AssertionError("never called")


class Storage:
    def __init__(self, key, array, view=None):
        self.key, self.array, self.view = key, array, view


class TensorRef:
    def __init__(self, storage, offset, size, stride):
        self.args = storage, offset, size, stride

    def __reduce__(self):
        return Global("torch._utils", "_rebuild_tensor_v2"), self.args + (False, collections.OrderedDict())


class Planted:
    """What an attacker would put in a checkpoint: a reduce that runs a command."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return Global("os", "system"), (f"touch {self.path}",)


STORAGE_NAMES = {np.dtype(np.float32): "FloatStorage", np.dtype(np.float64): "DoubleStorage",
                 np.dtype(np.int64): "LongStorage", np.dtype(np.uint8): "ByteStorage"}


class TorchLikePickler(pickle._Pickler):
    dispatch = dict(pickle._Pickler.dispatch)

    def save_global_ref(self, obj):
        self.write(pickle.GLOBAL + f"{obj.module}\n{obj.name}\n".encode())
        self.memoize(obj)

    dispatch[Global] = save_global_ref

    def __init__(self, file, legacy=False):
        super().__init__(file, protocol=2)
        self.legacy = legacy

    def persistent_id(self, obj):
        if isinstance(obj, Storage):
            pid = ("storage", Global("torch", STORAGE_NAMES[obj.array.dtype]), obj.key, "cpu", obj.array.size)
            return pid + (obj.view,) if self.legacy or obj.view else pid
        return None


def tensors_to_refs(obj, storages):
    """Replace arrays by TensorRefs on fresh storages (C order), recording the storages."""
    if isinstance(obj, np.ndarray):
        c = np.array(obj, order="C")
        s = Storage(str(len(storages)), c.reshape(-1))
        storages.append(s)
        strides = tuple(st // obj.itemsize for st in c.strides)
        return TensorRef(s, 0, obj.shape, strides)
    if isinstance(obj, dict):
        return type(obj)((k, tensors_to_refs(v, storages)) for k, v in obj.items())
    return obj


def write_zip(path, obj, name="archive"):
    storages = []
    obj = tensors_to_refs(obj, storages)
    buf = io.BytesIO()
    TorchLikePickler(buf).dump(obj)
    with zipfile.ZipFile(path, "w") as z:
        z.writestr(f"{name}/data.pkl", buf.getvalue())
        z.writestr(f"{name}/byteorder", "little")
        for s in storages:
            z.writestr(f"{name}/data/{s.key}", s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())
        z.writestr(f"{name}/version", "3\n")


def write_legacy(path, obj):
    storages = []
    obj = tensors_to_refs(obj, storages)
    with open(path, "wb") as f:
        for header in (0x1950a86a20f9469cfc6c, 1001,
                       {"protocol_version": 1001, "little_endian": True,
                        "type_sizes": {"short": 2, "int": 4, "long": 4}}):
            pickle.dump(header, f, protocol=2)
        TorchLikePickler(f, legacy=True).dump(obj)
        pickle.dump(sorted(s.key for s in storages), f, protocol=2)
        for s in sorted(storages, key=lambda s: s.key):
            f.write(struct.pack("<q", s.array.size))
            f.write(s.array.astype(s.array.dtype.newbyteorder("<")).tobytes())


WRITERS = {"zip": write_zip, "legacy": write_legacy}


def sample_state(seed=0):
    rng = np.random.default_rng(seed)
    return collections.OrderedDict([
        ("conv.weight", rng.standard_normal((2, 1, 3, 3)).astype(np.float32)),
        ("conv.bias", rng.standard_normal(2).astype(np.float32)),
        ("bn.num_batches_tracked", np.array(7, dtype=np.int64)),
        ("fc.weight", rng.standard_normal((3, 4))),
        ("mask", np.array([1, 0, 255], dtype=np.uint8)),
    ])


# --- reading ------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hand_written_files_load_exactly(tmp_path, fmt):
    state = sample_state()
    path = str(tmp_path / "model.pth")
    WRITERS[fmt](path, state)
    assert torch_format.is_torch_file(path)
    got = md.load(path)
    assert list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape, k
        np.testing.assert_array_equal(got[k], v)


def test_strided_views_and_offsets(tmp_path):
    """A transposed tensor, and one starting inside its storage, come back as their values."""
    base = np.arange(12, dtype=np.float32)
    storage = Storage("0", base)
    obj = {"t": TensorRef(storage, 0, (4, 3), (1, 4)), "tail": TensorRef(storage, 5, (3,), (2,))}
    buf = io.BytesIO()
    TorchLikePickler(buf).dump(obj)
    path = str(tmp_path / "views.pth")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("v/data.pkl", buf.getvalue())
        z.writestr("v/data/0", base.tobytes())
    got = md.load(path)
    np.testing.assert_array_equal(got["t"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(got["tail"], [5, 7, 9])


def test_legacy_storage_views(tmp_path):
    """Old torch.save files name a slice of a larger storage: (view key, offset, numel) in elements."""
    base = np.arange(6, dtype=np.float32)
    path = str(tmp_path / "legacy_view.pth")
    with open(path, "wb") as f:
        for header in (0x1950a86a20f9469cfc6c, 1001, {"little_endian": True}):
            pickle.dump(header, f, protocol=2)
        TorchLikePickler(f, legacy=True).dump({"v": TensorRef(Storage("0", base, view=("v0", 2, 3)), 1, (2,), (1,))})
        pickle.dump(["0"], f, protocol=2)
        f.write(struct.pack("<q", 6) + base.tobytes())
    np.testing.assert_array_equal(md.load(path)["v"], [3.0, 4.0])


def test_out_of_bounds_layout_is_refused(tmp_path):
    """A stride that points past the storage would read foreign memory; it is an error."""
    storage = Storage("0", np.zeros(4, dtype=np.float32))
    buf = io.BytesIO()
    TorchLikePickler(buf).dump({"w": TensorRef(storage, 0, (4,), (1000,))})
    path = str(tmp_path / "bad.pth")
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("b/data.pkl", buf.getvalue())
        z.writestr("b/data/0", storage.array.tobytes())
    with pytest.raises(ValueError, match="reach element"):
        md.load(path)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_planted_reduce_runs_nothing(tmp_path, fmt):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    WRITERS[fmt](path, {"w": np.ones(2, dtype=np.float32), "payload": Planted(marker)})
    with pytest.raises(ValueError, match="forbidden global os.system"):
        md.load(path)
    assert not marker.exists()
    # the payload is live: plain pickle runs it
    buf = io.BytesIO()
    TorchLikePickler(buf).dump(Planted(marker))
    pickle.loads(buf.getvalue())
    assert marker.exists()


def test_planted_reduce_in_legacy_header(tmp_path):
    marker = tmp_path / "pwned"
    path = str(tmp_path / "evil.pth")
    with open(path, "wb") as f:
        TorchLikePickler(f).dump(Planted(marker))
    with pytest.raises(ValueError, match="forbidden global"):
        md.load(path)
    assert not marker.exists()


def test_npz_still_loads_and_garbage_is_reported(tmp_path):
    path = str(tmp_path / "a.npz")
    md.save({"w": np.arange(3.0)}, path)
    np.testing.assert_array_equal(md.load(path)["w"], np.arange(3.0))
    bad = tmp_path / "junk.pth"
    bad.write_bytes(b"\x80\x02junk")
    with pytest.raises(ValueError, match="junk.pth"):
        md.load(str(bad))
    truncated = str(tmp_path / "cut.pth")
    write_legacy(truncated, sample_state())
    with open(truncated, "r+b") as f:
        f.truncate(os.path.getsize(truncated) - 5)
    with pytest.raises(ValueError, match="truncated"):
        md.load(truncated)


@needs_torch
@pytest.mark.parametrize("legacy", [False, True])
def test_files_written_by_torch(tmp_path, legacy):
    state = {"a": torch.randn(3, 4, dtype=torch.float64), "b": torch.arange(10)[2:7],
             "c": torch.randn(4, 3).t(), "h": torch.tensor([1.5, -2.0], dtype=torch.float16),
             "bf": torch.tensor([1.0, -3.0, 0.5], dtype=torch.bfloat16), "flag": torch.tensor(True),
             "epoch": 3, "nested": {"lr": 0.1, "names": ["x", "y"]}}
    path = str(tmp_path / "t.pth")
    torch.save(state, path, _use_new_zipfile_serialization=not legacy)
    got = md.load(path)
    for k in ("a", "b", "c", "h", "flag"):
        ref = state[k].numpy()
        assert got[k].dtype == ref.dtype and got[k].shape == ref.shape, k
        np.testing.assert_array_equal(got[k], ref)
    np.testing.assert_array_equal(got["bf"], state["bf"].float().numpy())
    assert got["epoch"] == 3 and got["nested"] == {"lr": 0.1, "names": ["x", "y"]}


# --- released models into the zoo -----------------------------------------------------------------
def test_zoo_names_are_pytorch_names():
    assert list(wong_mnist().state_dict()) == ["0.weight", "0.bias", "2.weight", "2.bias",
                                               "5.weight", "5.bias", "7.weight", "7.bias"]
    assert list(madry_mnist().state_dict()) == ["0.weight", "0.bias", "3.weight", "3.bias",
                                                "7.weight", "7.bias", "9.weight", "9.bias"]
    names = list(preact_resnet18(width=4).state_dict())
    assert names[:7] == ["conv1.weight", "layer1.0.bn1.weight", "layer1.0.bn1.bias", "layer1.0.bn1.running_mean",
                         "layer1.0.bn1.running_var", "layer1.0.bn1.num_batches_tracked", "layer1.0.conv1.weight"]
    assert "layer2.0.shortcut.0.weight" in names and names[-2:] == ["linear.weight", "linear.bias"]


def test_load_state_dict_errors_name_the_keys():
    model = wong_mnist()
    state = model.state_dict()
    del state["0.bias"]
    state["extra.weight"] = np.zeros(1)
    state["7.weight"] = np.zeros((3, 3))
    with pytest.raises(KeyError) as err:
        model.load_state_dict(state)
    msg = str(err.value)
    assert "missing keys ['0.bias']" in msg and "unexpected keys ['extra.weight']" in msg
    assert "7.weight: expected (10, 100), got (3, 3)" in msg
    state["7.weight"] = np.zeros((10, 100))
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert missing == ["0.bias"] and unexpected == ["extra.weight"]
    assert not model.state_dict()["7.weight"].any()


def test_old_checkpoint_without_num_batches_tracked_loads():
    model = preact_resnet18(width=2)
    state = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    model.load_state_dict(state)


@pytest.mark.parametrize("fmt", ["zip", "legacy"])
def test_hand_written_checkpoint_into_zoo(tmp_path, fmt):
    src, dst = wong_mnist(), wong_mnist()
    path = str(tmp_path / "wong.pth")
    WRITERS[fmt](path, src.state_dict())
    dst.load_state_dict(md.load(path))
    x = md.rand(2, 1, 28, 28)
    np.testing.assert_array_equal(dst(x).numpy(), src(x).numpy())


def torch_zoo(name, width=4):
    """The zoo architectures written in PyTorch as their authors wrote them."""
    nn = torch.nn
    if name == "wong_mnist":
        return nn.Sequential(nn.Conv2d(1, 16, 4, stride=2, padding=1), nn.ReLU(),
                             nn.Conv2d(16, 32, 4, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
                             nn.Linear(32 * 7 * 7, 100), nn.ReLU(), nn.Linear(100, 10))
    if name == "madry_mnist":
        return nn.Sequential(nn.Conv2d(1, 32, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                             nn.Conv2d(32, 64, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                             nn.Linear(64 * 7 * 7, 1024), nn.ReLU(), nn.Linear(1024, 10))
    TF = torch.nn.functional

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1 = nn.BatchNorm2d(cin)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False))

        def forward(self, x):
            out = TF.relu(self.bn1(x))
            sc = self.shortcut(out) if hasattr(self, "shortcut") else x
            out = self.conv1(out)
            return self.conv2(TF.relu(self.bn2(out))) + sc

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, width, 3, 1, 1, bias=False)
            cin = width
            for s in range(4):
                blocks = []
                for i in range(2):
                    blocks.append(Block(cin, width * 2 ** s, 2 if i == 0 and s > 0 else 1))
                    cin = width * 2 ** s
                setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
            self.bn = nn.BatchNorm2d(cin)
            self.linear = nn.Linear(cin, 10)

        def forward(self, x):
            out = self.layer4(self.layer3(self.layer2(self.layer1(self.conv1(x)))))
            out = TF.avg_pool2d(TF.relu(self.bn(out)), 4)
            return self.linear(out.view(out.size(0), -1))

    return Net()


@needs_torch
@pytest.mark.parametrize("name,shape", [("wong_mnist", (3, 1, 28, 28)), ("madry_mnist", (3, 1, 28, 28)),
                                        ("preact_resnet18", (3, 3, 32, 32))])
def test_torch_models_load_into_the_zoo(tmp_path, name, shape):
    torch.manual_seed(0)
    ref = torch_zoo(name)
    if name == "preact_resnet18":  # non-trivial running statistics
        ref.train()
        with torch.no_grad():
            ref(torch.randn(8, 3, 32, 32))
    ref.eval()
    path = str(tmp_path / f"{name}.pth")
    torch.save(ref.state_dict(), path)
    kwargs = {"width": 4} if name == "preact_resnet18" else {}
    model = get_model(name, **kwargs).eval()
    assert list(model.state_dict()) == list(ref.state_dict())
    model.load_state_dict(md.load(path))
    x = np.random.default_rng(1).random(shape, dtype=np.float32)
    with torch.no_grad():
        expected = ref(torch.tensor(x)).numpy()
    np.testing.assert_allclose(model(md.tensor(x)).numpy(), expected, rtol=1e-4, atol=1e-5)
