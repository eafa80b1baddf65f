"""Running the CPU kernels' copies and elementwise loops on several cores.

OpenBLAS spreads every matrix product over all cores, but a NumPy copy or ufunc call runs
on one, and in a training step these single-core loops (im2col and col2im, the layout
transposes, pooling) take a large share of the time (``benchmarks/README.md``). NumPy
releases the GIL inside such loops, so the same loop run on disjoint slices of the arrays
from a few Python threads uses the other cores.

:func:`parallel_for` splits an index range ``range(n)`` (an axis of the arrays) into
contiguous chunks and calls ``body(start, stop)`` for each, the first chunk on the calling
thread. Each chunk does exactly the arithmetic a serial call would do on its slice and
writes only its own part of the outputs, so results never depend on the thread count.

The thread count comes from ``MINIDL_NUM_THREADS``, else ``OMP_NUM_THREADS`` or
``OPENBLAS_NUM_THREADS`` (the BLAS setting), else the cores this process may use;
:func:`set_num_threads` changes it at run time. Calls from inside a chunk run serially,
so nesting cannot deadlock the pool.
"""
import os
import threading
from concurrent.futures import ThreadPoolExecutor, wait

# Below this many bytes of work per thread, waking a thread costs more than it saves.
MIN_BYTES_PER_THREAD = 1 << 20

_state = threading.local()
_pool = None
_pool_lock = threading.Lock()


def _default_threads():
    for var in ("MINIDL_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
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
