"""Saving and loading state dicts as ``.npz`` files: plain arrays, no pickle, written atomically.

Keys are strings, values arrays (Tensors are stored as their host arrays). Nested dicts
(an optimizer state inside a checkpoint) are flattened with ``/`` in the key. Non-array
values (ints, floats, strings, lists of those) are kept as JSON in a reserved key so that
a checkpoint can record the epoch, the metrics or the attack settings.
"""
import json
import os
import tempfile
import zipfile

import numpy

from . import backend, torch_format

_JSON_KEY = "__minidl_json__"


def _flatten(obj, prefix, arrays, extras):
    from .tensor import Tensor
    for key, value in obj.items():
        if not isinstance(key, str) or "/" in key or key == _JSON_KEY:
            raise ValueError(f"save: keys must be strings without '/', got {key!r}")
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _flatten(value, name + "/", arrays, extras)
        elif isinstance(value, Tensor):
            arrays[name] = value.numpy()
        elif backend.is_array(value):
            if value.dtype.kind == "O":  # would be pickled, and load refuses pickles
                raise TypeError(f"save: array {name!r} has dtype object; only numeric and boolean "
                                "arrays can be saved")
            arrays[name] = backend.to_numpy(value)
        else:
            try:
                json.dumps(value)
            except TypeError:
                raise TypeError(f"save: value for {name!r} is a {type(value).__name__}; "
                                "only arrays, Tensors, dicts and JSON values can be saved") from None
            extras[name] = value


def save(state, path):
    """Write ``state`` (a possibly nested dict) to ``path`` atomically.

    The data goes to a temporary file in the same folder, is flushed to disk, and only then
    renamed over ``path``, so an interrupted save never leaves a truncated checkpoint.
    """
    if not isinstance(state, dict):
        raise TypeError(f"save: state must be a dict, got {type(state).__name__}")
    arrays, extras = {}, {}
    _flatten(state, "", arrays, extras)
    arrays[_JSON_KEY] = numpy.frombuffer(json.dumps(extras).encode(), dtype=numpy.uint8)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".npz", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            numpy.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def load(path):
    """Read a file written by :func:`save` back into a nested dict of NumPy arrays and values.

    A file written by PyTorch's ``torch.save`` is read by :mod:`minidl.torch_format` instead
    (safely: its pickle may name only tensors, storages and plain values)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if torch_format.is_torch_file(path):  # a torch.save file (.pth, .pt): tensors become arrays
        return torch_format.load_torch(path)
    try:
        with numpy.load(path, allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
        raise ValueError(f"load: {path} is not a valid minidl .npz file (corrupt or truncated?): {e}") from None
    try:
        extras = json.loads(bytes(flat.pop(_JSON_KEY)).decode()) if _JSON_KEY in flat else {}
    except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"load: {path} is not a valid minidl .npz file (corrupt metadata): {e}") from None
    out = {}
    for name, value in list(flat.items()) + list(extras.items()):
        *parents, leaf = name.split("/")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out
