"""Running the CPU kernels' copies and loops on several cores.

OpenBLAS spreads every matrix product over all cores, but a NumPy copy or ufunc call runs
on one, and in a training step these single-core loops (im2col and col2im, the layout
transposes, pooling) take a large share of the time (``benchmarks/README.md``). NumPy
releases the GIL inside such loops, so the same loop run on disjoint slices of the arrays
from a few Python threads uses the other cores.

:func:`parallel_for` splits an index range ``range(n)`` (an axis of the arrays) into
contiguous chunks and calls ``body(start, stop)`` for each, the first chunk on the calling
thread. :func:`for_each_item` hands out whole items (a convolution's chunks of images) one at a
time to whichever thread is free, and :func:`matmul` cuts a large product into blocks. The kernels own the cores: while they run
on several threads, BLAS is single-threaded (set through ``blas``), because an idle OpenBLAS
worker busy-waits after each product on a core the next copy needs. Each chunk does exactly the arithmetic a serial call would do on its slice and
writes only its own part of the outputs, so results never depend on the thread count.

The thread count comes from ``MINIDL_NUM_THREADS``, else ``OMP_NUM_THREADS`` or
``OPENBLAS_NUM_THREADS`` (the BLAS setting), else the cores this process may use;
:func:`set_num_threads` changes it at run time. Calls from inside a chunk run serially,
so nesting cannot deadlock the pool.
"""
import contextlib
import itertools
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

import numpy

from . import blas

# Below this many bytes of work per thread, waking a thread costs more than it saves.
MIN_BYTES_PER_THREAD = 1 << 20

_state = threading.local()
_pool = None
_pool_lock = threading.Lock()


def _default_threads():
    for var in ("MINIDL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdecimal() and int(value) > 0:
            return int(value)
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


_num_threads = _default_threads()


def get_num_threads():
    """How many threads the CPU kernels split their loops over."""
    return _num_threads


def set_num_threads(n):
    """Use ``n`` (>= 1) threads for the CPU kernels' loops; returns the previous count.
    Safe at any time, even from inside a chunk: work already handed out still finishes."""
    global _num_threads, _pool
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"set_num_threads: n must be an integer >= 1, got {n!r}")
    with _pool_lock:
        previous, _num_threads = _num_threads, n
        if _pool is not None and n != previous:
            # No join: the caller may be a pool thread. The old threads finish their queue
            # and exit.
            _pool.shutdown(wait=False)
            _pool = None
    return previous


def _submit(chunks, body):
    """Hand ``chunks`` to the pool, all under the lock, so that set_num_threads cannot shut
    the pool down between two submissions."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=max(1, _num_threads - 1),
                                       thread_name_prefix="minidl-kernel", initializer=_mark_worker)
        return [_pool.submit(body, a, b) for a, b in chunks]


def _reset_after_fork():
    # A forked child inherits the pool object but not its threads: start afresh.
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def _mark_worker():
    _state.inside = True


def parallel_for(n, body, nbytes):
    """Call ``body(start, stop)`` on consecutive chunks covering ``range(n)``, in parallel.

    ``nbytes`` is the size of the work (bytes the loop writes, roughly): it decides how many
    threads are worth waking. Exceptions raised by any chunk propagate to the caller.
    """
    k = min(_num_threads, n, max(1, int(nbytes) // MIN_BYTES_PER_THREAD))
    if k <= 1 or getattr(_state, "inside", False):
        body(0, n)
        return
    bounds = [n * i // k for i in range(k + 1)]
    futures = []
    _state.inside = True
    try:
        futures = _submit([(bounds[i], bounds[i + 1]) for i in range(1, k)], body)
        body(bounds[0], bounds[1])
    finally:
        _state.inside = False
        wait(futures)  # no chunk may outlive the call, even when this one raised
    for f in futures:
        f.result()


def batch_chunks(N, bytes_per_image, chunk_bytes, min_chunks=1):
    """Consecutive image ranges (n0, n1) covering range(N), all but the last of equal size: about
    ``chunk_bytes`` of work each, and at least ``min_chunks`` of them where the batch has as
    many images. The cut depends on the shapes only, never on the thread count, so results
    computed chunk by chunk are the same for any number of threads."""
    n = max(1, min(N, chunk_bytes // max(1, bytes_per_image), -(-N // max(1, min_chunks))))
    return [(n0, min(N, n0 + n)) for n0 in range(0, N, n)]


def assign(dst, src, axis=0):
    """``dst[...] = src`` for arrays of equal shape, split along ``axis``. For a transposing
    copy, pick an axis that is outer in both arrays' memory order, so that each thread
    reads and writes whole blocks."""
    if dst.ndim == 0:
        dst[...] = src
        return
    lead = (slice(None),) * axis

    def body(start, stop):
        dst[lead + (slice(start, stop),)] = src[lead + (slice(start, stop),)]
    parallel_for(dst.shape[axis], body, dst.nbytes)


def for_each_item(n, body, nbytes, worker_context=contextlib.nullcontext):
    """Call ``body(i, state)`` for every ``i`` in ``range(n)``, the items handed out one at a
    time to whichever thread is free (items may differ in cost, and a shared machine slows
    threads unevenly).

    For work made of whole matrix products, such as a convolution's chunks of images: the
    products run on the kernel threads, so BLAS is single-threaded while they do. Its own
    worker threads would otherwise spin on the same cores after every product (OpenBLAS
    busy-waits for a while before it sleeps) and halve the speed of everything else there.
    Each thread enters ``worker_context()`` once and passes what it yields as ``state`` (its
    own scratch buffers, say). Each item must compute the same thing whichever thread runs
    it, so results never depend on the thread count or the order of completion.
    """
    if getattr(_state, "inside", False):  # already on a kernel thread, BLAS already single
        with worker_context() as state:
            for i in range(n):
                body(i, state)
        return
    k = min(_num_threads, n, max(1, int(nbytes) // MIN_BYTES_PER_THREAD))
    if k <= 1:
        # One thread does the items; BLAS stays single-threaded all the same when the kernels
        # use several threads, so that no BLAS worker is left spinning on their cores.
        with (blas.num_threads(1) if _num_threads > 1 else contextlib.nullcontext()), worker_context() as state:
            for i in range(n):
                body(i, state)
        return
    counter = itertools.count()  # next() on it is atomic under the GIL

    def worker(_start, _stop):
        with worker_context() as state:
            while (i := next(counter)) < n:
                body(i, state)
    with blas.num_threads(1):
        parallel_for(k, worker, k * MIN_BYTES_PER_THREAD)


# Products with fewer multiply-adds than this run as one BLAS call, as NumPy would run them.
MATMUL_SPLIT_MACS = 1 << 25
MATMUL_BLOCKS = 4


def matmul(a, b, out=None):
    """``a @ b`` for NumPy matrices (2-D) or equal-length stacks of them (3-D), split into
    blocks that the kernel threads compute as single-threaded BLAS calls (``for_each_item``),
    so that no BLAS worker thread is left spinning on a core the kernels need next.

    A 2-D product is cut along the longer side of the result, rows or columns (then every
    block reads only its columns of ``b``); a stack is cut along the stack axis. The cut
    depends on the shapes only (``MATMUL_BLOCKS`` pieces), never on the thread count, and
    each block is an ordinary product of its part, so the result is deterministic. Small
    products and other shapes (1-D, broadcast stacks) are one ``numpy.matmul`` call, on one
    BLAS thread too; CuPy arrays use their own ``@``.
    """
    if not (isinstance(a, numpy.ndarray) and isinstance(b, numpy.ndarray)):
        return a @ b if out is None else _xp_matmul(a, b, out)
    splittable = a.ndim == b.ndim and a.ndim in (2, 3) and (a.ndim == 2 or a.shape[0] == b.shape[0])
    if not splittable or a.size * b.shape[-1] < MATMUL_SPLIT_MACS:
        # One call, but still on one BLAS thread while the kernels use several threads.
        with (blas.num_threads(1) if _num_threads > 1 else contextlib.nullcontext()):
            return numpy.matmul(a, b) if out is None else numpy.matmul(a, b, out=out)
    M, K = a.shape[-2:]
    Nc = b.shape[-1]
    if out is None:
        out = numpy.empty(a.shape[:-1] + (Nc,), numpy.result_type(a, b))
    if a.ndim == 3:
        length, cut = a.shape[0], lambda s: (a[s], b[s], out[s])
    elif M >= Nc:
        length, cut = M, lambda s: (a[s], b, out[s])
    else:
        length, cut = Nc, lambda s: (a, b[:, s], out[:, s])
    pieces = min(MATMUL_BLOCKS, length)
    bounds = [length * i // pieces for i in range(pieces + 1)]

    def block(i, _):
        x, y, o = cut(slice(bounds[i], bounds[i + 1]))
        numpy.matmul(x, y, out=o)
    # Compute-bound: one "byte" of work per multiply-add, so that every split product is shared.
    for_each_item(pieces, block, a.size * Nc)
    return out


def _xp_matmul(a, b, out):
    out[...] = a @ b
    return out
