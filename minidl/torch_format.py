"""Reading PyTorch checkpoints (``torch.save`` files) without PyTorch, and without running them.

A ``.pth`` file is a pickle, and a pickle may name any importable callable (``os.system``
included) for the unpickler to call. It is read here by the restricted pickle machine of
:mod:`minidl.restricted_pickle` with the table :data:`ALLOWED_GLOBALS`: constructors for the
tensor rebuild functions of ``torch._utils`` and for ``collections.OrderedDict`` (fresh values
only), immutable markers for the storage types (``torch.FloatStorage`` ...); plain containers,
strings and numbers need no globals. Any other global stops the load before anything is
called. Tensors come back as NumPy arrays (new ones, never views of the file).

Budget (checked before each allocation, every failure one ValueError naming the file): the
pickle's limits of :mod:`minidl.restricted_pickle`; zip members whose declared size exceeds
what the archive can hold (deflate ratio :data:`MAX_ZIP_MEMBER_RATIO`) or what their storage
needs are refused before inflating, and read only up to the declared size; a legacy storage
record's element count is checked against the bytes that remain before it is read; a tensor
may not ask for more elements than its storage holds (zero or overlapping strides); storages
and tensors together get ``ALLOC_PER_FILE_BYTE`` bytes per byte of the file (plus
``ALLOC_SLACK``), at most ``max_bytes``.

Two layouts exist:

* the zip format (``torch.save`` since PyTorch 1.6): ``<name>/data.pkl`` holds the pickle,
  ``<name>/data/<key>`` the raw bytes of each storage, ``<name>/byteorder`` the byte order;
* the legacy format: five pickles one after another - a magic number, the protocol
  version, system information, the object, the list of storage keys - then, for each key in
  that order, an int64 element count and the storage's raw bytes.

In both, a tensor is pickled as ``_rebuild_tensor_v2(storage, offset, size, stride, ...)``
where the storage is a persistent id ``('storage', storage_type, key, location, numel)``;
the tensor is the strided view ``storage[offset + sum_i idx_i * stride_i]``.
"""
import collections
import math
import mmap
import os
import struct
import zipfile
import zlib

import numpy

from .restricted_pickle import Budget, Constructor, Machine, Sentinel, UnsafePickleError, kind

# storage type name -> NumPy dtype (bfloat16 has none: it is widened to float32)
STORAGE_DTYPES = {
    "DoubleStorage": numpy.float64, "FloatStorage": numpy.float32, "HalfStorage": numpy.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": numpy.int64, "IntStorage": numpy.int32,
    "ShortStorage": numpy.int16, "CharStorage": numpy.int8, "ByteStorage": numpy.uint8,
    "BoolStorage": numpy.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c
MAX_NDIM = 32                 # dimensions of one tensor
MAX_DIM = 1 << 48             # one size, and the product of the non-zero sizes of a tensor
MAX_ZIP_MEMBER_RATIO = 1100   # deflate never compresses by more than about 1032:1: a member
#                               declaring more than this many times its compressed size lies
_ZIP_METHODS = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)


class StorageType(Sentinel):
    """Stands in for ``torch.FloatStorage`` and its kin: the element type, immutable (one file
    cannot change how the next one loads)."""

    __slots__ = ("dtype", "itemsize")

    def __init__(self, name):
        super().__init__(f"torch.{name}")
        dtype = STORAGE_DTYPES[name]
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "itemsize", 2 if dtype == "bfloat16" else numpy.dtype(dtype).itemsize)

    def from_bytes(self, raw, byteorder):
        """The storage's elements (``raw``: any buffer) as a new 1-D NumPy array."""
        if self.dtype == "bfloat16":  # the upper half of a float32
            half = numpy.frombuffer(raw, dtype=byteorder + "u2")
            return (half.astype(numpy.uint32) << 16).view(numpy.float32)
        if self.dtype is numpy.bool_:  # any non-zero byte is True, as in PyTorch
            return numpy.frombuffer(raw, dtype=numpy.uint8) != 0
        dtype = numpy.dtype(self.dtype)
        return numpy.frombuffer(raw, dtype=dtype.newbyteorder(byteorder)).astype(dtype)


class _Storage(Sentinel):
    """What a persistent id stands for: the storage's type, key and element count, its
    elements (``array``; None in the legacy format, whose bytes follow the pickle) and the
    legacy ``(offset, numel)`` view of it."""

    __slots__ = ("type", "key", "numel", "view", "array")

    def __init__(self, storage_type, key, numel, view, array):
        super().__init__(f"storage {key}")
        for k, v in zip(self.__slots__, (storage_type, key, numel, view, array)):
            object.__setattr__(self, k, v)

    def elements(self, array):
        return array if self.view is None else array[self.view[0]:self.view[0] + self.view[1]]


class _Deferred(Sentinel):
    """A legacy tensor whose storage bytes come after the pickle: its checked rebuild arguments."""

    __slots__ = ("storage", "offset", "size", "stride")
    __hash__ = None  # stands for an array: never a dict key

    def __init__(self, storage, offset, size, stride):
        super().__init__("a tensor")
        for k, v in zip(self.__slots__, (storage, offset, size, stride)):
            object.__setattr__(self, k, v)


def _check_layout(storage, storage_offset, size, stride):
    """``(offset, size, stride)`` after checking their types and ranges (bounds are checked
    once the storage's elements are known)."""
    if not isinstance(storage, _Storage):
        raise UnsafePickleError(f"tensor: expected a storage, got {kind(storage)}")
    if type(size) is not tuple or type(stride) is not tuple or len(size) != len(stride) or len(size) > MAX_NDIM:
        raise UnsafePickleError(f"tensor: size and stride must be tuples of the same length, at most "
                                f"{MAX_NDIM}; got {kind(size)} and {kind(stride)}")
    numbers = (storage_offset,) + size + stride
    if not all(type(v) is int and 0 <= v <= MAX_DIM for v in numbers):
        raise UnsafePickleError(f"tensor: offset, sizes and strides must be integers in [0, {MAX_DIM}]")
    if math.prod(n for n in size if n) > MAX_DIM:
        raise UnsafePickleError(f"tensor: size {size} has more than {MAX_DIM} elements")
    return storage_offset, size, stride


def _view(elements, offset, size, stride, budget):
    """``elements`` viewed with ``size`` and ``stride`` from ``offset``, copied into a new
    C-contiguous array. Refused: an index outside the storage (it would read foreign memory),
    and more elements than the storage holds (zero or overlapping strides asking for more bytes
    than the file has); the copy is charged to the budget."""
    count = math.prod(size)
    if count == 0:
        return numpy.zeros(size, dtype=elements.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= elements.size:
        raise UnsafePickleError(f"tensor: size {size}, stride {stride} and offset {offset} reach element "
                                f"{last} of a storage of {elements.size}")
    if count > elements.size:
        raise UnsafePickleError(f"tensor: size {size} asks for {count} elements from a storage of "
                                f"{elements.size} (strides {stride})")
    budget.charge(count * elements.itemsize, f"a tensor of size {size}")
    strides = tuple(s * elements.itemsize if n > 1 else 0 for n, s in zip(size, stride))
    view = numpy.lib.stride_tricks.as_strided(elements[offset:], shape=size, strides=strides, writeable=False)
    return numpy.array(view, order="C")  # a copy that owns its memory (0-d stays 0-d)


def _rebuild_tensor(machine, storage, storage_offset, size, stride, *_ignored):
    offset, size, stride = _check_layout(storage, storage_offset, size, stride)
    return _view(storage.elements(storage.array), offset, size, stride, machine.budget)


def _defer_tensor(machine, storage, storage_offset, size, stride, *_ignored):
    return _Deferred(storage, *_check_layout(storage, storage_offset, size, stride))


def _rebuild_parameter(machine, data, requires_grad=False, backward_hooks=None, *_ignored):
    if not isinstance(data, (numpy.ndarray, _Deferred)):
        raise UnsafePickleError(f"parameter: expected a tensor, got {kind(data)}")
    return data


def _ordered_dict(machine, *args):
    if args:
        raise UnsafePickleError("OrderedDict must be built empty (its items follow)")
    return machine.new_container(collections.OrderedDict())


def _table(rebuild):
    tensor = Constructor("torch._utils._rebuild_tensor", rebuild)
    return {
        ("collections", "OrderedDict"): Constructor("collections.OrderedDict", _ordered_dict),
        ("torch._utils", "_rebuild_tensor"): tensor,
        ("torch._utils", "_rebuild_tensor_v2"): tensor,
        ("torch._utils", "_rebuild_parameter"): Constructor("torch._utils._rebuild_parameter", _rebuild_parameter),
        **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
    }


# (module, name) -> what the pickle gets for that global: constructors of fresh values and
# immutable markers (the legacy format's table differs only in deferring the tensors).
ALLOWED_GLOBALS = _table(_rebuild_tensor)
_LEGACY_GLOBALS = _table(_defer_tensor)


def _parse_pid(pid):
    """``(storage type, key, numel, view)`` of ``('storage', type, key, location, numel[, view])``."""
    if not (type(pid) is tuple and len(pid) in (5, 6) and pid[0] == "storage" and isinstance(pid[1], StorageType)
            and type(pid[2]) is str and len(pid[2]) <= 100 and type(pid[4]) is int and pid[4] >= 0):
        raise UnsafePickleError(f"unsupported persistent id {kind(pid)}: expected ('storage', storage type, "
                                "key, location, numel)")
    view = pid[5] if len(pid) == 6 else None
    if view is not None:  # (view key, offset, numel) in elements of the root storage
        if not (type(view) is tuple and len(view) == 3 and all(type(v) is int and v >= 0 for v in view[1:])):
            raise UnsafePickleError(f"bad storage view {kind(view)}")
        if view[1] + view[2] > pid[4]:
            raise UnsafePickleError(f"storage view {view[1]}+{view[2]} outside a storage of {pid[4]} elements")
        view = view[1:]
    return pid[1], pid[2], pid[4], view


def is_torch_file(path):
    """True when ``path`` looks like a ``torch.save`` file (zip with a data.pkl, or a legacy pickle)."""
    with open(path, "rb") as f:
        head = f.read(2)
    if head == b"PK":
        try:
            with zipfile.ZipFile(path) as z:
                return any(n.endswith("data.pkl") for n in z.namelist())
        except zipfile.BadZipFile:
            return False
    return head[:1] == b"\x80"  # a pickle's PROTO opcode; .npz files are zips


def load_torch(path, max_bytes=None):
    """The object saved by ``torch.save`` at ``path`` (usually a state dict) with every tensor
    as a NumPy array. Raises ValueError naming the file for a malformed file, a forbidden global
    or a file over its budget: the limits of :mod:`minidl.restricted_pickle` for the pickle, and
    at most ``ALLOC_PER_FILE_BYTE`` times the file's size plus ``ALLOC_SLACK`` (and at most
    ``max_bytes``) for storages and tensors together, checked before each allocation."""
    budget = Budget.for_file(os.path.getsize(path), max_bytes)
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path, budget)
        return _load_legacy(path, budget)
    except (ValueError, zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, EOFError, OSError) as e:
        raise ValueError(f"load: {path} is not a loadable PyTorch checkpoint: {e}") from None


def _read_member(z, info, archive_size, budget, limit=None):
    """The bytes of zip member ``info``, after checking what its header declares against the
    archive, the compression ratio deflate can reach, ``limit`` and the budget: a zip bomb is
    refused before it is inflated, and the read stops at the declared size."""
    if info.flag_bits & 0x1:
        raise UnsafePickleError(f"member {info.filename} is encrypted")
    if info.compress_type not in _ZIP_METHODS:
        raise UnsafePickleError(f"member {info.filename} uses compression method {info.compress_type}")
    stored = info.compress_type == zipfile.ZIP_STORED
    if info.compress_size > archive_size or (stored and info.file_size != info.compress_size) or \
            info.file_size > MAX_ZIP_MEMBER_RATIO * info.compress_size + 64:
        raise UnsafePickleError(f"member {info.filename} declares {info.file_size} bytes from {info.compress_size} "
                                f"compressed bytes in an archive of {archive_size}")
    if limit is not None and info.file_size > limit:
        raise UnsafePickleError(f"member {info.filename} declares {info.file_size} bytes, more than {limit}")
    budget.charge(info.file_size, f"member {info.filename}")
    with z.open(info) as member:
        data = member.read(info.file_size)
    if len(data) != info.file_size:
        raise UnsafePickleError(f"member {info.filename} is truncated")
    return data


def _load_zip(path, budget):
    archive_size = os.path.getsize(path)
    with zipfile.ZipFile(path) as z:
        infos = {i.filename: i for i in z.infolist()}
        pkl = next((n for n in infos if n.endswith("data.pkl")), None)
        if pkl is None:
            raise UnsafePickleError("no data.pkl in the archive")
        prefix = pkl[:-len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in infos:
            order = _read_member(z, infos[prefix + "byteorder"], archive_size, budget, limit=16)
            if order.strip() not in (b"little", b"big"):
                raise UnsafePickleError(f"byteorder record says {kind(order)}")
            byteorder = "<" if order.strip() == b"little" else ">"
        storages, read = {}, [0]

        def storage(pid):
            storage_type, key, numel, view = _parse_pid(pid)
            if key not in storages:
                info = infos.get(f"{prefix}data/{key}")
                if info is None:
                    raise UnsafePickleError(f"storage {key} has no record in the archive")
                if info.file_size != numel * storage_type.itemsize:
                    raise UnsafePickleError(f"storage {key}: {numel} {storage_type.name} elements need "
                                            f"{numel * storage_type.itemsize} bytes, its record declares "
                                            f"{info.file_size}")
                read[0] += info.compress_size
                if read[0] > archive_size:  # members that overlap each other in the file
                    raise UnsafePickleError(f"storage records add up to more than the archive's {archive_size} bytes")
                raw = _read_member(z, info, archive_size, budget)
                if storage_type.dtype == "bfloat16":
                    budget.charge(2 * len(raw), f"storage {key} widened to float32")
                storages[key] = (storage_type, numel, storage_type.from_bytes(raw, byteorder))
            known_type, known_numel, array = storages[key]
            if (known_type, known_numel) != (storage_type, numel):
                raise UnsafePickleError(f"storage {key} is named with two types or sizes")
            return _Storage(storage_type, key, numel, view, array)

        data = _read_member(z, infos[pkl], archive_size, budget)
        value, _ = Machine(data, ALLOWED_GLOBALS, budget, pkl, persistent_load=storage).load()
        return value


def _load_legacy(path, budget):
    with open(path, "rb") as f:
        # Mapped, not read: the storages are sliced out of the file one at a time.
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    try:
        return _parse_legacy(mapped, budget)
    finally:
        try:
            mapped.close()
        except BufferError:  # a view still held by an error's traceback: closed when collected
            pass


def _parse_legacy(data, budget):
    def header(start, what):
        return Machine(data, {}, Budget(0), f"legacy header ({what})", start=start).load()

    magic, pos = header(0, "magic number")
    if magic != _LEGACY_MAGIC:
        raise UnsafePickleError("not a torch.save file (wrong magic number)")
    _, pos = header(pos, "protocol version")
    sys_info, pos = header(pos, "system information")
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    types = {}

    def storage(pid):
        storage_type, key, numel, view = _parse_pid(pid)
        if types.setdefault(key, (storage_type, numel)) != (storage_type, numel):
            raise UnsafePickleError(f"storage {key} is named with two types or sizes")
        return _Storage(storage_type, key, numel, view, None)

    obj, pos = Machine(data, _LEGACY_GLOBALS, budget, "legacy pickle", start=pos, persistent_load=storage).load()
    keys, pos = header(pos, "storage keys")
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise UnsafePickleError(f"the storage keys must be a list of strings, got {kind(keys)}")
    arrays = {}
    for key in keys:
        if key not in types or key in arrays:
            raise UnsafePickleError(f"storage {key} listed twice or never referenced")
        storage_type, numel = types[key]
        if len(data) - pos < 8:
            raise UnsafePickleError(f"storage {key} is truncated")
        (count,) = struct.unpack(byteorder + "q", data[pos:pos + 8])
        pos += 8
        nbytes = count * storage_type.itemsize
        if count != numel or nbytes > len(data) - pos:  # checked before anything is read
            raise UnsafePickleError(f"storage {key} is truncated or inconsistent: its record claims {count} "
                                    f"elements ({nbytes} bytes), the pickle {numel}, and {len(data) - pos} "
                                    "bytes remain")
        budget.charge(nbytes * (2 if storage_type.dtype == "bfloat16" else 1), f"storage {key}")
        arrays[key] = storage_type.from_bytes(data[pos:pos + nbytes], byteorder)
        pos += nbytes
    missing = sorted(set(types) - set(arrays))
    if missing:
        raise UnsafePickleError(f"storage {missing[0]} is referenced but missing")

    done = {}

    def resolve(o):
        """``o`` with its deferred tensors built; memoised, so a value reached through many
        references is built once (the machine bounds the depth)."""
        if id(o) in done:
            return done[id(o)]
        if isinstance(o, _Deferred):
            s = o.storage
            out = _view(s.elements(arrays[s.key]), o.offset, o.size, o.stride, budget)
        elif isinstance(o, dict):
            out = type(o)((k, resolve(v)) for k, v in o.items())
        elif isinstance(o, (list, tuple)):
            out = type(o)(resolve(v) for v in o)
        else:
            out = o
        done[id(o)] = out
        return out

    return resolve(obj)
