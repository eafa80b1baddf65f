"""Loading the CIFAR-10 pickles without letting a pickle run code or allocate what it likes.

A pickle names callables (``module.name`` globals) that ``pickle.load`` imports and calls,
so a tampered file could run ``os.system``. Batches are read by the restricted pickle machine
of :mod:`minidl.restricted_pickle`, whose table here (:data:`ALLOWED_GLOBALS`) holds only what
a pickled NumPy array needs, as constructors that build fresh values from bytes in the file:

* ``numpy.ndarray`` is an immutable marker, never the class: it cannot be called, so no file
  can ask for an array of a size it names (uninitialised memory) without supplying its bytes;
* ``_reconstruct(ndarray, (0,), ...)`` gives a fresh per-load placeholder that only the
  array's BUILD fills, from a bytes value of exactly ``prod(shape) * itemsize`` bytes;
* ``numpy.dtype`` gives a fresh per-load placeholder for a plain numeric dtype (its BUILD sets
  the byte order), never NumPy's shared dtype objects;
* ``_frombuffer`` (protocol 5) builds an array from a bytes value of exactly its size;
* ``_codecs.encode(text, 'latin1')`` and ``bytes()`` (no arguments) are how Python 3 pickles
  ``bytes`` below protocol 3.

Sizes: a file is read whole (at most :data:`~minidl.restricted_pickle.MAX_PICKLE_BYTES`) and
every length, count and nesting depth is checked against the data that remain and the limits
of :mod:`minidl.restricted_pickle` before anything is allocated. Every failure is an
:class:`~minidl.restricted_pickle.UnsafePickleError` (a ValueError).
"""
import math
import os

import numpy as np

from ..restricted_pickle import (MAX_PICKLE_BYTES, Budget, Constructor, Machine, Pending, Sentinel,
                                 UnsafePickleError, kind)

MAX_NDIM = 32  # dimensions of one array (NumPy allows 64; CIFAR needs 2)

NDARRAY = Sentinel("numpy.ndarray")


class _PendingDtype(Pending):
    """``numpy.dtype(spec, align, copy)`` as a pickle calls it, before its BUILD."""

    def __init__(self, dtype):
        self.dtype = dtype

    def build(self, machine, state):
        if type(state) is not tuple or len(state) not in (8, 9) or any(v is not None for v in state[2:5]):
            raise UnsafePickleError(f"dtype state must describe a plain numeric dtype, got {kind(state)}")
        order = state[1].decode("latin1") if isinstance(state[1], bytes) else state[1]
        if order not in ("<", ">", "|", "="):
            raise UnsafePickleError(f"dtype byte order {kind(state[1])}")
        if order in "<>":
            self.dtype = self.dtype.newbyteorder(order)

    def finish(self):
        return self.dtype


def _dtype(machine, spec, align=False, copy=True):
    if isinstance(spec, bytes):
        spec = spec.decode("latin1")
    if type(spec) is not str or len(spec) > 8:
        raise UnsafePickleError(f"dtype name must be a short string, got {kind(spec)}")
    try:
        dtype = np.dtype(spec)
    except TypeError:
        raise UnsafePickleError(f"unknown dtype {spec!r}") from None
    if dtype.kind not in "biufc" or dtype.fields is not None or dtype.subdtype is not None:
        raise UnsafePickleError(f"dtype {spec!r} is not a plain numeric dtype")
    return _PendingDtype(dtype)


def _check_layout(shape, dtype, raw, machine):
    """The array of ``shape`` and ``dtype`` that ``raw`` holds, after checking that ``raw`` has
    exactly its bytes (Python ints: no overflow) and charging them to the budget."""
    if type(shape) is not tuple or len(shape) > MAX_NDIM or \
            not all(type(n) is int and n >= 0 for n in shape):
        raise UnsafePickleError(f"array shape must be a tuple of at most {MAX_NDIM} sizes >= 0, got {kind(shape)}")
    if not isinstance(dtype, np.dtype):
        raise UnsafePickleError(f"array dtype must be a numpy.dtype, got {kind(dtype)}")
    if type(raw) not in (bytes, bytearray):
        raise UnsafePickleError(f"array data must be bytes, got {kind(raw)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes != len(raw):
        raise UnsafePickleError(f"array of shape {shape} and dtype {dtype} needs {nbytes} bytes, "
                                f"the pickle holds {len(raw)}")
    machine.budget.charge(nbytes, f"an array of shape {shape}")
    return np.frombuffer(raw, dtype=dtype)


class _PendingArray(Pending):
    """``_reconstruct(ndarray, (0,), ...)``: an array that its BUILD fills from bytes in the file."""

    array = None

    def build(self, machine, state):
        if type(state) is not tuple or len(state) not in (4, 5):
            raise UnsafePickleError(f"array state must be a tuple of 4 or 5 items, got {kind(state)}")
        shape, dtype, fortran, raw = state[-4:]
        if isinstance(raw, str) and machine.encoding != "bytes":  # Python 2 str read as text
            raw = raw.encode("latin1")
        flat = _check_layout(shape, dtype, raw, machine)
        order = "F" if fortran else "C"
        self.array = flat.reshape(shape, order=order).copy(order=order)

    def finish(self):
        if self.array is None:
            raise UnsafePickleError("an array is used before its data was set (BUILD)")
        return self.array


def _reconstruct(machine, cls, shape, typecode):
    if cls is not NDARRAY or shape != (0,) or type(typecode) not in (bytes, str):
        raise UnsafePickleError("only _reconstruct(numpy.ndarray, (0,), typecode) is allowed: an empty "
                                "array that the file's own bytes fill")
    return _PendingArray()


def _frombuffer(machine, buffer, dtype, shape, order):
    flat = _check_layout(shape, dtype, buffer, machine)
    if order not in ("C", "F"):
        raise UnsafePickleError(f"array order {kind(order)}")
    return flat.reshape(shape, order=order).copy(order=order)


def _latin1_encode(machine, text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol 2 - and only that."""
    if type(text) is not str or type(encoding) is not str or encoding.lower().replace("-", "") != "latin1":
        raise UnsafePickleError(f"_codecs.encode({kind(text)}, {kind(encoding)}) is not allowed")
    machine.budget.charge(len(text), "_codecs.encode")
    return text.encode("latin1")


def _empty_bytes(machine):
    """``bytes()``: how Python 3 pickles an empty ``bytes`` below protocol 3 (an empty array's data)."""
    return b""


# (module, name) -> what the pickle gets for that global
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): Constructor("numpy._core.multiarray._reconstruct", _reconstruct),
    ("numpy._core.multiarray", "_reconstruct"): Constructor("numpy._core.multiarray._reconstruct", _reconstruct),
    ("numpy.core.numeric", "_frombuffer"): Constructor("numpy._core.numeric._frombuffer", _frombuffer),
    ("numpy._core.numeric", "_frombuffer"): Constructor("numpy._core.numeric._frombuffer", _frombuffer),
    ("numpy", "ndarray"): NDARRAY,
    ("numpy", "dtype"): Constructor("numpy.dtype", _dtype),
    ("_codecs", "encode"): Constructor("_codecs.encode", _latin1_encode),
    ("builtins", "bytes"): Constructor("builtins.bytes", _empty_bytes),
    ("__builtin__", "bytes"): Constructor("builtins.bytes", _empty_bytes),
}


def safe_load(source, encoding="bytes", name=None):
    """Unpickle ``source`` (bytes, a path-like, or a binary file object) with the restrictions.

    ``encoding="bytes"`` leaves Python-2 ``str`` objects (keys of the original CIFAR files)
    as ``bytes``, which is also fastest: array data is not decoded and re-encoded. ``name``
    (default: the path, or ``<bytes>``) is used in error messages.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read"):
        data = source.read(MAX_PICKLE_BYTES + 1)
    else:
        name = str(source) if name is None else name
        with open(source, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size > MAX_PICKLE_BYTES:
                raise UnsafePickleError(f"{name}: {size} bytes, more than the limit of {MAX_PICKLE_BYTES} "
                                        "for a pickle")
            data = f.read()
    name = "<bytes>" if name is None else name
    if len(data) > MAX_PICKLE_BYTES:
        raise UnsafePickleError(f"{name}: more than the limit of {MAX_PICKLE_BYTES} bytes for a pickle")
    value, _ = Machine(data, ALLOWED_GLOBALS, Budget.for_file(len(data)), name, encoding=encoding).load()
    return value
