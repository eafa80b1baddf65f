"""Version counters: how often an array's memory has been changed in place.

Every in-place Tensor method (``add_``, ``zero_`` ...) bumps the counter of the memory it
writes to, shared by all views of one base array. ``Function.apply`` stamps what the
Function's backward reads (its inputs unless it declares ``reads_inputs = False``, its output
where it declares ``reads_output = True``) with (base array, version), and the backward pass
refuses to run a Function whose stamped arrays have changed since: their saved values would
give a silently wrong gradient.
"""
import weakref

from . import backend

_versions = {}  # id(base array) -> number of in-place changes


def _base(array):
    while backend.is_array(getattr(array, "base", None)):
        array = array.base
    return array


def stamp(array):
    """(base array, its version) for ``array``; the base is kept so that a later ``t.array = ...``
    (a new array, untracked as in PyTorch) does not hide a change of the old one."""
    base = _base(array)
    return base, _versions.get(id(base), 0)


def changed(stamped):
    """True when the array stamped by :func:`stamp` was changed in place since."""
    base, version = stamped
    return _versions.get(id(base), 0) != version


def bump(array):
    """Record an in-place change of ``array``'s memory."""
    base = _base(array)
    key = id(base)
    if key not in _versions:
        try:  # forget the count with the array (ids are reused)
            weakref.finalize(base, _versions.pop, key, None)
        except TypeError:  # not weak-referenceable: the entry stays, harmlessly
            pass
    _versions[key] = _versions.get(key, 0) + 1
