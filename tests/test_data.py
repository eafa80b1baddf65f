"""Tests for minidl.data: IDX/CIFAR parsing, verified downloads, safe unpickling, batching.

Downloads are served by an http.server on 127.0.0.1 started here, from tiny valid files
built here, with the checksum tables patched to those files' MD5s. Tests on the real
datasets use MINIDL_TEST_DATA or ../shared/data (relative to the repo root) and skip when
neither exists.
"""
import gzip
import hashlib
import http.server
import io
import os
import pickle
import socket
import tarfile
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from minidl import backend
from minidl.data import CIFAR10, MNIST, DataLoader, data_root, normalize, random_crop_flip
from minidl.data import cifar as cifar_mod
from minidl.data import mnist as mnist_mod
from minidl.data.download import DataNotFoundError, DownloadError, download
from minidl.io import file_digest
from minidl.data.idx import IDXFormatError, parse_idx, read_idx
from minidl.data.safe_pickle import safe_load

REPO = Path(__file__).resolve().parents[1]
REAL_DATA = Path(os.environ.get("MINIDL_TEST_DATA") or REPO.parent / "shared" / "data")
MNIST_NAMES = list(mnist_mod.MNIST_MD5)


def md5(data):
    return hashlib.md5(data).hexdigest()


# --- tiny valid files -------------------------------------------------------------------------

def idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(s).to_bytes(4, "big") for s in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def tiny_mnist(n_train=7, n_test=3, seed=0):
    """{filename: gzip bytes} of a small but valid MNIST, plus the raw arrays."""
    r = np.random.default_rng(seed)
    arrays = {}
    files = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        pixels = r.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = r.integers(0, 10, n, dtype=np.uint8)
        arrays[split] = (pixels, labels)
        files[f"{split}-images-idx3-ubyte.gz"] = gzip.compress(idx_bytes(pixels, 2051))
        files[f"{split}-labels-idx1-ubyte.gz"] = gzip.compress(idx_bytes(labels, 2049))
    return files, arrays


def cifar_batch(n, seed, bytes_keys=False):
    """Pickle bytes of a CIFAR-10 batch dict with n images, and its (data, labels)."""
    r = np.random.default_rng(seed)
    data = r.integers(0, 256, (n, 3072), dtype=np.uint8)
    labels = [int(v) for v in r.integers(0, 10, n)]
    batch = {"batch_label": "tiny", "labels": labels, "data": data,
             "filenames": [f"img_{i}.png" for i in range(n)]}
    if bytes_keys:  # what the original Python 2 files give with encoding='bytes'
        batch = {k.encode(): v for k, v in batch.items()}
    return pickle.dumps(batch, protocol=2), data, labels


def tiny_cifar_files(bytes_keys=False):
    files, arrays = {}, {}
    for i, name in enumerate(cifar_mod.TRAIN_BATCHES + cifar_mod.TEST_BATCHES):
        files[name], data, labels = cifar_batch(4 if name != "test_batch" else 3, i, bytes_keys)
        arrays[name] = (data, labels)
    names = [c.upper() for c in cifar_mod.CLASSES]
    files["batches.meta"] = pickle.dumps({"label_names": names, "num_vis": 3072}, protocol=2)
    return files, arrays


def write_files(folder, files):
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)


def tar_gz(members):
    """tar.gz bytes holding ``{member name: bytes}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def expected_images(pixels):
    return pixels.astype(np.float32) / 255


# --- a local web server -----------------------------------------------------------------------

class _Handler(http.server.BaseHTTPRequestHandler):
    """Serves ``server.routes[path]``: bytes, or (bytes, announced Content-Length)."""

    def do_GET(self):
        entry = self.server.routes.get(self.path)
        if entry is None:
            self.send_error(404)
            return
        body, declared = entry if isinstance(entry, tuple) else (entry, len(entry))
        self.send_response(200)
        self.send_header("Content-Length", str(declared))
        self.end_headers()
        self.wfile.write(body)  # a shorter body than announced = a broken-off transfer

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def _server():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    server.routes = {}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def server(_server):
    """(base URL, routes dict) with empty routes."""
    _server.routes.clear()
    return f"http://127.0.0.1:{_server.server_address[1]}", _server.routes


@pytest.fixture
def closed_url():
    """A URL on a localhost port where nothing listens (connection refused)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}/"


@pytest.fixture
def tiny_mnist_md5(monkeypatch):
    files, arrays = tiny_mnist()
    monkeypatch.setattr(mnist_mod, "MNIST_MD5", {k: md5(v) for k, v in files.items()})
    return files, arrays


def serve(routes, prefix, files):
    for name, data in files.items():
        routes[f"/{prefix}/{name}"] = data


def no_part_files(folder):
    """No temporary file of an unfinished write is left (minidl.io.atomic_write's ``.*.tmp``)."""
    return not [p for p in Path(folder).rglob(".*") if p.suffix in (".tmp", ".part")]


# --- data folder ------------------------------------------------------------------------------

def test_data_root_order(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path / "env"))
    assert data_root(tmp_path / "arg") == tmp_path / "arg"
    assert data_root() == tmp_path / "env"
    monkeypatch.delenv("MINIDL_DATA")
    assert data_root() == Path.home() / ".cache" / "minidl"


# --- downloads --------------------------------------------------------------------------------

def test_mnist_download_verifies_and_caches(server, tiny_mnist_md5, tmp_path, closed_url):
    url, routes = server
    files, arrays = tiny_mnist_md5
    serve(routes, "a", files)
    ds = MNIST(root=tmp_path, train=True, mirrors=[url + "/a/"])
    pixels, labels = arrays["train"]
    assert ds.images.shape == (7, 1, 28, 28) and ds.images.dtype == np.float32
    np.testing.assert_array_equal(ds.images[:, 0], expected_images(pixels))
    assert ds.labels.dtype == np.int64 and ds.labels.tolist() == labels.tolist()
    assert len(ds) == 7 and ds.classes == [str(d) for d in range(10)]
    image, label = ds[2]
    assert image.shape == (1, 28, 28) and label == labels[2]
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"):
        assert file_digest(tmp_path / "mnist" / name, "md5") == md5(files[name])
    assert no_part_files(tmp_path)
    # Second time: the verified files on disk are used, the (dead) mirror is not needed.
    again = MNIST(root=tmp_path, train=True, mirrors=[closed_url])
    np.testing.assert_array_equal(again.images, ds.images)
    test = MNIST(root=tmp_path, train=False, mirrors=[url + "/a/"])
    assert test.images.shape == (3, 1, 28, 28)


def test_mnist_uses_files_directly_in_root(tiny_mnist_md5, tmp_path, monkeypatch):
    files, arrays = tiny_mnist_md5
    monkeypatch.setenv("MINIDL_DATA", str(tmp_path))
    write_files(tmp_path, files)
    ds = MNIST(train=False, download=False)
    assert ds.labels.tolist() == arrays["t10k"][1].tolist()


def test_checksum_failure_falls_back_to_next_mirror(server, tiny_mnist_md5, tmp_path):
    url, routes = server
    files, _ = tiny_mnist_md5
    serve(routes, "bad", {k: v[:-1] + b"X" for k, v in files.items()})
    serve(routes, "good", files)
    ds = MNIST(root=tmp_path, train=False, mirrors=[url + "/missing/", url + "/bad/", url + "/good/"])
    assert len(ds) == 3
    assert file_digest(tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz", "md5") == md5(files["t10k-images-idx3-ubyte.gz"])


def test_corrupt_existing_file_is_refetched(server, tiny_mnist_md5, tmp_path):
    url, routes = server
    files, arrays = tiny_mnist_md5
    serve(routes, "a", files)
    write_files(tmp_path / "mnist", files)
    bad = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    bad.write_bytes(files["t10k-labels-idx1-ubyte.gz"][:10])  # a partial copy
    with pytest.raises(DataNotFoundError, match="t10k-labels-idx1-ubyte.gz"):
        with pytest.warns(RuntimeWarning, match="corrupt"):
            MNIST(root=tmp_path, train=False, download=False)
    with pytest.warns(RuntimeWarning, match="corrupt"):
        ds = MNIST(root=tmp_path, train=False, mirrors=[url + "/a/"])
    assert ds.labels.tolist() == arrays["t10k"][1].tolist()
    assert file_digest(bad, "md5") == md5(files["t10k-labels-idx1-ubyte.gz"])


def test_broken_download_leaves_no_file(server, tmp_path):
    url, routes = server
    body = os.urandom(5000)
    routes["/cut/f.bin"] = (body[:1000], len(body))  # connection closes after 1000 of 5000 bytes
    routes["/wrong/f.bin"] = body[:-1] + b"!"
    with pytest.raises(DownloadError) as err:
        download("f.bin", [url + "/cut/", url + "/wrong/"], tmp_path / "d", md5(body), progress=False)
    assert len(err.value.attempts) == 2 and "checksum mismatch" in err.value.attempts[1][1]
    assert os.listdir(tmp_path / "d") == []  # neither a final file nor a leftover .part file
    routes["/ok/f.bin"] = body
    path = download("f.bin", [url + "/cut/", url + "/ok/"], tmp_path / "d", md5(body), progress=False)
    assert path.read_bytes() == body and os.listdir(tmp_path / "d") == ["f.bin"]


def test_offline_error_names_files_and_folder(tmp_path, closed_url):
    with pytest.raises(DataNotFoundError) as err:
        MNIST(root=tmp_path, train=True, mirrors=[closed_url])
    message = str(err.value)
    assert str(tmp_path / "mnist") in message
    assert "train-images-idx3-ubyte.gz" in message and "train-labels-idx1-ubyte.gz" in message
    assert "t10k" not in message and closed_url in message
    assert no_part_files(tmp_path)
    with pytest.raises(DataNotFoundError) as err:
        CIFAR10(root=tmp_path, train=False, mirrors=[closed_url])
    message = str(err.value)
    assert str(tmp_path / "cifar10") in message and "cifar-10-python.tar.gz" in message
    assert "cifar-10-batches-py" in message


# --- IDX parsing ------------------------------------------------------------------------------

def test_idx_rejects_malformed_headers_and_truncation(tmp_path):
    pixels = np.zeros((2, 28, 28), np.uint8)
    good = idx_bytes(pixels, 2051)
    assert parse_idx(good, "x", 2051).shape == (2, 28, 28)
    with pytest.raises(IDXFormatError, match=r"f\.idx.*magic number 2049, expected 2051"):
        parse_idx(idx_bytes(pixels, 2049), "f.idx", 2051)
    with pytest.raises(IDXFormatError, match="not an IDX file"):
        parse_idx(b"\x12\x34" + good[2:], "f.idx")
    with pytest.raises(IDXFormatError, match="truncated"):
        parse_idx(good[:-5], "f.idx", 2051)
    with pytest.raises(IDXFormatError, match="truncated header"):
        parse_idx(good[:9], "f.idx", 2051)
    with pytest.raises(IDXFormatError, match="unexpected bytes"):
        parse_idx(good + b"\0", "f.idx", 2051)
    path = tmp_path / "cut-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(good)[:-12])
    with pytest.raises(IDXFormatError, match="cut-idx3-ubyte.gz.*gzip"):
        read_idx(path, 2051)


def test_mnist_label_count_mismatch(tmp_path):
    images = tmp_path / "i.gz"
    labels = tmp_path / "l.gz"
    images.write_bytes(gzip.compress(idx_bytes(np.zeros((3, 28, 28)), 2051)))
    labels.write_bytes(gzip.compress(idx_bytes(np.zeros(2), 2049)))
    with pytest.raises(IDXFormatError, match="2 labels but .* 3 images"):
        mnist_mod.load_mnist_files(images, labels)
    labels.write_bytes(gzip.compress(idx_bytes(np.full(3, 10), 2049)))
    with pytest.raises(ValueError, match="labels must lie in"):
        mnist_mod.load_mnist_files(images, labels)


def test_mnist_truncated_file_with_matching_checksum_fails_clearly(tmp_path, monkeypatch):
    files, _ = tiny_mnist()
    name = "t10k-images-idx3-ubyte.gz"
    files[name] = gzip.compress(gzip.decompress(files[name])[:-100])
    monkeypatch.setattr(mnist_mod, "MNIST_MD5", {k: md5(v) for k, v in files.items()})
    write_files(tmp_path / "mnist", files)
    with pytest.raises(IDXFormatError, match=f"{name}: truncated"):
        MNIST(root=tmp_path, train=False, download=False)


# --- CIFAR-10 ---------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["cifar10/cifar-10-batches-py", "cifar-10-batches-py"])
@pytest.mark.parametrize("bytes_keys", [False, True])
def test_cifar_from_extracted_folder(tmp_path, layout, bytes_keys, closed_url):
    files, arrays = tiny_cifar_files(bytes_keys)
    write_files(tmp_path / layout, files)
    with pytest.warns(UserWarning, match="holds 20 images, not the official 50000"):
        train = CIFAR10(root=tmp_path, train=True, mirrors=[closed_url])
    data = np.concatenate([arrays[b][0] for b in cifar_mod.TRAIN_BATCHES])
    assert train.images.shape == (20, 3, 32, 32) and train.images.dtype == np.float32
    np.testing.assert_array_equal(train.images, expected_images(data).reshape(20, 3, 32, 32))
    assert train.labels.dtype == np.int64
    assert train.labels.tolist() == sum((arrays[b][1] for b in cifar_mod.TRAIN_BATCHES), [])
    assert train.classes[0] == "AIRPLANE"  # read from batches.meta
    with pytest.warns(UserWarning, match="holds 3 images"):
        test = CIFAR10(root=tmp_path, train=False, download=False)
    assert len(test) == 3 and test.labels.tolist() == arrays["test_batch"][1]
    # the red channel is the first 1024 values of a row, in row-major order
    assert test.images[1, 0, 0, 5] == np.float32(arrays["test_batch"][0][1, 5]) / 255


def test_cifar_archive_download_and_refetch(server, tmp_path, monkeypatch):
    url, routes = server
    files, arrays = tiny_cifar_files()
    archive = tar_gz({f"cifar-10-batches-py/{k}": v for k, v in files.items()})
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", {"cifar-10-python.tar.gz": md5(archive)})
    routes["/c/cifar-10-python.tar.gz"] = archive
    (tmp_path / "cifar10").mkdir()
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(archive[:100])  # corrupt copy
    with pytest.warns(RuntimeWarning, match="corrupt"), pytest.warns(UserWarning, match="holds 3"):
        test = CIFAR10(root=tmp_path, train=False, mirrors=[url + "/c/"])
    assert test.labels.tolist() == arrays["test_batch"][1]
    assert test.folder == tmp_path / "cifar10" / "cifar-10-batches-py"
    assert file_digest(tmp_path / "cifar10" / "cifar-10-python.tar.gz", "md5") == md5(archive)
    assert no_part_files(tmp_path)


def test_cifar_archive_with_path_traversal_is_refused(tmp_path, monkeypatch):
    files, _ = tiny_cifar_files()
    archive = tar_gz({"cifar-10-batches-py/test_batch": files["test_batch"],
                      "cifar-10-batches-py/../../evil": b"owned"})
    monkeypatch.setattr(cifar_mod, "CIFAR10_MD5", {"cifar-10-python.tar.gz": md5(archive)})
    write_files(tmp_path / "root" / "cifar10", {"cifar-10-python.tar.gz": archive})
    with pytest.raises(ValueError, match="unsafe path"):
        CIFAR10(root=tmp_path / "root", train=False, download=False)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "root" / "evil").exists()


def test_cifar_malformed_batch(tmp_path):
    files, _ = tiny_cifar_files()
    folder = tmp_path / "cifar-10-batches-py"
    write_files(folder, files)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]},
                                                     protocol=2))
    with pytest.raises(ValueError, match=r"test_batch: 'data' must be a uint8 array of shape \(N, 3072\)"):
        CIFAR10(root=tmp_path, train=False, download=False)
    (folder / "test_batch").write_bytes(files["test_batch"][:500])
    with pytest.raises(pickle.UnpicklingError, match="test_batch"):
        CIFAR10(root=tmp_path, train=False, download=False)


# --- safe unpickling --------------------------------------------------------------------------

def test_forbidden_global_raises_and_does_not_run(tmp_path):
    marker = tmp_path / "marker"
    evil = f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()  # protocol 0: os.system('touch ...')
    with pytest.raises(pickle.UnpicklingError, match="forbidden global os.system"):
        safe_load(evil)
    assert not marker.exists()
    folder = tmp_path / "cifar-10-batches-py"
    write_files(folder, {"test_batch": evil})
    with pytest.raises(pickle.UnpicklingError, match="test_batch.*forbidden global os.system"):
        CIFAR10(root=tmp_path, train=False, download=False)
    assert not marker.exists()
    builtins_eval = b"\x80\x02cbuiltins\neval\nX\x06\x00\x00\x001 + 1\x85R."
    with pytest.raises(pickle.UnpicklingError, match="builtins.eval"):
        safe_load(builtins_eval)
    # _codecs.encode is allowed only for the latin-1 bytes encoding numpy arrays need
    with pytest.raises(pickle.UnpicklingError, match="_codecs.encode"):
        safe_load(b"\x80\x02c_codecs\nencode\nX\x01\x00\x00\x00aX\x06\x00\x00\x00rot_13\x86R.")
    arr = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(safe_load(pickle.dumps({"a": arr}, protocol=2))["a"], arr)


def test_unpickler_allowlist_is_exactly_what_arrays_need():
    """Any extra entry widens what a pickle may call (one ``builtins.getattr`` is enough to
    reach ``eval``, see the gadget below), so the list is pinned, entries and objects: only
    constructors that build fresh values from bytes in the file, and immutable markers."""
    from minidl import restricted_pickle
    from minidl.data import safe_pickle
    assert set(safe_pickle.ALLOWED_GLOBALS) == {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"), ("builtins", "bytes"),
        ("__builtin__", "bytes")}
    allowed = safe_pickle.ALLOWED_GLOBALS
    assert allowed[("numpy", "ndarray")] is safe_pickle.NDARRAY and allowed[("numpy", "ndarray")] is not np.ndarray
    assert not isinstance(allowed[("numpy", "ndarray")], restricted_pickle.Constructor)  # never called
    with pytest.raises(AttributeError, match="immutable"):
        allowed[("numpy", "ndarray")].name = "changed"
    assert {allowed[k].fn for k in allowed if k[1] != "ndarray"} == {
        safe_pickle._reconstruct, safe_pickle._frombuffer, safe_pickle._dtype, safe_pickle._latin1_encode,
        safe_pickle._empty_bytes}


def _marker_payload(marker):
    """Python source that creates the file ``marker``: the proof that a pickle ran code."""
    return f"open({str(marker)!r}, 'w').close()"


@pytest.mark.parametrize("module, name", [("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "exec"),
                                          ("builtins", "eval"), ("posix", "system"), ("os", "system"),
                                          ("subprocess", "Popen"), ("builtins", "open")])
def test_dangerous_globals_are_refused(module, name, tmp_path):
    marker = tmp_path / "marker"
    arg = f"touch {marker}" if name in ("system", "Popen") else _marker_payload(marker)
    evil = f"c{module}\n{name}\n(V{arg}\ntR.".encode()  # protocol 0: module.name(arg)
    with pytest.raises(pickle.UnpicklingError, match=f"forbidden global {module}.{name}"):
        safe_load(evil)
    folder = tmp_path / "cifar-10-batches-py"
    write_files(folder, {"test_batch": evil})
    with pytest.raises(pickle.UnpicklingError, match=f"test_batch.*forbidden global {module}.{name}"):
        CIFAR10(root=tmp_path, train=False, download=False)
    assert not marker.exists()


def _getattr_gadget(marker):
    """A protocol-0 pickle that, given ``builtins.getattr``, reaches ``eval`` through the
    globals of the allowed ``_codecs.encode`` stand-in: getattr(encode, '__globals__')
    .get('__builtins__').get('eval')(payload)."""
    return ("cbuiltins\ngetattr\np0\n"
            "(c_codecs\nencode\nV__globals__\ntRp1\n"
            "g0\n(g1\nVget\ntR(V__builtins__\ntRp2\n"
            "g0\n(g2\nVget\ntR(Veval\ntR"
            f"(V{_marker_payload(marker)}\ntR.").encode()


def test_getattr_gadget_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "marker"
    gadget = _getattr_gadget(marker)
    with pytest.raises(pickle.UnpicklingError, match="forbidden global builtins.getattr"):
        safe_load(gadget)
    write_files(tmp_path / "cifar-10-batches-py", {"test_batch": gadget})
    with pytest.raises(pickle.UnpicklingError, match="test_batch.*forbidden global builtins.getattr"):
        CIFAR10(root=tmp_path, train=False, download=False)
    assert not marker.exists()
    # The gadget is live: an unpickler whose allow-list has getattr and, for _codecs.encode,
    # any Python function (the old stand-in was one) runs it. This is what the refusal above
    # protects against.
    class WithGetattr(pickle.Unpickler):
        def find_class(self, module, name):
            return {("builtins", "getattr"): getattr, ("_codecs", "encode"): _marker_payload}[(module, name)]

    WithGetattr(io.BytesIO(gadget)).load()
    assert marker.exists()


def test_pickle_length_fields_do_not_allocate(tmp_path):
    """BINBYTES8 claiming 2**40 bytes: the file is read whole and unpickled from memory, so
    the claim meets the end of the data (a one-line error) instead of an allocation."""
    evil = b"\x80\x04\x8e" + (1 << 40).to_bytes(8, "little") + b"abc"
    write_files(tmp_path / "cifar-10-batches-py", {"test_batch": evil})
    with pytest.raises((pickle.UnpicklingError, ValueError), match="test_batch"):
        CIFAR10(root=tmp_path, train=False, download=False)


# --- augmentation -----------------------------------------------------------------------------

class _FixedRng:
    """Generator stand-in that returns offset 4 for every draw and never flips."""

    def integers(self, low, high, size):
        return np.full(size, 4)

    def random(self, size):
        return np.ones(size)


class _RecordingRng:
    def __init__(self, seed):
        self.gen = np.random.default_rng(seed)
        self.draws = []

    def integers(self, *args, **kwargs):
        self.draws.append(self.gen.integers(*args, **kwargs))
        return self.draws[-1]

    def random(self, *args, **kwargs):
        self.draws.append(self.gen.random(*args, **kwargs))
        return self.draws[-1]


def test_random_crop_flip_identity_and_reference():
    images = np.random.default_rng(0).random((5, 3, 32, 32), dtype=np.float32)
    np.testing.assert_array_equal(random_crop_flip(images, _FixedRng()), images)
    rng = _RecordingRng(1)
    out = random_crop_flip(images, rng, padding=4)
    dy, dx, u = rng.draws
    assert out.shape == images.shape and out.dtype == images.dtype
    for i in range(len(images)):  # reference: pad, cut, mirror, one image at a time
        padded = np.pad(images[i], ((0, 0), (4, 4), (4, 4)))
        crop = padded[:, dy[i]:dy[i] + 32, dx[i]:dx[i] + 32]
        np.testing.assert_array_equal(out[i], crop[:, :, ::-1] if u[i] < 0.5 else crop)


def test_random_crop_flip_covers_offsets_and_flips_half():
    n, size, p = 4000, 12, 4
    ramp = np.broadcast_to(np.arange(1, size + 1, dtype=np.float32), (n, 1, size, size))
    out = random_crop_flip(ramp, np.random.default_rng(2), padding=p)[:, 0]
    # A ramp image (column j holds j + 1) shows the shift by its zero border and the flip
    # by the direction of the ramp.
    live_rows = (out != 0).any(axis=2)                  # (n, size): rows holding pixels
    top, bottom = live_rows.argmax(1), live_rows[:, ::-1].argmax(1)
    dy = np.where(top > 0, p - top, p + bottom)         # top zero rows = p - dy when dy < p
    row = out[:, size // 2]                             # shifted by <= p < size / 2: has pixels
    left, right = (row != 0).argmax(1), (row[:, ::-1] != 0).argmax(1)
    values = np.where(row != 0, row, np.nan)
    flipped = np.nanargmax(values, 1) < np.nanargmin(values, 1)
    # unflipped: p - dx zero columns on the left when dx < p; flipped: on the right instead
    near, far = np.where(flipped, right, left), np.where(flipped, left, right)
    dx = np.where(near > 0, p - near, p + far)
    assert set(dy.tolist()) == set(range(2 * p + 1)) == set(dx.tolist())
    assert abs(flipped.mean() - 0.5) < 0.05


def test_normalize():
    x = np.random.default_rng(0).random((10, 3, 4, 4)).astype(np.float32)
    y = normalize(x, [0.5, 0.4, 0.3], [0.1, 0.2, 0.3])
    assert y.dtype == np.float32
    np.testing.assert_allclose(y[:, 1], (x[:, 1] - 0.4) / 0.2, rtol=1e-6)
    with pytest.raises(ValueError, match="one per channel"):
        normalize(x, [0.5], [0.1])


# --- DataLoader -------------------------------------------------------------------------------

@pytest.fixture
def tensor_mod():
    return pytest.importorskip("minidl.tensor")


def arrays_of(batch):
    x, y = batch
    return x.numpy(), y.numpy()


def small_data(n=10):
    images = np.arange(n * 2 * 2 * 2, dtype=np.float32).reshape(n, 2, 2, 2)
    labels = np.arange(n, dtype=np.int64)
    return images, labels


def test_loader_batches_and_len(tensor_mod):
    images, labels = small_data(10)
    loader = DataLoader((images, labels), batch_size=4)
    assert len(loader) == 3
    batches = [arrays_of(b) for b in loader]
    assert [len(y) for _, y in batches] == [4, 4, 2]
    x0, y0 = batches[0]
    assert isinstance(next(iter(loader))[0], tensor_mod.Tensor)
    np.testing.assert_array_equal(x0, images[:4])
    assert y0.dtype == np.int64 and y0.tolist() == [0, 1, 2, 3]
    x0[...] = -1  # batches are copies, never views of the dataset
    assert images.min() == 0
    dropped = DataLoader((images, labels), batch_size=4, drop_last=True)
    assert len(dropped) == 2 and [len(y) for _, y in map(arrays_of, dropped)] == [4, 4]
    assert len(DataLoader((images, labels), batch_size=20, drop_last=True)) == 0


def test_loader_shuffle_is_seeded_and_resumable(tensor_mod):
    images, labels = small_data(10)

    def epoch(loader):
        return np.concatenate([y for _, y in map(arrays_of, loader)]).tolist()

    a = DataLoader((images, labels), 3, shuffle=True, seed=7)
    b = DataLoader((images, labels), 3, shuffle=True, seed=7)
    first = epoch(a)
    assert sorted(first) == list(range(10)) and first == epoch(b)
    state = a.state_dict()
    second = epoch(a)
    assert second != first  # a new permutation each epoch
    c = DataLoader((images, labels), 3, shuffle=True, seed=123)
    c.load_state_dict(state)
    assert epoch(c) == second
    backend.manual_seed(5)
    d1 = epoch(DataLoader((images, labels), 3, shuffle=True))
    backend.manual_seed(5)
    assert epoch(DataLoader((images, labels), 3, shuffle=True)) == d1


def test_loader_transform_and_dataset_inputs(tensor_mod):
    images = np.random.default_rng(0).random((6, 3, 32, 32), dtype=np.float32)
    labels = np.arange(6)
    calls = []

    def transform(x, rng):
        calls.append(len(x))
        return random_crop_flip(x, rng)

    run1 = [arrays_of(b)[0] for b in DataLoader((images, labels), 4, seed=1, transform=transform)]
    run2 = [arrays_of(b)[0] for b in DataLoader((images, labels), 4, seed=1, transform=transform)]
    assert calls == [4, 2, 4, 2]
    for x1, x2 in zip(run1, run2):
        np.testing.assert_array_equal(x1, x2)

    class Items:  # a dataset known only through len() and [i]
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return np.full((1, 2, 2), i, np.float32), i

    x, y = arrays_of(next(iter(DataLoader(Items(), 5))))
    assert x.shape == (5, 1, 2, 2) and y.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="transform must return"):
        next(iter(DataLoader((images, labels), 4, transform=lambda x, rng: x[:1])))


def test_loader_validates_arguments():
    images, labels = small_data(4)
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="batch_size"):
            DataLoader((images, labels), bad)
    with pytest.raises(ValueError, match="differ in length"):
        DataLoader((images, labels[:3]), 2)
    with pytest.raises(ValueError, match="seed"):
        DataLoader((images, labels), 2, seed=-3)
    with pytest.raises(TypeError, match="transform"):
        DataLoader((images, labels), 2, transform=3)
    with pytest.raises(ValueError, match="pair"):
        DataLoader((images, labels, labels), 2)
    with pytest.raises(ValueError, match="device"):
        DataLoader((images, labels), 2, device="tpu")


@pytest.mark.skipif(not backend.cuda_available(), reason="needs a CUDA device")
def test_loader_cuda(tensor_mod):
    images, labels = small_data(6)
    x, y = next(iter(DataLoader((images, labels), 4, device="cuda", transform=lambda x, rng: x + 1)))
    assert x.device == "cuda" and y.device == "cuda"
    np.testing.assert_array_equal(x.numpy(), images[:4] + 1)


# --- the real datasets ------------------------------------------------------------------------

needs_real_mnist = pytest.mark.skipif(not (REAL_DATA / "mnist").is_dir(), reason=f"no MNIST in {REAL_DATA}")
needs_real_cifar = pytest.mark.skipif(not (REAL_DATA / "cifar10").is_dir(), reason=f"no CIFAR-10 in {REAL_DATA}")


@needs_real_mnist
def test_real_mnist():
    start = time.perf_counter()
    train = MNIST(root=REAL_DATA, train=True, download=False)
    print(f"MNIST training set loaded in {time.perf_counter() - start:.2f} s")
    assert train.images.shape == (60000, 1, 28, 28) and train.images.dtype == np.float32
    assert train.images.min() == 0.0 and train.images.max() == 1.0
    assert train.labels.dtype == np.int64 and train.labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(train.labels).tolist()[:2] == [5923, 6742]
    test = MNIST(root=REAL_DATA, train=False, download=False)
    assert test.images.shape == (10000, 1, 28, 28) and test.labels[:5].tolist() == [7, 2, 1, 0, 4]


@needs_real_cifar
def test_real_cifar10():
    with pytest.warns(UserWarning, match="not the official"):  # the local copy is partial
        test = CIFAR10(root=REAL_DATA, train=False, download=False)
    assert test.images.shape[1:] == (3, 32, 32) and len(test) == len(test.labels)
    assert test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert test.classes == cifar_mod.CLASSES
    train = CIFAR10(root=REAL_DATA, train=True, download=False)
    assert train.images.shape == (50000, 3, 32, 32) and train.images.dtype == np.float32
    assert 0.0 <= train.images.min() and train.images.max() <= 1.0
    assert train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert np.bincount(train.labels).tolist() == [5000] * 10
    np.testing.assert_allclose(train.images[:5000].mean(axis=(0, 2, 3)), cifar_mod.CIFAR10_MEAN, atol=0.02)
