"""Loading the CIFAR-10 pickles without letting a pickle run code.

A pickle names callables (``module.name`` globals) that the unpickler imports and calls;
``pickle.load`` will call *any* of them, so a tampered file could run ``os.system``.
:class:`RestrictedUnpickler` resolves only the few globals that a pickled NumPy array
needs and refuses everything else, before anything is called.
"""
import io
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


# (module, name) -> object returned to the unpickler
ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
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
        return RestrictedUnpickler(f, encoding=encoding).load()
