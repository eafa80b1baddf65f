"""Checks of user-supplied numbers, arrays and output paths, with one message shape:

    ``name: expected <what>, got <value>``

``name`` says where the value came from (``pgd: eps``, ``--lr``, ``Adam: betas[0]``). NaN and
infinities are refused unless asked for: ``x < 0`` is False for NaN, so a range check alone
lets it through. Bad types raise TypeError, bad values ValueError; both carry the message.
"""
import math
import numbers
import os
import tempfile

import numpy

from . import backend


def _describe(minimum, maximum, strict, integer):
    kind = "an integer" if integer else "a finite number"
    bounds = []
    if minimum is not None:
        bounds.append(f"{'>' if strict else '>='} {minimum}")
    if maximum is not None:
        bounds.append(f"<= {maximum}")
    return kind + (" " + " and ".join(bounds) if bounds else "")


def check_number(name, value, *, minimum=None, maximum=None, strict=False, integer=False, allow_none=False):
    """``value`` if it is a finite real number (an integer when ``integer``) with
    ``minimum <= value <= maximum`` (``minimum < value`` when ``strict``); raises otherwise.

    Booleans are not numbers here (``True`` as a step count is a mistake), and integers must be
    integers: 2.0 steps is refused rather than rounded. ``allow_none`` lets None through.
    Returns the value unchanged (a Python int or float for NumPy scalars)."""
    if value is None and allow_none:
        return None
    expected = _describe(minimum, maximum, strict, integer)
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise TypeError(f"{name}: expected {expected}, got {value!r}")
    value = int(value) if integer else float(value) if isinstance(value, numpy.floating) else value
    if not integer and not math.isfinite(value):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    low_ok = minimum is None or (value > minimum if strict else value >= minimum)
    if not low_ok or (maximum is not None and value > maximum):
        raise ValueError(f"{name}: expected {expected}, got {value!r}")
    return value


def check_finite_array(name, x):
    """``x`` (a NumPy or CuPy array) if every entry is finite; raises ValueError counting the
    NaNs and infinities otherwise. Integer and boolean arrays are finite by construction."""
    if x.dtype.kind not in "fc":
        return x
    xp = backend.get_array_module(x)
    finite = xp.isfinite(x)
    if bool(finite.all()):
        return x
    nans = int(xp.isnan(x).sum())
    infs = int(x.size - int(finite.sum()) - nans)
    raise ValueError(f"{name}: expected finite values, got {nans} NaN and {infs} infinite of {x.size}")


def check_choice(name, value, choices):
    """``value`` if it is one of ``choices``; raises ValueError listing them otherwise."""
    if value not in choices:
        raise ValueError(f"{name}: expected one of {', '.join(repr(c) for c in choices)}, got {value!r}")
    return value


def check_writable_folder(name, path):
    """Create the folder ``path`` if needed and prove that a file can be written in it (a
    probe file is created and removed), so that a run fails before it starts, not after its
    first epoch. Returns the path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{name}: expected a folder path, got {path!r}")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{name}: expected a folder, got {str(path)!r}, which is an existing file")
    try:
        os.makedirs(path, exist_ok=True)
        fd, probe = tempfile.mkstemp(prefix=".write-test-", dir=path)
        os.close(fd)
        os.remove(probe)
    except OSError as e:
        raise OSError(f"{name}: expected a writable folder, got {str(path)!r} ({e.strerror or e})") from None
    return path


def check_writable_file(name, path):
    """Prove that the file ``path`` can be written (its folder is created if needed; an
    existing file is left as it is). Returns the path."""
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise ValueError(f"{name}: expected a file path, got {path!r}")
    if os.path.isdir(path):
        raise ValueError(f"{name}: expected a file, got {str(path)!r}, which is a folder")
    check_writable_folder(name, os.path.dirname(os.path.abspath(path)))
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise OSError(f"{name}: expected a writable file, got {str(path)!r} (permission denied)")
    return path
