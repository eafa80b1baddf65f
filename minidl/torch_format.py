"""Reading PyTorch checkpoints (``torch.save`` files) without PyTorch, and without running them.

A ``.pth`` file is a pickle, and a pickle may name any importable callable (``os.system``
included) for the unpickler to call. :class:`TorchUnpickler` resolves only the globals a
saved state dict needs: the tensor rebuild functions of ``torch._utils``, the storage type
names (``torch.FloatStorage`` ...), ``collections.OrderedDict``; plain containers, strings
and numbers need no globals. Any other global stops the load before anything is called.
Tensors come back as NumPy arrays.

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
import io
import pickle
import struct
import zipfile

import numpy

# storage type name -> NumPy dtype (bfloat16 has none: it is widened to float32)
STORAGE_DTYPES = {
    "DoubleStorage": numpy.float64, "FloatStorage": numpy.float32, "HalfStorage": numpy.float16,
    "BFloat16Storage": "bfloat16", "LongStorage": numpy.int64, "IntStorage": numpy.int32,
    "ShortStorage": numpy.int16, "CharStorage": numpy.int8, "ByteStorage": numpy.uint8,
    "BoolStorage": numpy.bool_,
}
_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c


class StorageType:
    """Stands in for ``torch.FloatStorage`` and its kin: just the element type."""

    def __init__(self, name):
        self.name = name
        self.dtype = STORAGE_DTYPES[name]

    @property
    def itemsize(self):
        return 2 if self.dtype == "bfloat16" else numpy.dtype(self.dtype).itemsize

    def from_bytes(self, raw, byteorder):
        """The storage's elements as a 1-D NumPy array (a copy)."""
        if self.dtype == "bfloat16":  # the upper half of a float32
            half = numpy.frombuffer(raw, dtype=byteorder + "u2")
            return (half.astype(numpy.uint32) << 16).view(numpy.float32)
        dtype = numpy.dtype(self.dtype).newbyteorder(byteorder) if numpy.dtype(self.dtype).itemsize > 1 \
            else numpy.dtype(self.dtype)
        return numpy.frombuffer(raw, dtype=dtype).astype(numpy.dtype(self.dtype).newbyteorder("="))


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    """``storage`` viewed with ``size`` and ``stride`` from ``storage_offset`` (in elements),
    copied into a new C-contiguous array. Every index is bounds-checked first: a strided view
    with made-up numbers would read memory outside the storage."""
    if not isinstance(storage, numpy.ndarray):
        raise pickle.UnpicklingError(f"tensor: expected a storage, got {type(storage).__name__}")
    size, stride = tuple(size), tuple(stride)
    numbers = (storage_offset,) + size + stride
    if len(size) != len(stride) or not all(isinstance(v, int) and v >= 0 for v in numbers):
        raise pickle.UnpicklingError(f"tensor: bad layout (offset {storage_offset}, size {size}, stride {stride})")
    count = 1
    for n in size:
        count *= n
    if count:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= storage.size:
            raise pickle.UnpicklingError(f"tensor: size {size}, stride {stride} and offset {storage_offset} "
                                         f"reach element {last} of a storage of {storage.size}")
    else:
        return numpy.zeros(size, dtype=storage.dtype)
    step = storage.itemsize
    view = numpy.lib.stride_tricks.as_strided(storage[storage_offset:], shape=size,
                                              strides=tuple(s * step for s in stride), writeable=False)
    return numpy.array(view, order="C")  # a copy that owns its memory (0-d stays 0-d)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None, *_ignored):
    return data


# (module, name) -> what the unpickler gets for that global
ALLOWED_GLOBALS = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    **{("torch", name): StorageType(name) for name in STORAGE_DTYPES},
}


class TorchUnpickler(pickle.Unpickler):
    """Knows :data:`ALLOWED_GLOBALS` only. ``storage(key, storage_type, numel, view)`` returns
    what stands for the storage named by a persistent id; ``rebuild`` replaces the tensor
    rebuild functions (the legacy loader defers them until the storages are read)."""

    def __init__(self, file, storage, rebuild=None):
        super().__init__(file, encoding="utf-8")
        self.storage = storage
        self.allowed = dict(ALLOWED_GLOBALS)
        if rebuild is not None:
            self.allowed[("torch._utils", "_rebuild_tensor")] = rebuild
            self.allowed[("torch._utils", "_rebuild_tensor_v2")] = rebuild

    def find_class(self, module, name):
        try:
            return self.allowed[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} in a PyTorch checkpoint: only tensors, storages, "
                "OrderedDict and plain values may be loaded") from None

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"
                and isinstance(pid[1], StorageType)):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r:.80} in a PyTorch checkpoint")
        view = pid[5] if len(pid) > 5 else None
        if view is not None and not (isinstance(view, tuple) and len(view) == 3
                                     and all(isinstance(v, int) and v >= 0 for v in view[1:])):
            raise pickle.UnpicklingError(f"bad storage view {view!r:.80}")
        return self.storage(str(pid[2]), pid[1], pid[4], view)


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


def load_torch(path):
    """The object saved by ``torch.save`` at ``path`` (usually a state dict) with every tensor
    as a NumPy array. Raises ValueError for a malformed file or a forbidden global."""
    try:
        if zipfile.is_zipfile(path):
            return _load_zip(path)
        with open(path, "rb") as f:
            return _load_legacy(f)
    except (pickle.UnpicklingError, EOFError, struct.error, KeyError, zipfile.BadZipFile,
            ValueError, TypeError, IndexError, AttributeError) as e:
        raise ValueError(f"load: {path} is not a loadable PyTorch checkpoint: {e}") from None


def _load_zip(path):
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
        pkl = next(n for n in names if n.endswith("data.pkl"))
        prefix = pkl[:-len("data.pkl")]
        byteorder = "<"
        if prefix + "byteorder" in names:
            order = z.read(prefix + "byteorder").decode().strip()
            if order not in ("little", "big"):
                raise ValueError(f"byteorder record says {order!r}")
            byteorder = "<" if order == "little" else ">"
        cache = {}

        def storage(key, storage_type, numel, view):
            if key not in cache:
                raw = z.read(f"{prefix}data/{key}")
                if len(raw) % storage_type.itemsize:
                    raise ValueError(f"storage {key}: {len(raw)} bytes is not a whole number of "
                                     f"{storage_type.name} elements")
                cache[key] = storage_type.from_bytes(raw, byteorder)
            data = cache[key]
            return data if view is None else data[view[1]:view[1] + view[2]]

        return TorchUnpickler(io.BytesIO(z.read(pkl)), storage).load()


class _NoGlobals(pickle.Unpickler):
    """For the legacy header pickles, which hold only numbers and dicts."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"forbidden global {module}.{name} in a PyTorch checkpoint header")

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed in a PyTorch checkpoint header")


class _Deferred:
    """A legacy tensor whose storage bytes come after the pickle: its rebuild arguments."""

    def __init__(self, storage, offset, size, stride):
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride


def _load_legacy(f):
    if _NoGlobals(f).load() != _LEGACY_MAGIC:
        raise ValueError("not a torch.save file (wrong magic number)")
    _NoGlobals(f).load()  # protocol version
    sys_info = _NoGlobals(f).load()
    byteorder = "<" if not isinstance(sys_info, dict) or sys_info.get("little_endian", True) else ">"
    types = {}

    def storage(key, storage_type, numel, view):
        types[key] = storage_type
        return (key, view)

    obj = TorchUnpickler(f, storage, rebuild=lambda s, o, size, stride, *_: _Deferred(s, o, size, stride)).load()
    arrays = {}
    for key in _NoGlobals(f).load():
        key = str(key)
        if key not in types:
            raise ValueError(f"storage {key} listed but never referenced")
        head = f.read(8)
        if len(head) != 8:
            raise ValueError(f"storage {key} is truncated")
        (numel,) = struct.unpack(byteorder + "q", head)
        nbytes = numel * types[key].itemsize
        raw = f.read(nbytes)
        if numel < 0 or len(raw) != nbytes:
            raise ValueError(f"storage {key} is truncated")
        arrays[key] = types[key].from_bytes(raw, byteorder)

    def resolve(o):
        if isinstance(o, _Deferred):
            key, view = o.storage
            if key not in arrays:
                raise ValueError(f"storage {key} is referenced but missing")
            data = arrays[key]
            if view is not None:  # (view key, offset, numel) in elements of the root storage
                data = data[view[1]:view[1] + view[2]]
            return _rebuild_tensor(data, o.offset, o.size, o.stride)
        if isinstance(o, dict):
            out = collections.OrderedDict() if isinstance(o, collections.OrderedDict) else {}
            for k, v in o.items():
                out[k] = resolve(v)
            return out
        if isinstance(o, (list, tuple)):
            return type(o)(resolve(v) for v in o)
        return o

    return resolve(obj)
