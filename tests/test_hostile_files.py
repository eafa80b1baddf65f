"""Hostile files (issue 31, "Security"): every loader of untrusted bytes (.pth in both
layouts, .npz, CIFAR pickles) refuses, with one ValueError naming the file, a file that asks
for uninitialised memory, changes a module-level object, hangs, or allocates far more than it
holds - and still loads what PyTorch and NumPy really write.

The hostile pickles are written here opcode by opcode (``pickle.MARK`` and friends), so each
is a few hundred bytes at most and says exactly what it does.
"""
import collections
import io
import pickle
import signal
import struct
import time
import tracemalloc
import zipfile
import zlib
from contextlib import contextmanager

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minidl as md
from minidl import restricted_pickle, torch_format
from minidl.data import CIFAR10
from minidl.data import cifar as cifar_mod
from minidl.data.safe_pickle import safe_load

try:
    import torch
except ImportError:
    torch = None


# --- pickle opcodes, by hand -----------------------------------------------------------------------
def text(s):
    raw = s.encode()
    return pickle.BINUNICODE + struct.pack("<I", len(raw)) + raw


def py2str(s):
    raw = s.encode("latin1")
    return pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw


def num(n):
    raw = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw


def tup(*items):
    return pickle.MARK + b"".join(items) + pickle.TUPLE


def glob(module, name):
    return pickle.GLOBAL + f"{module}\n{name}\n".encode()


def call(func, *args):
    return func + tup(*args) + pickle.REDUCE


def dict_of(**items):
    return pickle.EMPTY_DICT + pickle.MARK + b"".join(text(k) + v for k, v in items.items()) + pickle.SETITEMS


def list_of(*items):
    return pickle.MARK + b"".join(items) + pickle.LIST


def stream(body):
    return pickle.PROTO + b"\x02" + body + pickle.STOP


def tensor(numel, size, stride, offset=0, storage="FloatStorage", key="0"):
    """``_rebuild_tensor_v2`` of the storage ``key`` (a persistent id), as torch.save writes it."""
    pid = tup(text("storage"), glob("torch", storage), text(key), text("cpu"), num(numel))
    return call(glob("torch._utils", "_rebuild_tensor_v2"), pid + pickle.BINPERSID, num(offset),
                tup(*map(num, size)), tup(*map(num, stride)), pickle.NEWFALSE,
                call(glob("collections", "OrderedDict")))


def zip_pth(path, pickled, storages=(), compress=False):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as z:
        z.writestr("archive/data.pkl", pickled)
        z.writestr("archive/byteorder", "little")
        for key, raw in storages:
            z.writestr(f"archive/data/{key}", raw)
    return str(path)


def legacy_pth(path, pickled, keys=(), records=b""):
    head = b"".join(pickle.dumps(v, protocol=2) for v in (0x1950a86a20f9469cfc6c, 1001, {"little_endian": True}))
    with open(path, "wb") as f:
        f.write(head + pickled + pickle.dumps(list(keys), protocol=2) + records)
    return str(path)


def record(values, dtype="<f4"):
    values = np.asarray(values, dtype=dtype)
    return struct.pack("<q", values.size) + values.tobytes()


FLOATS = np.arange(4, dtype=np.float32)  # the legitimate file: [0, 1, 2, 3]
LEGIT = stream(dict_of(w=tensor(4, (4,), (1,))))


def legit_zip(path):
    return zip_pth(path, LEGIT, [("0", FLOATS.tobytes())])


def legit_legacy(path):
    return legacy_pth(path, LEGIT, ["0"], record(FLOATS))


def cifar_batch(folder, body):
    """A CIFAR test batch whose pickle is ``body`` (a dict expression)."""
    folder = folder / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test_batch").write_bytes(stream(body))
    return folder / "test_batch"


def images(n):
    """``data``: a pickled uint8 (n, 3072) array, as NumPy writes it at protocol 2."""
    array = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(num(0)),
                 py2str("b"))
    dtype = call(glob("numpy", "dtype"), py2str("u1"), pickle.NEWFALSE, pickle.NEWTRUE)
    dtype += tup(num(3), py2str("|"), pickle.NONE, pickle.NONE, pickle.NONE, num(-1), num(-1), num(0)) + pickle.BUILD
    raw = bytes(n * 3072)
    state = tup(num(1), tup(num(n), num(3072)), dtype, pickle.NEWFALSE,
                pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
    return array + state + pickle.BUILD


@contextmanager
def deadline(seconds):
    """Raise TimeoutError in the main thread after ``seconds`` (a hang becomes a failure)."""
    def expire(signum, frame):
        raise TimeoutError(f"still running after {seconds} s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


# --- uninitialised memory ----------------------------------------------------------------------------
def test_cifar_batch_calling_ndarray_is_refused(tmp_path):
    """260 bytes: ``data = numpy.ndarray((100, 3072), 'u1')`` would be 100 images of this
    process's heap. numpy.ndarray is a marker that cannot be called."""
    body = dict_of(data=call(glob("numpy", "ndarray"), tup(num(100), num(3072)), text("u1")),
                   labels=list_of(*[pickle.BININT1 + b"\0"] * 100))
    path = cifar_batch(tmp_path, body)
    assert path.stat().st_size < 300
    with pytest.raises(ValueError, match=r"test_batch.*REDUCE may call only an allowed constructor, not numpy\.ndarray"):
        CIFAR10(root=tmp_path, train=False, download=False)


def test_forty_byte_pickle_does_not_allocate(tmp_path):
    """``numpy.ndarray((1_500_000_000,), 'u1')`` in 40 bytes: refused, nothing allocated."""
    evil = stream(call(glob("numpy", "ndarray"), tup(num(1_500_000_000)), text("u1")))
    assert len(evil) <= 60
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match="numpy.ndarray"):
            safe_load(evil)
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()


def test_array_bytes_must_match_the_shape(tmp_path):
    """``_reconstruct`` then BUILD with fewer bytes than the shape needs (NumPy would refuse
    too; here it is refused before anything is allocated), and an array used unfilled."""
    good = safe_load(stream(images(2)))
    assert good.shape == (2, 3072) and good.dtype == np.uint8 and not good.any() and good.flags.writeable
    lying = images(2).replace(tup(num(2), num(3072)), tup(num(2000), num(3072)))
    with pytest.raises(ValueError, match="needs 6144000 bytes, the pickle holds 6144"):
        safe_load(stream(lying))
    unfilled = call(glob("numpy.core.multiarray", "_reconstruct"), glob("numpy", "ndarray"), tup(num(0)), py2str("b"))
    with pytest.raises(ValueError, match="used before its data"):
        safe_load(stream(unfilled))


# --- no poisoned loader state -----------------------------------------------------------------------
@pytest.mark.parametrize("writer", [zip_pth, legacy_pth])
def test_build_on_a_storage_type_changes_nothing(tmp_path, writer):
    """BUILD on ``torch.FloatStorage`` with state ``{'dtype': 'i4'}`` edited the shared storage
    type: a legitimate file loaded afterwards came back as int32 bit patterns."""
    hostile = stream(glob("torch", "FloatStorage") + dict_of(dtype=text("i4")) + pickle.BUILD)
    with pytest.raises(ValueError, match=r"hostile\.pth.*BUILD on torch\.FloatStorage is not allowed"):
        md.load(writer(tmp_path / "hostile.pth", hostile))
    for legit in (legit_zip(tmp_path / "legit.pth"), legit_legacy(tmp_path / "legit_legacy.pth")):
        w = md.load(legit)["w"]
        assert w.dtype == np.float32
        np.testing.assert_array_equal(w, [0.0, 1.0, 2.0, 3.0])
    assert torch_format.ALLOWED_GLOBALS[("torch", "FloatStorage")].dtype is np.float32


def test_module_level_markers_are_immutable():
    float_storage = torch_format.ALLOWED_GLOBALS[("torch", "FloatStorage")]
    with pytest.raises(AttributeError):
        float_storage.dtype = np.int32
    with pytest.raises(AttributeError):
        float_storage.__dict__  # noqa: B018 - slots only: no attribute dict to fill
    assert float_storage.dtype is np.float32


@pytest.mark.parametrize("opcodes", [
    pickle.MARK + text("k") + text("v") + pickle.SETITEMS,    # SETITEMS on a global
    text("x") + pickle.APPEND,                                  # APPEND on a global
    pickle.NONE + pickle.BUILD,                                 # BUILD on a global, even a no-op
])
def test_no_opcode_acts_on_a_global(tmp_path, opcodes):
    hostile = stream(glob("torch", "FloatStorage") + opcodes)
    with pytest.raises(ValueError, match="not allowed"):
        md.load(zip_pth(tmp_path / "h.pth", hostile))
    with pytest.raises(ValueError, match="not allowed"):
        safe_load(stream(glob("numpy", "ndarray") + opcodes))


def test_nested_containers_are_frozen(tmp_path):
    """A list that is already inside another value cannot grow (so no cycles, and sizes are
    final when counted): ``a = []; b = [a]; a.append(b)`` is refused."""
    cycle = (pickle.EMPTY_LIST + pickle.BINPUT + b"\x00" + pickle.EMPTY_LIST + pickle.BINGET + b"\x00"
             + pickle.APPEND + pickle.APPEND)
    with pytest.raises(ValueError, match="already inside another value"):
        safe_load(stream(cycle))
    memo = pickle.BINPUT + b"\0"
    for itself in (pickle.EMPTY_LIST + memo + pickle.BINGET + b"\0" + pickle.APPEND,            # l = [l]
                   pickle.EMPTY_DICT + memo + num(1) + pickle.BINGET + b"\0" + pickle.SETITEM):  # d = {1: d}
        with pytest.raises(ValueError, match="cannot contain itself"):
            safe_load(stream(itself))


@pytest.mark.parametrize("key", [num(1 << 61), pickle.BINFLOAT + struct.pack(">d", 2.0 ** 70), tup(num(1), num(2))])
def test_dict_keys_whose_hashes_could_collide_are_refused(key):
    """Big ints, floats and tuples have hashes a file can make collide (quadratic inserts)."""
    with pytest.raises(ValueError, match="dict keys and set items must be strings, bytes or small integers"):
        safe_load(stream(pickle.EMPTY_DICT + key + num(0) + pickle.SETITEM))
    assert safe_load(stream(pickle.EMPTY_DICT + num((1 << 61) - 1) + num(0) + pickle.SETITEM)) == {(1 << 61) - 1: 0}


# --- tiny files that hang or allocate gigabytes -----------------------------------------------------
def fan_out(levels, leaf):
    """``x0 = leaf; x(i+1) = [x(i), x(i)]``: ``levels`` * 9 bytes, 2**levels leaves as a tree."""
    body = leaf + pickle.BINPUT + b"\x00"
    for i in range(levels):
        body += pickle.EMPTY_LIST + pickle.MARK + (pickle.BINGET + bytes([i])) * 2 + pickle.APPENDS
        body += pickle.BINPUT + bytes([i + 1])
    return body


@pytest.mark.parametrize("writer", ["legacy", "zip"])
def test_shared_references_that_fan_out_do_not_hang(tmp_path, writer):
    """372 bytes whose references fan out to 2**40 tensors: the walk of the legacy loader
    visited every one. The tree size is counted while the pickle is read, and refused."""
    body = fan_out(40, tensor(4, (4,), (1,)))
    if writer == "legacy":
        path = legacy_pth(tmp_path / "fan.pth", stream(body), ["0"], record(FLOATS))
    else:
        path = zip_pth(tmp_path / "fan.pth", stream(body), [("0", FLOATS.tobytes())])
    with deadline(30), pytest.raises(ValueError, match=r"fan\.pth.*counted as a tree"):
        md.load(path)
    # below the limit the shared tensor is built once and shared, not copied 2**12 times
    small = legacy_pth(tmp_path / "small.pth", stream(fan_out(12, tensor(4, (4,), (1,)))), ["0"], record(FLOATS))
    got = md.load(small)
    assert got[0] is got[1] and got[0][0] is got[1][0]


def test_cifar_labels_that_fan_out_are_refused(tmp_path):
    cifar_batch(tmp_path, dict_of(data=images(1), labels=fan_out(40, num(0))))
    with deadline(30), pytest.raises(ValueError, match="test_batch.*counted as a tree"):
        CIFAR10(root=tmp_path, train=False, download=False)


def test_zero_strides_asking_for_gigabytes(tmp_path):
    """One float viewed as (65536, 65536) with strides (0, 0): 16 GiB from a 512-byte file."""
    path = zip_pth(tmp_path / "zero.pth", stream(dict_of(w=tensor(1, (65536, 65536), (0, 0)))),
                   [("0", np.ones(1, np.float32).tobytes())])
    with pytest.raises(ValueError, match=r"zero\.pth.*asks for 4294967296 elements from a storage of 1"):
        md.load(path)
    # a view of a storage within its size is fine (a legitimate broadcast is refused only
    # when it needs more elements than the storage holds)
    path = zip_pth(tmp_path / "ok.pth", stream(dict_of(w=tensor(4, (2, 2), (0, 1)))), [("0", FLOATS.tobytes())])
    np.testing.assert_array_equal(md.load(path)["w"], [[0, 1], [0, 1]])


def test_zip_bomb_is_not_inflated(tmp_path):
    """A storage member declaring 64 MiB of zeros, deflated to 64 KiB: refused from its
    declared size (against the file's budget) before a byte is inflated."""
    numel = 1 << 24
    path = tmp_path / "bomb.pth"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("archive/data.pkl", stream(dict_of(w=tensor(numel, (numel,), (1,)))))
        with z.open("archive/data/0", "w") as member:
            for _ in range(numel * 4 >> 20):
                member.write(bytes(1 << 20))
    assert path.stat().st_size < 1 << 17
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"bomb\.pth.*archive/data/0 needs 67108864 bytes, more than"):
            md.load(str(path))
        assert tracemalloc.get_traced_memory()[1] < 8 << 20
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("numel, error", [(1 << 40, "claims 1099511627776 elements"),
                                          (1 << 62, "claims 4611686018427387904 elements")])
def test_legacy_record_claiming_huge_counts(tmp_path, numel, error):
    """The storage record's element count is checked against the bytes that remain before
    anything is read (2**40 elements: no 4 TiB read; 2**62: ValueError, not OverflowError)."""
    body = stream(dict_of(w=tensor(numel, (4,), (1,))))
    path = legacy_pth(tmp_path / "huge.pth", body, ["0"], struct.pack("<q", numel) + FLOATS.tobytes())
    with pytest.raises(ValueError, match=rf"huge\.pth.*{error}"):
        md.load(path)


def test_terabyte_bytes_field(tmp_path):
    """BINBYTES8 claiming 1 TiB: ValueError (the bytes are not there), not MemoryError."""
    body = pickle.PROTO + b"\x04" + pickle.BINBYTES8 + struct.pack("<Q", 1 << 40) + b"abc"
    for path in (legacy_pth(tmp_path / "tib.pth", body), zip_pth(tmp_path / "tib_zip.pth", body)):
        with pytest.raises(ValueError, match=r"tib.*claims 1099511627776 bytes but only \d+ remain"):
            md.load(path)
    with pytest.raises(ValueError, match="claims 1099511627776 bytes"):
        safe_load(body)


def test_deep_nesting(tmp_path):
    """100,000 nested lists: ValueError at the depth limit, not RecursionError."""
    deep = pickle.PROTO + b"\x02" + pickle.EMPTY_LIST * 100_000 + pickle.APPEND * 99_999 + pickle.STOP
    with pytest.raises(ValueError, match=r"deep\.pth.*nested more than 100 deep"):
        md.load(legacy_pth(tmp_path / "deep.pth", deep))
    with pytest.raises(ValueError, match="nested more than 100 deep"):
        md.load(zip_pth(tmp_path / "deep_zip.pth", deep))
    deep_tuple = pickle.PROTO + b"\x02" + pickle.NONE + pickle.TUPLE1 * 100_000 + pickle.STOP
    with pytest.raises(ValueError, match="nested more than 100 deep"):
        safe_load(deep_tuple)


def test_npz_with_deep_json_and_clashing_keys(tmp_path):
    from minidl import serialization
    path = tmp_path / "deep.npz"
    np.savez(path, **{serialization._JSON_KEY: np.frombuffer(b"[" * 100_000 + b"]" * 100_000, dtype=np.uint8)})
    with pytest.raises(ValueError, match=r"deep\.npz.*not a valid"):
        md.load(path)
    np.savez(path, **{serialization._JSON_KEY: np.frombuffer(b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}",
                                                              dtype=np.uint8)})
    with pytest.raises(ValueError, match="nested more than 100 deep"):
        md.load(path)
    np.savez(path, **{"a": np.ones(2), "a/b": np.ones(2)})
    with pytest.raises(ValueError, match="inside a value that is not a dict"):
        md.load(path)


@pytest.mark.parametrize("labels, what", [(list_of(num(1 << 70)), "item 0 is 1180591620717411303424"),
                                          (list_of(text("cat")), "'labels' must be integers, item 0 is 'cat'"),
                                          (text("0123"), "'labels' must be a list of integers")])
def test_cifar_bad_labels_name_the_file_and_field(tmp_path, labels, what):
    cifar_batch(tmp_path, dict_of(data=images(1), labels=labels))
    with pytest.raises(ValueError, match=r"test_batch: .*") as err:
        CIFAR10(root=tmp_path, train=False, download=False)
    assert what in str(err.value) and "labels" in str(err.value)


def test_cifar_pickle_errors_are_value_errors(tmp_path):
    """Truncated and over-budget batches: CIFARFormatError (a ValueError) naming the file."""
    path = cifar_batch(tmp_path, dict_of(data=images(1), labels=list_of(num(0))))
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(cifar_mod.CIFARFormatError, match="test_batch, byte"):
        CIFAR10(root=tmp_path, train=False, download=False)


# --- legitimate files still load --------------------------------------------------------------------
@pytest.mark.skipif(torch is None, reason="torch is not installed")
@pytest.mark.parametrize("zip_format", [True, False])
def test_torch_save_round_trip(tmp_path, zip_format):
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4), torch.nn.Linear(4, 2))
    state = model.state_dict()
    path = tmp_path / "m.pth"
    torch.save(state, path, _use_new_zipfile_serialization=zip_format)
    got = md.load(path)
    assert isinstance(got, collections.OrderedDict) and list(got) == list(state)
    for k, v in state.items():
        assert got[k].dtype == v.numpy().dtype, k
        np.testing.assert_array_equal(got[k], v.numpy())


def test_numpy_pickles_at_every_protocol(tmp_path):
    """What NumPy writes (``_reconstruct`` + BUILD up to protocol 4, ``_frombuffer`` at 5),
    big-endian and Fortran order included, loads exactly."""
    arrays = {"u8": np.arange(12, dtype=np.uint8).reshape(3, 4), "be": np.arange(5, dtype=">i4"),
              "f": np.asfortranarray(np.arange(6.0).reshape(2, 3)), "empty": np.zeros((0, 3072), np.uint8)}
    for protocol in range(0, 6):
        got = safe_load(pickle.dumps(arrays, protocol=protocol), encoding="latin1")
        for k, v in arrays.items():
            assert got[k].dtype == v.dtype and got[k].shape == v.shape, (protocol, k)
            np.testing.assert_array_equal(got[k], v)


# --- fuzz: random opcode streams over the allowed globals --------------------------------------------
_GLOBALS = sorted(set(torch_format.ALLOWED_GLOBALS) | {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.numeric", "_frombuffer"), ("numpy", "ndarray"),
    ("numpy", "dtype"), ("_codecs", "encode"), ("os", "system")})
_TOKENS = (
    [glob(m, n) for m, n in _GLOBALS]
    + [getattr(pickle, name) for name in (
        "MARK", "STOP", "POP", "POP_MARK", "DUP", "NONE", "NEWTRUE", "NEWFALSE", "EMPTY_LIST", "LIST",
        "APPEND", "APPENDS", "EMPTY_TUPLE", "TUPLE", "TUPLE1", "TUPLE2", "TUPLE3", "EMPTY_DICT", "DICT",
        "SETITEM", "SETITEMS", "EMPTY_SET", "ADDITEMS", "FROZENSET", "REDUCE", "BUILD", "BINPERSID",
        "MEMOIZE", "STACK_GLOBAL", "NEWOBJ", "INST")]
    + [pickle.BINPUT + bytes([k]) for k in range(3)] + [pickle.BINGET + bytes([k]) for k in range(3)]
    + [num(n) for n in (0, 1, 3, 4, 3072, -1, 1 << 40, 1 << 62, 1 << 70)]
    + [text(s) for s in ("storage", "cpu", "0", "data", "labels", "u1", "i4", "latin1", "b", "C", "<",
                         "numpy", "dtype", "torch")]
    + [py2str("|"), pickle.SHORT_BINBYTES + b"\x10" + FLOATS.tobytes(),
       pickle.BINBYTES8 + struct.pack("<Q", 1 << 40), pickle.FRAME + struct.pack("<Q", 1 << 50),
       pickle.BINFLOAT + struct.pack(">d", float("nan")), tup(num(4)), tup(num(1), num(3072)),
       tensor(4, (4,), (1,)), tensor(4, (2, 2), (0, 0)), images(1)]
)


def _bounded(load, *args):
    """``load(*args)``: a value or a ValueError, within a time and a memory budget."""
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with deadline(20):
            load(*args)
    except ValueError:
        pass
    finally:
        elapsed = time.perf_counter() - start
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    # generous bounds (a shared, loaded machine): a hang or a gigabyte is what they catch
    assert elapsed < 5, f"took {elapsed:.1f} s"
    assert peak < 256 << 20, f"peak {peak >> 20} MiB"


def _dict_expr(pairs):
    return pickle.EMPTY_DICT + pickle.MARK + b"".join(k + v for k, v in pairs) + pickle.SETITEMS


# Well-formed expressions (calls of the allowed globals with random arguments, containers,
# memo references, BUILD, persistent ids) reach the constructors' checks; random tokens
# spliced in reach the machine's.
_EXPRESSIONS = st.recursive(
    st.sampled_from(_TOKENS[:len(_GLOBALS)] + [t for t in _TOKENS if t[:1] in b"\x8aX\x8e\x95GUCN\x88\x89"]
                    + [pickle.BINGET + bytes([k]) for k in range(3)]
                    + [tensor(4, (4,), (1,)), tensor(4, (2, 2), (0, 0)), images(1), tup(num(4)),
                       tup(num(1), num(3072))]),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4).map(lambda xs: list_of(*xs)),
        st.lists(inner, max_size=4).map(lambda xs: tup(*xs)),
        st.lists(st.tuples(inner, inner), max_size=3).map(_dict_expr),
        st.tuples(st.sampled_from(_GLOBALS), st.lists(inner, max_size=6)).map(
            lambda g: call(glob(*g[0]), *g[1])),
        st.tuples(inner, inner).map(lambda ab: ab[0] + ab[1] + pickle.BUILD),
        st.tuples(inner, st.integers(0, 2)).map(lambda ak: ak[0] + pickle.BINPUT + bytes([ak[1]])),
        inner.map(lambda a: a + pickle.BINPERSID),
    ),
    max_leaves=12)


@st.composite
def _streams(draw):
    body = draw(_EXPRESSIONS)
    for _ in range(draw(st.integers(0, 3))):  # splice random tokens in
        at = draw(st.integers(0, len(body)))
        body = body[:at] + draw(st.sampled_from(_TOKENS)) + body[at:]
    return pickle.PROTO + b"\x02" + body + (pickle.STOP if draw(st.booleans()) else b"")


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                     HealthCheck.data_too_large])
@given(_streams())
def test_fuzz_opcode_streams(tmp_path_factory, body):
    """``md.load`` (zip and legacy .pth, the stream as the object and as the storage-key list)
    and the CIFAR batch loader: a value or a ValueError, within a time and memory budget."""
    folder = tmp_path_factory.mktemp("fuzz")
    _bounded(md.load, zip_pth(folder / "z.pth", body, [("0", FLOATS.tobytes())]))
    _bounded(md.load, legacy_pth(folder / "l.pth", body, ["0"], record(FLOATS)))
    _bounded(md.load, legacy_pth(folder / "k.pth", stream(dict_of(w=tensor(4, (4,), (1,)))), [], body))
    (folder / "cifar-10-batches-py").mkdir()
    (folder / "cifar-10-batches-py" / "test_batch").write_bytes(body)
    _bounded(cifar_mod.load_batch, folder / "cifar-10-batches-py" / "test_batch")
    _bounded(safe_load, body)


def test_budget_constants_are_documented():
    """The limits named in NOTES/README exist with the values stated there."""
    assert restricted_pickle.MAX_DEPTH == 100
    assert restricted_pickle.MAX_TREE_NODES == 1 << 22
    assert restricted_pickle.MAX_VALUES == 1 << 21
    assert restricted_pickle.ALLOC_PER_FILE_BYTE == 8


# --- IDX (MNIST) -----------------------------------------------------------------------------------
def _gz_idx(path, shape, payload):
    import gzip
    header = (2049 if len(shape) == 1 else 2051).to_bytes(4, "big") + b"".join(n.to_bytes(4, "big") for n in shape)
    path.write_bytes(gzip.compress(header + payload, compresslevel=1))
    return path


@pytest.mark.parametrize("claimed, error", [((1 << 31,), "more than the limit of 1073741824"),
                                            ((900 << 20,), "truncated")])
def test_idx_header_claims_are_not_allocated(tmp_path, claimed, error):
    """A 2 MB .gz whose header claims 2 GiB (within deflate's ratio of the file) is refused by
    the limit; one claiming 900 MiB is read in chunks and found short, without allocating the claim."""
    from minidl.data.idx import read_idx
    path = _gz_idx(tmp_path / "x-idx1-ubyte.gz", claimed, np.random.default_rng(0).bytes(2 << 20))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=rf"x-idx1-ubyte\.gz.*{error}"):
            read_idx(path)
        assert tracemalloc.get_traced_memory()[1] < 64 << 20
    finally:
        tracemalloc.stop()


def test_idx_with_too_many_dimensions(tmp_path):
    from minidl.data.idx import parse_idx
    data = bytes([0, 0, 8, 200]) + bytes(4 * 200)  # 200 dimensions, all of size 0
    with pytest.raises(ValueError, match="many.idx: 200 dimensions, more than the limit of 32"):
        parse_idx(data, "many.idx")
