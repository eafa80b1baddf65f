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


# The most data bytes read_idx accepts from one file (MNIST's largest holds 47 MB, EMNIST's
# 550 MB), and the most dimensions (MNIST's have 1 and 3).
MAX_IDX_BYTES = 1 << 30
MAX_IDX_NDIM = 32
_CHUNK = 1 << 20
# Deflate never compresses by more than about 1032:1, so a .gz file of n bytes cannot hold
# more than this many times n: a header claiming more is a lie, refused before reading.
_DEFLATE_RATIO = 1100


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
    if ndim > MAX_IDX_NDIM:
        raise IDXFormatError(f"{name}: {ndim} dimensions, more than the limit of {MAX_IDX_NDIM}")
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


def _read_up_to(f, head, n):
    """``head`` followed by at most ``n`` more bytes of ``f``, read in chunks: memory grows
    with the data that is really there, never with what a header claims."""
    out = bytearray(head)
    while n > 0:
        chunk = f.read(min(n, _CHUNK))
        if not chunk:
            break
        out += chunk
        n -= len(chunk)
    return bytes(out)  # parse_idx's arrays are read-only views of bytes


def read_idx(path, expected_magic=None, max_bytes=MAX_IDX_BYTES):
    """Parse the IDX file at ``path``, gzip-compressed when its name ends in ``.gz``.

    The header is read first; the data size it announces is checked against ``max_bytes``
    and against what the file can hold before the data is read, so a forged header (or a
    gzip bomb) is refused without allocating its size."""
    path = Path(path)
    compressed = path.suffix == ".gz"
    size = path.stat().st_size
    try:
        with (gzip.open(path, "rb") if compressed else open(path, "rb")) as f:
            head = f.read(4)
            if len(head) == 4:
                head += f.read(4 * head[3])
            if len(head) >= 4 and int.from_bytes(head[:2], "big") == 0 and head[2] in _IDX_TYPES \
                    and len(head) == 4 + 4 * head[3]:
                shape = tuple(int(s) for s in np.frombuffer(head, ">u4", offset=4))
                expected = math.prod(shape) * np.dtype(_IDX_TYPES[head[2]]).itemsize
                room = size * _DEFLATE_RATIO if compressed else size - len(head)
                if expected > max_bytes:
                    raise IDXFormatError(f"{path}: header says shape {shape} ({expected} data bytes), more "
                                         f"than the limit of {max_bytes} bytes")
                if expected > room:
                    raise IDXFormatError(f"{path}: truncated, header says shape {shape} ({expected} data bytes) "
                                         f"but the file can hold at most {room}")
                raw = _read_up_to(f, head, expected + 1)  # one byte more reveals trailing garbage
            else:
                raw = head  # parse_idx names what is wrong with it
    except (EOFError, gzip.BadGzipFile, zlib.error) as e:
        raise IDXFormatError(f"{path}: corrupt or truncated gzip data ({e})") from e
    return parse_idx(raw, str(path), expected_magic)
