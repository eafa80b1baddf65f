"""Reusable CPU scratch buffers for the kernels, so that large temporaries do not pay page faults.

A fresh NumPy array of tens of MB is backed by new pages from the OS, and the first write to
each page faults and zero-fills it. A kernel's temporaries (padded inputs, im2col gradients,
spectra, masks) are as large as its outputs, and they are needed again at the next call.

Ownership is explicit: a kernel takes its temporaries from a :class:`Scratch`, used as a
``with`` block, and they go back to the pool when the block ends. So a scratch array must not
outlive the block (not returned, not kept in a cache); outputs and caches are ordinary arrays
(``numpy.empty`` or :func:`copy`). ``python benchmarks/bench_workspace.py`` measures whether the
pool pays (figures in ``benchmarks/README.md``); ``enabled = False`` turns it off.
"""
import math
import threading

import numpy

from . import parallel

MIN_BYTES = 1 << 20        # below this, malloc's own free lists are already fast
# Free buffers beyond this total are released to the OS, the least recently returned first. A
# training step of the zoo's models pools at most ~100 MiB (preact_resnet18, batch 128); an
# attack whose batch shrinks as points break asks for new sizes all the time, and a larger cap
# only let its pool grow to this size (1 GiB per process before).
MAX_POOL_BYTES = 256 << 20
# A request takes the smallest free buffer that holds it and is at most this many times its
# size, whatever the dtype and shape it held before: kernels of other sizes share buffers, so
# the pool holds far fewer bytes than one buffer per distinct size would (the peak memory of a
# training step, ``benchmarks/README.md``), and no request ties up a buffer much larger than it.
FIT_FACTOR = 2

enabled = True
_lock = threading.Lock()
_free = []                 # flat 1-D arrays no Scratch holds, least recently returned first


class Scratch:
    """Temporary arrays for the duration of a ``with`` block::

        with workspace.Scratch() as scratch:
            xpad = scratch.empty((C, N, Hp, Wp), dtype)
            ...                                  # xpad must not escape the block
    """

    def __init__(self):
        self._taken = []

    def __enter__(self):
        return self

    def empty(self, shape, dtype):
        """Like ``numpy.empty(shape, dtype)`` (C order), possibly the front of a reused buffer."""
        dtype = numpy.dtype(dtype)
        size = math.prod(shape)
        if not enabled or size * dtype.itemsize < MIN_BYTES:
            return numpy.empty(shape, dtype)
        nbytes = size * dtype.itemsize
        with _lock:
            fits = [i for i, b in enumerate(_free) if nbytes <= b.nbytes <= FIT_FACTOR * nbytes]
            i = min(fits, key=lambda i: _free[i].nbytes) if fits else None
            buf = None if i is None else _free.pop(i)
        if buf is None:
            buf = numpy.empty(nbytes, numpy.uint8)
        self._taken.append(buf)
        return buf[:nbytes].view(dtype).reshape(shape)

    def zeros(self, shape, dtype):
        out = self.empty(shape, dtype)
        out.fill(0)
        return out

    def copy(self, a, dtype=None, axis=0):
        """A C-contiguous scratch copy of ``a``, made on several cores when it is large."""
        out = self.empty(a.shape, a.dtype if dtype is None else dtype)
        parallel.assign(out, a, axis)
        return out

    def __exit__(self, *exc):
        with _lock:
            _free.extend(self._taken)
            self._taken = []
            total = sum(b.nbytes for b in _free)
            while total > MAX_POOL_BYTES:
                total -= _free.pop(0).nbytes
        return False


def copy(a, dtype=None, axis=0):
    """A new C-contiguous copy of ``a`` (an ordinary array, never ``a`` itself), made on
    several cores when it is large (``parallel.assign``, split along ``axis``)."""
    out = numpy.empty(a.shape, a.dtype if dtype is None else dtype)
    parallel.assign(out, a, axis)
    return out


def release():
    """Drop every pooled buffer (returns the bytes released)."""
    with _lock:
        freed = sum(b.nbytes for b in _free)
        _free.clear()
        return freed
