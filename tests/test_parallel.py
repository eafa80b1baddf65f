"""The CPU kernels' thread splitting (``minidl.kernels.parallel``): results must not depend
on the thread count, every index is visited exactly once, and errors propagate."""
import contextlib
import os
import threading
import time
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minidl.kernels import conv2d_backward, conv2d_forward, max_pool2d_backward, max_pool2d_forward
from minidl.kernels import parallel, workspace

from test_kernels import conv_configs, conv_data, pool_configs, pool_data, ref_conv, ref_conv_grads, ref_pool


@contextlib.contextmanager
def forced_split(n):
    """``n`` threads and a 1-byte work threshold, so even tiny arrays are split; both are
    restored afterwards. (A context manager, as hypothesis tests cannot use fixtures per example.)"""
    old_min, parallel.MIN_BYTES_PER_THREAD = parallel.MIN_BYTES_PER_THREAD, 1
    previous = parallel.set_num_threads(n)
    try:
        yield
    finally:
        parallel.set_num_threads(previous)
        parallel.MIN_BYTES_PER_THREAD = old_min


@pytest.fixture
def threads():
    """Splitting forced on; the test picks the thread count by calling ``threads(n)``."""
    with forced_split(parallel.get_num_threads()):
        yield parallel.set_num_threads


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 50), k=st.integers(1, 5), nbytes=st.integers(0, 10))
def test_parallel_for_visits_every_index_once(n, k, nbytes):
    seen = np.zeros(n, int)
    lock = threading.Lock()

    def body(a, b):
        with lock:
            seen[a:b] += 1
    with forced_split(k):
        parallel.parallel_for(n, body, nbytes)
    assert (seen == 1).all()


def test_small_work_stays_on_the_calling_thread(threads):
    threads(4)
    parallel.MIN_BYTES_PER_THREAD = 1 << 20
    callers = []
    parallel.parallel_for(8, lambda a, b: callers.append(threading.current_thread()), nbytes=1000)
    assert callers == [threading.current_thread()]


def test_work_is_spread_over_threads(threads):
    threads(3)
    names, barrier = set(), threading.Barrier(3, timeout=10)

    def body(a, b):
        names.add(threading.current_thread().name)
        barrier.wait()  # only passes if three chunks run at the same time
    parallel.parallel_for(9, body, nbytes=10 ** 9)
    assert len(names) == 3


def _finishes(fn, timeout=20):
    """Run ``fn`` in a thread; True if it returned within ``timeout`` s (a hang fails the test
    instead of blocking the suite). Exceptions are re-raised."""
    errors = []

    def run():
        try:
            fn()
        except BaseException as e:  # noqa: BLE001 - handed back to the test
            errors.append(e)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    if errors:
        raise errors[0]
    return not t.is_alive()


def test_errors_propagate_and_nesting_runs_serially(threads):
    threads(3)

    def failing(a, b):
        if a > 0:
            raise RuntimeError(f"chunk {a}")
    with pytest.raises(RuntimeError, match="chunk"):
        parallel.parallel_for(9, failing, nbytes=10 ** 9)

    out = np.zeros(12, int)

    def outer(a, b):
        def inner(c, d):
            out[a + c:a + d] += 1
        parallel.parallel_for(b - a, inner, nbytes=10 ** 9)
    assert _finishes(lambda: parallel.parallel_for(12, outer, nbytes=10 ** 9))
    assert (out == 1).all()


def test_thread_count_changes_while_work_runs(threads):
    """set_num_threads from another thread, or from inside a chunk, never breaks a call."""
    threads(2)
    stop = threading.Event()

    def flip():
        while not stop.is_set():
            parallel.set_num_threads(3)
            parallel.set_num_threads(2)
    flipper = threading.Thread(target=flip, daemon=True)
    flipper.start()
    try:
        def many():
            for _ in range(300):
                seen = np.zeros(30, int)
                parallel.parallel_for(30, lambda a, b: seen.__setitem__(slice(a, b), seen[a:b] + 1), 10 ** 9)
                assert (seen == 1).all()
        assert _finishes(many)
    finally:
        stop.set()
        flipper.join()

    def changes_count(a, b):
        if a > 0:
            parallel.set_num_threads(4)
    assert _finishes(lambda: parallel.parallel_for(9, changes_count, 10 ** 9))
    seen = np.zeros(9, int)
    parallel.parallel_for(9, lambda a, b: seen.__setitem__(slice(a, b), 1), 10 ** 9)
    assert (seen == 1).all()


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_pool_works_in_a_forked_child(threads):
    threads(3)
    parallel.parallel_for(6, lambda a, b: None, 10 ** 9)   # the parent's pool exists
    with warnings.catch_warnings():  # Python >= 3.12 warns about fork() with threads running
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:  # child: exit 0 only if a split call completes
        done = threading.Event()
        threading.Thread(target=lambda: (parallel.parallel_for(6, lambda a, b: None, 10 ** 9), done.set()),
                         daemon=True).start()
        os._exit(0 if done.wait(10) else 1)
    deadline = time.time() + 20
    while time.time() < deadline:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            assert os.WEXITSTATUS(status) == 0
            return
        time.sleep(0.05)
    os.kill(pid, 9)
    pytest.fail("parallel_for hung in a forked child")


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_set_num_threads_rejects_bad_counts(bad):
    with pytest.raises(ValueError, match="set_num_threads: n must be an integer >= 1"):
        parallel.set_num_threads(bad)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_assign_and_workspace_copy(threads, axis):
    threads(3)
    a = np.arange(4 * 5 * 6, dtype=np.float32).reshape(4, 5, 6).transpose(2, 0, 1)
    out = workspace.copy(a, axis=axis)
    assert out.flags.c_contiguous and np.array_equal(out, a)


@settings(max_examples=30, deadline=None)
@given(cfg=conv_configs(), layout=st.sampled_from(["cnhw", "chwn", "fft"]), k=st.integers(2, 4))
def test_conv_is_identical_for_any_thread_count(cfg, layout, k):
    """im2col in both layouts, and the FFT algorithm (with several scipy workers)."""
    if layout == "fft":
        cfg = dict(cfg, stride=(1, 1))
        x, w, _ = conv_data(cfg)
        gy = np.random.default_rng(cfg["seed"]).standard_normal(ref_conv(x, w, (1, 1), cfg["padding"]).shape)
        kwargs = dict(algorithm="fft")
    else:
        x, w, gy = conv_data(cfg)
        kwargs = dict(layout=layout)
    results = []
    for n in (1, k):
        with forced_split(n):
            y, cache = conv2d_forward(x, w, cfg["stride"], cfg["padding"], **kwargs)
            gx, gw = conv2d_backward(gy, cache)
        results.append((y, gx, gw))
    for serial, threaded in zip(*results):
        assert np.array_equal(serial, threaded)
    np.testing.assert_allclose(results[1][0], ref_conv(x, w, cfg["stride"], cfg["padding"]), rtol=1e-10, atol=1e-10)
    rgx, rgw = ref_conv_grads(x, w, gy, cfg["stride"], cfg["padding"])
    np.testing.assert_allclose(results[1][1], rgx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(results[1][2], rgw, rtol=1e-10, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(cfg=pool_configs(), k=st.integers(2, 4))
def test_max_pool_is_identical_for_any_thread_count(cfg, k):
    x, gy = pool_data(cfg)
    results = []
    for n in (1, k):
        with forced_split(n):
            y, cache = max_pool2d_forward(x, cfg["kernel"], cfg["stride"], cfg["padding"])
            results.append((y.copy(), cache.argmax.copy(), max_pool2d_backward(gy, cache).copy()))
    for serial, threaded in zip(*results):
        assert np.array_equal(serial, threaded)
    ry, rgx = ref_pool(x, cfg["kernel"], cfg["stride"], cfg["padding"], gy, mode="max")
    np.testing.assert_allclose(results[1][0], ry, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(results[1][2], rgx, rtol=1e-12, atol=1e-12)
