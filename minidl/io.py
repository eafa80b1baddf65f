"""Files that are never half-written: atomic writes, and JSON on top of them.

``atomic_write(path)`` writes into a temporary file in the folder of ``path`` (the same file
system, so the rename below is atomic), flushes it and ``fsync``s it to disk, renames it over
``path`` with ``os.replace`` and finally ``fsync``s the folder so that the rename itself
survives a crash. A reader sees the old file or the new one, never a truncated mix. When the
body of the ``with`` raises, the temporary file is removed and ``path`` is left as it was, so
a caller can also reject what it wrote (a download with the wrong checksum) by raising.

A writer killed in the middle (SIGKILL, a power cut) leaves its hidden temporary file
``.<name>.<12 hex digits>.tmp`` behind; :func:`remove_stale_temporaries` removes those of one
file, and is called by whoever holds that file's lock (a run folder's, an attack journal's).
:func:`check_atomic_writable` proves, before any work, that the temporary file can be made
(a long name can fit the file system while its temporary name does not).

JSON: :func:`write_json` / :func:`read_json`, and :func:`as_json`, the value an object reads
back as (tuples become lists, NumPy scalars and arrays plain numbers and lists), used to
compare settings with those saved in a file.
"""
import contextlib
import hashlib
import json
import os
import re
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
    tmp = _temporary_name(path)
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


def _temporary_name(path):
    """The temporary file :func:`atomic_write` writes ``path`` into, in the same folder."""
    folder, name = os.path.split(os.path.abspath(path))
    return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.tmp")


def _temporary_pattern(name):
    return re.compile(r"\." + re.escape(name) + r"\.[0-9a-f]{12}\.tmp")


def stale_temporaries(path):
    """The temporary files that writers of ``path`` left behind (:func:`atomic_write`)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        entries = os.listdir(folder)
    except OSError:  # no folder, no leftovers
        return []
    pattern = _temporary_pattern(name)
    return sorted(os.path.join(folder, e) for e in entries if pattern.fullmatch(e))


def remove_stale_temporaries(path):
    """Remove what killed writers of ``path`` left (see the module docstring); returns the
    paths removed. Call it only while holding the lock that keeps other writers of ``path``
    away: a live writer's temporary file has the same name pattern."""
    removed = []
    for tmp in stale_temporaries(path):
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
            removed.append(tmp)
    return removed


def check_atomic_writable(name, path):
    """Prove that :func:`atomic_write` can write ``path``: its temporary file (a longer name in
    the same folder) is created and removed. Raises OSError ``name: ...`` otherwise."""
    tmp = _temporary_name(path)
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        os.remove(tmp)
    except OSError as e:
        raise OSError(f"{name}: cannot write {os.fspath(path)!r}: its temporary file "
                      f"{os.path.basename(tmp)!r} cannot be created ({e.strerror or e})") from None
    return path


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
