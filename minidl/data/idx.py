"""The IDX file format (MNIST's), parsed with one ``np.frombuffer`` per file.

Layout, all integers big-endian:

* 4-byte magic: two zero bytes, a type code (0x08 = uint8, ...) and the number of
  dimensions ``ndim``; e.g. 2051 = 0x00000803 (uint8, 3-D: images) and
  2049 = 0x00000801 (uint8, 1-D: labels);
* ``ndim`` uint32 sizes;
* the data, C order, exactly ``prod(sizes)`` items.
"""
import gzip
import math
import zlib
from pathlib import Path

import numpy as np

# IDX type code -> big-endian NumPy dtype
_IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class IDXFormatError(ValueError):
    """An IDX file (or its gzip wrapper) is malformed or truncated."""


def parse_idx(data, name="<bytes>", expected_magic=None):
    """Array stored in the IDX bytes ``data`` (a read-only view of them, no copy).

    ``name`` is only used in error messages. With ``expected_magic`` (e.g. 2051) any other
    magic number is an error. Header and length are checked against each other so that
    truncated or padded files fail loudly instead of loading garbage.
    """
    if len(data) < 4:
        raise IDXFormatError(f"{name}: only {len(data)} bytes, too short for an IDX header")
    magic = int.from_bytes(data[:4], "big")
    if expected_magic is not None and magic != expected_magic:
        raise IDXFormatError(f"{name}: bad IDX magic number {magic}, expected {expected_magic}")
    zero, type_code, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or type_code not in _IDX_TYPES:
        raise IDXFormatError(f"{name}: bad IDX magic number {magic} (0x{magic:08x}) - not an IDX file")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise IDXFormatError(f"{name}: truncated header, {ndim} dimension sizes need {header} bytes, "
                             f"file has {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", count=ndim, offset=4))
    dtype = np.dtype(_IDX_TYPES[type_code])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: no overflow on absurd headers
    body = len(data) - header
    if body < expected:
        raise IDXFormatError(f"{name}: truncated, header says shape {shape} ({expected} data bytes) "
                             f"but only {body} bytes follow the header")
    if body > expected:
        raise IDXFormatError(f"{name}: {body - expected} unexpected bytes after the data of shape {shape}")
    return np.frombuffer(data, dtype, offset=header).reshape(shape)


def read_idx(path, expected_magic=None):
    """Parse the IDX file at ``path``, gzip-compressed when its name ends in ``.gz``."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".gz":
        try:
            raw = gzip.decompress(raw)
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return parse_idx(raw, str(path), expected_magic)
