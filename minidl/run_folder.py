"""A training run's folder, which protects what it holds.

A run writes ``config.json`` (its configuration), ``checkpoint.npz`` and ``metrics.json`` into
its folder. :func:`claim_run_folder` is entered before any data is loaded and:

* proves the folder writable (it is created if needed);
* refuses a folder that holds another run (a checkpoint or metrics), naming both
  configurations, unless ``resume`` (the saved configuration must equal the new one, except
  that ``epochs`` may grow) or ``overwrite`` (the run's files are removed first); a run that
  stopped before its first checkpoint left only ``config.json`` and may simply be restarted;
* holds the lock file ``.lock`` (pid and host of the writer) for the run's lifetime, so a
  second writer is refused. The lock is removed on exit, also on errors; a lock left by a
  killed process is recognised as stale because no process has its pid, and taken over;
* removes the temporary files a killed writer of the run's files left (``minidl.io``).

:func:`locked_file` is the same lock for a single output file (``attack --json FILE`` holds
``FILE.lock``), so two runs cannot silently replace each other's result.
"""
import contextlib
import json
import os
import socket
import time

from .serialization import load
from .io import remove_stale_temporaries, write_json
from .validation import check_writable_folder

CONFIG = "config.json"
LOCK = ".lock"
RUN_FILES = (CONFIG, "checkpoint.npz", "metrics.json")
# Where the data and the computation live, not what is computed: these may differ on resume.
IGNORED = ("data_dir", "device")


class RunFolderError(ValueError):
    """The folder holds another run, or another process is writing to it."""


def saved_config(folder):
    """The configuration recorded in ``folder`` (config.json, else metrics.json, else the
    checkpoint of an older run), or None when the folder holds no run."""
    for name in (CONFIG, "metrics.json"):
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            try:
                with open(path) as f:
                    record = json.load(f)
            except (OSError, ValueError) as e:
                raise RunFolderError(f"{path}: unreadable run record ({e}); use --overwrite to replace the run")
            record = record if name == CONFIG else record.get("config") if isinstance(record, dict) else None
            return _as_record(record, path)
    path = os.path.join(folder, "checkpoint.npz")
    if os.path.isfile(path):
        return _as_record(load(path).get("config"), path)
    return None


def _as_record(record, path):
    if not isinstance(record, dict):
        raise RunFolderError(f"{path}: holds no run configuration; use --overwrite to replace the run")
    return record


def config_differences(saved, new):
    """{key: (saved value, new value)} over the keys that must match for a resume."""
    # Keys one record lacks (written by an older minidl) are not compared.
    keys = (set(saved) & set(new)) - set(IGNORED) - {"epochs"}
    return {k: (saved.get(k), new.get(k)) for k in sorted(keys) if saved.get(k) != new.get(k)}


def _describe(values):
    return ", ".join(f"{k}={v!r}" for k, v in values.items())


def check_folder(folder, config, resume=False, overwrite=False):
    """Raise :class:`RunFolderError` unless a run with ``config`` (a JSON-like dict) may
    write into ``folder`` as asked."""
    if resume and overwrite:
        raise RunFolderError("--resume and --overwrite: expected at most one of them, got both")
    if overwrite:  # whatever the folder holds, even an unreadable record, is replaced
        return
    saved = saved_config(folder)
    if saved is None:
        if resume:
            raise FileNotFoundError(f"--resume: no run to resume in {folder} (it holds no {CONFIG} or checkpoint)")
        return
    # A run that ended before its first checkpoint (bad data, Ctrl-C) left only config.json:
    # nothing finished can be lost, so a fresh start is allowed.
    finished = any(os.path.isfile(os.path.join(folder, name)) for name in RUN_FILES if name != CONFIG)
    if not finished and not resume:
        return
    config = json.loads(json.dumps(config))
    diff = config_differences(saved, config)
    if resume:
        if diff:
            raise RunFolderError(
                f"--resume: {folder} holds a run with {_describe({k: a for k, (a, _) in diff.items()})}, "
                f"this one has {_describe({k: b for k, (_, b) in diff.items()})}; only --epochs may change "
                "on resume (use --overwrite to replace the run, or another --out)")
        if int(config.get("epochs", 0)) < int(saved.get("epochs", 0)):
            raise RunFolderError(f"--resume: --epochs: expected >= {saved.get('epochs')} (the saved run's), "
                                 f"got {config.get('epochs')}")
        return
    if diff:
        what = (f"a run with {_describe({k: a for k, (a, _) in diff.items()})}, this one has "
                f"{_describe({k: b for k, (_, b) in diff.items()})}")
    else:
        asked = "" if saved.get("epochs") == config.get("epochs") else f", this one asks for {config.get('epochs')}"
        what = (f"a run with the same configuration ({saved.get('model')} on {saved.get('dataset')}, "
                f"epochs={saved.get('epochs')!r}{asked})")
    raise RunFolderError(f"{folder} already holds {what}; use --resume to continue it (same configuration, "
                         "only --epochs may grow), --overwrite to replace it, or another --out")


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, under another user
        return True
    return True


def acquire_lock(folder):
    """Create ``folder/.lock`` for this process; returns its path. A lock whose pid is not a
    running process on this host is stale and replaced."""
    return _take_lock(os.path.join(folder, LOCK), folder, "run")


def _take_lock(path, what, kind):
    """Create the lock file ``path`` guarding ``what`` (a folder or file, used by a ``kind``
    of run) for this process; returns ``path``."""
    me = {"pid": os.getpid(), "host": socket.gethostname()}
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            try:
                with open(path) as f:
                    owner = json.load(f)
                pid, host = int(owner["pid"]), str(owner["host"])
            except (OSError, ValueError, KeyError, TypeError):
                owner, pid, host = None, None, None
            if pid is not None and (host != me["host"] or _pid_alive(pid)):
                raise RunFolderError(f"{what} is in use by another {kind} (pid {pid} on {host}, lock file {path}); "
                                     "wait for it to finish, or delete the lock file if that process is gone")
            if pid is None and os.path.exists(path) and _younger_than(path, 5):
                # being written by a process that just created it; do not steal it
                raise RunFolderError(f"{what} is in use by another {kind} (lock file {path} is being written)")
            with contextlib.suppress(FileNotFoundError):
                os.remove(path)  # stale: its process is gone
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise RunFolderError(f"{what}: could not take the lock file {path}")


def _younger_than(path, seconds):
    try:
        return time.time() - os.path.getmtime(path) < seconds
    except OSError:
        return False


def release_lock(path):
    """Remove the lock at ``path`` if this process holds it."""
    try:
        with open(path) as f:
            if int(json.load(f)["pid"]) != os.getpid():
                return
    except (OSError, ValueError, KeyError, TypeError):
        return
    with contextlib.suppress(FileNotFoundError):
        os.remove(path)


@contextlib.contextmanager
def claim_run_folder(folder, config, resume=False, overwrite=False):
    """Context for a run writing into ``folder`` with configuration ``config`` (a dict):
    writable-folder check, lock, run-folder checks, ``config.json`` written; the lock is
    released on exit. With ``overwrite``, the previous run's files are removed first."""
    check_writable_folder("out_dir", folder)
    lock = acquire_lock(folder)
    try:
        for name in RUN_FILES:  # what a killed writer left; the lock keeps live writers away
            remove_stale_temporaries(os.path.join(folder, name))
        check_folder(folder, config, resume=resume, overwrite=overwrite)
        if overwrite:
            for name in RUN_FILES:
                with contextlib.suppress(FileNotFoundError):
                    os.remove(os.path.join(folder, name))
        write_json(os.path.join(folder, CONFIG), config)
        yield folder
    finally:
        release_lock(lock)


@contextlib.contextmanager
def locked_file(path, kind="attack", related=()):
    """Context for a run that writes the file ``path``: holds the lock ``path + '.lock'`` (as
    :func:`claim_run_folder` holds a folder's), and removes the temporary files killed writers
    of ``path`` and of the ``related`` files (its journal) left. Released on exit."""
    path = os.fspath(path)
    lock = _take_lock(path + ".lock", path, kind)
    try:
        for name in (path, *related):
            remove_stale_temporaries(name)
        yield path
    finally:
        release_lock(lock)
