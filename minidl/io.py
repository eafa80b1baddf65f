"""Files that are never half-written: atomic writes, and JSON on top of them.

``atomic_write(path)`` writes into a temporary file in the folder of ``path`` (the same file
system, so the rename below is atomic), flushes it and ``fsync``s it to disk, renames it over
``path`` with ``os.replace`` and finally ``fsync``s the folder so that the rename itself
survives a crash. A reader sees the old file or the new one, never a truncated mix. When the
body of the ``with`` raises, the temporary file is removed and ``path`` is left as it was, so
a caller can also reject what it wrote (a download with the wrong checksum) by raising.

JSON: :func:`write_json` / :func:`read_json`, and :func:`as_json`, the value an object reads
back as (tuples become lists, NumPy scalars and arrays plain numbers and lists), used to
compare settings with those saved in a file.
"""
import contextlib
import hashlib
import json
import os
import uuid

import numpy


@contextlib.contextmanager
def atomic_write(path, mode="w"):
    """A file object for writing ``path`` (``mode`` 'w' text or 'wb' bytes) atomically."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_write: mode must be 'w' or 'wb', got {mode!r}")
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    # os.open with 0o666 (not tempfile.mkstemp, which makes 0o600) so that the file gets the
    # usual permissions of the umask, as a plain open() would give it.
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise
    _fsync_folder(folder)


def _fsync_folder(folder):
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # a platform that cannot open folders (Windows): the rename is all there is
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a folder; the rename has happened
        pass
    finally:
        os.close(fd)


def file_digest(path, algorithm="sha256"):
    """Hex digest of the file at ``path`` (``hashlib`` algorithm name), read in 1 MiB chunks so
    large files need no large buffer."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def to_jsonable(value):
    """``default=`` of ``json.dump``: NumPy scalars and arrays as plain numbers and lists."""
    if isinstance(value, numpy.integer):
        return int(value)
    if isinstance(value, numpy.floating):
        return float(value)
    if isinstance(value, (numpy.ndarray, numpy.bool_)):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


def write_json(path, obj):
    """Write ``obj`` as indented JSON to ``path``, atomically."""
    with atomic_write(path) as f:
        json.dump(obj, f, indent=2, default=to_jsonable)


def read_json(path):
    """The value stored in the JSON file ``path``."""
    with open(path) as f:
        return json.load(f)


def as_json(obj):
    """``obj`` as it reads back after a JSON round trip (what :func:`read_json` would return)."""
    return json.loads(json.dumps(obj, default=to_jsonable))
