"""Saving and loading state dicts as ``.npz`` files: plain arrays, no pickle, written atomically.

Keys are strings, values arrays (Tensors are stored as their host arrays). Nested dicts
(an optimizer state inside a checkpoint) are flattened with ``/`` in the key. Non-array
values (ints, floats, strings, lists of those) are kept as JSON in a reserved key so that
a checkpoint can record the epoch, the metrics or the attack settings.
"""
import json
import math
import os
import struct
import zipfile

import numpy

from . import backend, torch_format
from .io import atomic_write
from .restricted_pickle import MAX_DEPTH
from .tensor import Tensor

_JSON_KEY = "__minidl_json__"
# The most bytes load() allocates for one file's arrays; a header claiming more is refused.
MAX_LOAD_BYTES = 1 << 36


def _flatten(obj, prefix, arrays, extras):
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
    renamed over ``path`` (:func:`minidl.io.atomic_write`), so an interrupted save never
    leaves a truncated checkpoint.
    """
    if not isinstance(state, dict):
        raise TypeError(f"save: state must be a dict, got {type(state).__name__}")
    arrays, extras = {}, {}
    _flatten(state, "", arrays, extras)
    arrays[_JSON_KEY] = numpy.frombuffer(json.dumps(extras).encode(), dtype=numpy.uint8)
    with atomic_write(path, "wb") as f:
        numpy.savez(f, **arrays)


def _check_sizes(path, max_bytes):
    """Read every array's .npy header in the archive and check, before anything is allocated,
    that the data it announces is really in the file: an uncompressed member must hold exactly
    header + data bytes, its size in the zip directory must match its stored size, and the
    stored sizes cannot add up to more than the file. A header claiming terabytes is thus
    refused instead of being allocated."""
    file_size = os.path.getsize(path)
    total = stored = 0
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if info.flag_bits & 0x1:
                raise ValueError(f"member {info.filename!r} is encrypted")
            if info.compress_type != zipfile.ZIP_STORED or info.file_size != info.compress_size:
                raise ValueError(f"member {info.filename!r} is compressed; minidl writes uncompressed arrays")
            stored += info.compress_size
            with archive.open(info) as member:
                version = numpy.lib.format.read_magic(member)
                read_header = (numpy.lib.format.read_array_header_1_0 if version == (1, 0)
                               else numpy.lib.format.read_array_header_2_0)
                shape, _, dtype = read_header(member)
                header = member.tell()
            if dtype.hasobject:
                raise ValueError(f"member {info.filename!r} holds Python objects")
            nbytes = math.prod(shape) * dtype.itemsize
            total += nbytes
            if info.file_size != header + nbytes:
                raise ValueError(f"member {info.filename!r}: header says shape {shape} of {dtype} ({nbytes} bytes) "
                                 f"but the member holds {info.file_size - header} data bytes")
    if stored > file_size:
        raise ValueError(f"its zip directory claims {stored} bytes of arrays, more than the file's {file_size}")
    if total > max_bytes:
        raise ValueError(f"its arrays need {total} bytes, more than the limit of {max_bytes} (max_bytes)")


def load(path, max_bytes=None, map_location=None, weights_only=None):
    """Read a file written by :func:`save` back into a nested dict of NumPy arrays and values.

    Array sizes are checked against the file's size and against ``max_bytes`` (default
    :data:`MAX_LOAD_BYTES`) before anything is allocated; every failure is one ValueError
    naming the file. A file written by PyTorch's ``torch.save`` is read by
    :mod:`minidl.torch_format` instead (safely: its pickle may name only tensors, storages and
    plain values).

    ``map_location`` and ``weights_only`` are accepted for PyTorch code: arrays always come
    back on the host (``load_state_dict`` moves them to the model's device) and nothing but
    arrays and plain values is ever loaded. ``map_location`` must still be a device name,
    an ``md.device``, a dict or a callable, so that a typo is reported."""
    if map_location is not None and not (isinstance(map_location, (str, dict)) or callable(map_location)):
        raise TypeError(f"load: map_location must be a device name, a dict or a callable, got {map_location!r}")
    if isinstance(map_location, str) and map_location.split(":")[0] not in ("cpu", "cuda"):
        raise ValueError(f"load: map_location must name 'cpu' or 'cuda', got {map_location!r}")
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: no such file: {path}")
    if os.path.isdir(path):
        raise ValueError(f"load: {path} is a folder, not a minidl .npz file")
    if torch_format.is_torch_file(path):  # a torch.save file (.pth, .pt): tensors become arrays
        return torch_format.load_torch(path, MAX_LOAD_BYTES if max_bytes is None else max_bytes)
    try:
        _check_sizes(path, MAX_LOAD_BYTES if max_bytes is None else max_bytes)
        with numpy.load(path, allow_pickle=False) as f:
            flat = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, MemoryError, struct.error, KeyError) as e:
        raise ValueError(f"load: {path} is not a valid minidl .npz file (corrupt or truncated?): {e}") from None
    try:
        extras = json.loads(bytes(flat.pop(_JSON_KEY)).decode()) if _JSON_KEY in flat else {}
        if not isinstance(extras, dict):
            raise ValueError(f"expected a JSON object, found a {type(extras).__name__}")
        _check_json_depth(extras)
        return _unflatten(list(flat.items()) + list(extras.items()))
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ValueError(f"load: {path} is not a valid minidl .npz file (corrupt metadata): "
                         f"{type(e).__name__ if isinstance(e, RecursionError) else e}") from None


def _check_json_depth(value):
    """Refuse JSON values nested deeper than :data:`~minidl.restricted_pickle.MAX_DEPTH`
    (iteratively: a JSON value is a tree, so the walk visits each node once)."""
    todo = [(value, 0)]
    while todo:
        value, depth = todo.pop()
        if depth > MAX_DEPTH:
            raise ValueError(f"values nested more than {MAX_DEPTH} deep")
        if isinstance(value, dict):
            todo.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, list):
            todo.extend((v, depth + 1) for v in value)


def _unflatten(items):
    """``{'a/b': v}`` -> ``{'a': {'b': v}}``; a name that is both a value and a folder, or a
    path deeper than MAX_DEPTH, is an error."""
    out = {}
    for name, value in items:
        *parents, leaf = name.split("/")
        if len(parents) > MAX_DEPTH:
            raise ValueError(f"key {name[:80]!r} is nested more than {MAX_DEPTH} deep")
        node = out
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ValueError(f"key {name[:80]!r} is inside a value that is not a dict")
        if leaf in node:
            raise ValueError(f"key {name[:80]!r} appears twice")
        node[leaf] = value
    return out
