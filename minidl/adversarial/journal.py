"""A journal of an evaluation's finished batches, so that a stopped run loses nothing.

AutoAttack on all 10,000 MNIST test images takes hours on a CPU; a crash, a Ctrl-C or the end of
a job's time slot must not throw the finished batches away. :func:`robust_accuracy` (and with it
``autoattack_accuracy`` and the ``attack`` command) can keep an :class:`EvalJournal`: after each
batch it appends the batch's per-example results (clean and robust correctness), the state of
minidl's NumPy generator and whatever state its caller registered (AutoAttack's per-stage
counts), and rewrites the journal file atomically. A later run with the same settings and
``resume=True`` takes the finished batches from the file, restores the generator and the
caller's state as they were after the last of them, and attacks only the rest: on the NumPy
backend it returns exactly what the uninterrupted run returns.

A journal is read as a hand-edited file could be: every field is checked (``batches`` a list,
each entry an object whose ``clean`` and ``robust`` are equally long lists of 0 and 1 with no
point robust that is not clean, ``rng`` a state of minidl's generator), and a bad one is
refused with one line naming the file and the field.

The journal refuses to be mixed up. Its settings (attack, eps, seed, batch size, the
checkpoint's SHA-256, the number of images, the MPI rank and world size, ...) must equal the new
run's, and a finished batch must hold as many examples as the batch it stands for. A journal
found without ``resume`` is refused rather than overwritten, since it holds finished work.

Under MPI each rank journals its own shard in its own file (``path`` + ``.rank<r>``), so a
resume needs the same number of ranks. On a GPU the random starts come from CuPy's generator,
whose state cannot be saved: a resumed run reseeds it from (seed, batches done), so it gives
another draw of the same evaluation rather than the same numbers.
"""
import contextlib
import os

import numpy

from .. import backend
from ..io import as_json, read_json, write_json

VERSION = 1


def journal_path(path, comm_size=1, rank=0):
    """The file a rank journals into: ``path`` itself in one process, ``path.rank<r>`` under MPI."""
    return os.fspath(path) if comm_size == 1 else f"{os.fspath(path)}.rank{rank}"


def discard_journal(path, comm_size=1, rank=0):
    """Remove the journal a rank kept at ``path`` (:func:`journal_path`), if any: call it once
    the evaluation's result is safely stored."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(journal_path(path, comm_size, rank))


class EvalJournal:
    """The finished batches of one evaluation, in the JSON file ``path``.

    ``settings`` is a JSON-like dict naming the evaluation; ``resume`` continues a journal
    that is there (it must have the same settings). Without ``resume`` an existing journal is
    refused; with ``resume`` a missing one is an error too, so that a mistyped path does not
    silently start over."""

    def __init__(self, path, settings, resume=False):
        self.path = os.fspath(path)
        self.settings = as_json(settings)
        self.batches = []
        self.resumed = 0  # batches taken from the file
        self._save_state, self._load_state = None, None
        if os.path.exists(self.path):
            try:
                saved = read_json(self.path)
            except (OSError, ValueError) as e:
                raise ValueError(f"journal: {self.path} is not a readable evaluation journal ({e}); "
                                 "remove it to start over") from None
            saved_settings, batches = checked_contents(self.path, saved)
            if saved_settings != self.settings:
                diff = {k: (saved_settings.get(k), self.settings.get(k))
                        for k in sorted(set(saved_settings) | set(self.settings))
                        if saved_settings.get(k) != self.settings.get(k)}
                what = ", ".join(f"{k}: journal {a!r}, this run {b!r}" for k, (a, b) in diff.items())
                raise ValueError(f"journal: {self.path} belongs to another evaluation ({what}); "
                                 "remove it, or run with its settings")
            if not resume:
                raise ValueError(
                    f"journal: {self.path} holds {len(batches)} finished batches "
                    f"({sum(len(b['clean']) for b in batches)} images) of this evaluation; pass resume=True "
                    "(--resume) to continue it, or remove the file to start over")
            self.batches, self.resumed = batches, len(batches)
        elif resume:
            raise FileNotFoundError(f"resume: expected the journal {self.path} of an unfinished run, "
                                    "found none (a finished run removes its journal)")

    def keep(self, save, load):
        """Also journal the caller's state: ``save()`` -> JSON-like value after each batch,
        ``load(value)`` restores it on resume."""
        self._save_state, self._load_state = save, load

    def finished(self, index, n):
        """(clean, robust) boolean arrays of finished batch ``index``, which holds ``n``
        examples, or None when that batch has not been journaled."""
        if index >= len(self.batches):
            return None
        batch = self.batches[index]
        if len(batch["clean"]) != n or len(batch["robust"]) != n:
            raise ValueError(f"journal: {self.path}: batch {index} holds {len(batch['clean'])} examples, "
                             f"expected {n}; remove the journal to start over")
        if index == len(self.batches) - 1:
            self._restore(batch)
        return numpy.asarray(batch["clean"], dtype=bool), numpy.asarray(batch["robust"], dtype=bool)

    def _restore(self, batch):
        backend.set_rng_state(batch["rng"])
        # CuPy's generator state cannot be read back: restart it from where the run stands
        backend.reseed_cupy(int(self.settings.get("seed") or 0) * 1_000_003 + len(self.batches))
        if self._load_state is not None and batch.get("state") is not None:
            try:
                self._load_state(batch["state"])
            except (KeyError, TypeError, ValueError, IndexError) as e:
                _refuse(self.path, f"batches[{len(self.batches) - 1}].state", "the state its evaluation saved",
                        f"{_shown(batch['state'])} ({type(e).__name__}: {e})")

    def record(self, clean, robust):
        """Append a finished batch and rewrite the journal (atomically)."""
        self.batches.append({"clean": numpy.asarray(clean, dtype=bool).astype(int).tolist(),
                             "robust": numpy.asarray(robust, dtype=bool).astype(int).tolist(),
                             "rng": backend.get_rng_state(),
                             "state": None if self._save_state is None else as_json(self._save_state())})
        write_json(self.path, {"version": VERSION, "settings": self.settings, "batches": self.batches})


def _shown(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[:width - 3] + "..."


def _refuse(path, field, expected, got):
    raise ValueError(f"journal: {path}: {field}: expected {expected}, got {got}; "
                     "remove the journal to start over")


def _bits(path, field, value):
    """``value`` if it is a list of 0 and 1 (JSON's true and false are refused too)."""
    if not isinstance(value, list):
        _refuse(path, field, "a list of 0 and 1", _shown(value))
    for j, v in enumerate(value):
        if type(v) is not int or v not in (0, 1):
            _refuse(path, f"{field}[{j}]", "0 or 1", _shown(v))
    return value


def _check_rng(path, field, state):
    """Refuse ``state`` unless minidl's NumPy generator would take it."""
    probe = type(backend.rng().bit_generator)()
    try:
        probe.state = state
    except (TypeError, ValueError, KeyError, OverflowError) as e:
        _refuse(path, field, f"a state of NumPy's {type(probe).__name__} generator",
                f"{_shown(state)} ({type(e).__name__}: {e})")


def checked_contents(path, saved):
    """(settings, batches) of the journal ``saved`` (read from ``path``), every field checked
    (module docstring); raises ValueError naming ``path`` and the first bad field."""
    if not isinstance(saved, dict):
        _refuse(path, "the file", "a JSON object with version, settings and batches", type(saved).__name__)
    if saved.get("version") != VERSION:
        _refuse(path, "version", VERSION, _shown(saved.get("version")))
    settings, batches = saved.get("settings"), saved.get("batches")
    if not isinstance(settings, dict):
        _refuse(path, "settings", "an object (the evaluation's settings)", _shown(settings))
    if not isinstance(batches, list):
        _refuse(path, "batches", "a list (one entry per finished batch)", _shown(batches))
    for i, batch in enumerate(batches):
        field = f"batches[{i}]"
        if not isinstance(batch, dict):
            _refuse(path, field, "an object with clean, robust and rng", _shown(batch))
        clean = _bits(path, f"{field}.clean", batch.get("clean"))
        robust = _bits(path, f"{field}.robust", batch.get("robust"))
        if len(robust) != len(clean):
            _refuse(path, f"{field}.robust", f"{len(clean)} entries (as clean)", f"{len(robust)}")
        for j, (c, r) in enumerate(zip(clean, robust)):
            if r > c:
                _refuse(path, f"{field}.robust[{j}]",
                        "0 where clean is 0 (a point misclassified unattacked cannot be robust)", r)
        _check_rng(path, f"{field}.rng", batch.get("rng"))
    return settings, batches
