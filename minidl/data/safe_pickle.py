"""Loading the CIFAR-10 pickles without letting a pickle run code.

A pickle names callables (``module.name`` globals) that the unpickler imports and calls;
``pickle.load`` will call *any* of them, so a tampered file could run ``os.system``.
:class:`RestrictedUnpickler` resolves only the few globals that a pickled NumPy array
needs and refuses everything else, before anything is called.

Sizes: a file is read whole (at most :data:`MAX_PICKLE_BYTES`) and unpickled from memory, so a
length field claiming terabytes meets the end of the data instead of an allocation of that
size; arrays are rebuilt only the way NumPy pickles them (empty, then filled from bytes that
are in the file).
"""
import io
import os
import pickle

import numpy as np

try:  # NumPy >= 2 moved the private module; pickles name both spellings.
    from numpy._core.multiarray import _reconstruct
except ImportError:  # pragma: no cover - NumPy 1.x
    from numpy.core.multiarray import _reconstruct


def _latin1_encode(text, encoding="latin1"):
    """``_codecs.encode`` as Python 3 uses it to pickle ``bytes`` at protocol 2 - and only that."""
    if not isinstance(text, str) or encoding.lower().replace("-", "") != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode({type(text).__name__}, {encoding!r}) is not allowed")
    return text.encode("latin1")


MAX_PICKLE_BYTES = 1 << 30  # a CIFAR-10 batch is 31 MB


def _empty_array(subtype, shape, dtype):
    """``_reconstruct`` as a pickled array calls it: an empty ndarray (shape (0,)) that the
    array's ``__setstate__`` then fills from bytes in the pickle. Any other call could
    allocate a size given by the file, so it is refused."""
    if subtype is not np.ndarray or tuple(shape) != (0,):
        raise pickle.UnpicklingError(f"_reconstruct({getattr(subtype, '__name__', subtype)!r}, {shape!r}) "
                                     "is not allowed: only empty ndarrays are rebuilt")
    return _reconstruct(subtype, shape, dtype)


# (module, name) -> object returned to the unpickler
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _empty_array,
    ("numpy._core.multiarray", "_reconstruct"): _empty_array,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _latin1_encode,
}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that knows only :data:`ALLOWED_GLOBALS` (plain containers need no globals)."""

    def find_class(self, module, name):
        try:
            return ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} in pickle: only NumPy arrays, lists, dicts, "
                "strings and numbers may be loaded") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent ids are not allowed in this pickle")


def safe_load(source, encoding="bytes"):
    """Unpickle ``source`` (bytes, a path-like, or a binary file object) with the restrictions.

    ``encoding="bytes"`` leaves Python-2 ``str`` objects (keys of the original CIFAR files)
    as ``bytes``, which is also fastest: array data is not decoded and re-encoded.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        return RestrictedUnpickler(io.BytesIO(source), encoding=encoding).load()
    if hasattr(source, "read"):
        return RestrictedUnpickler(source, encoding=encoding).load()
    with open(source, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size > MAX_PICKLE_BYTES:
            raise pickle.UnpicklingError(f"{size} bytes, more than the limit of {MAX_PICKLE_BYTES} for a pickle")
        data = f.read()
    return RestrictedUnpickler(io.BytesIO(data), encoding=encoding).load()
