"""The CPU kernels' thread splitting (``minidl.kernels.runtime.parallel``): results must not depend
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
from minidl.kernels.runtime import parallel, workspace

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
@given(cfg=conv_configs(), layout=st.sampled_from(["cnhw", "chwn", "nhwc", "fft"]), k=st.integers(2, 4))
def test_conv_is_identical_for_any_thread_count(cfg, layout, k):
    """im2col in its three layouts, and the FFT algorithm (with several scipy workers)."""
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


@settings(max_examples=25, deadline=None)
@given(n=st.integers(0, 40), k=st.integers(1, 4))
def test_for_each_item_visits_every_item_once_with_one_state_per_thread(n, k):
    """Items are handed out dynamically; each thread enters its worker context once, and BLAS
    runs single-threaded while the items run on several threads (restored afterwards)."""
    from minidl.kernels.runtime import blas
    seen, entered, blas_counts = np.zeros(n, int), [], set()
    lock = threading.Lock()

    @contextlib.contextmanager
    def context():
        state = object()
        with lock:
            entered.append(state)
        yield state

    def body(i, state):
        with lock:
            seen[i] += 1
            assert state in entered
            blas_counts.add(blas.get_num_threads())
        time.sleep(0.0005)  # long enough that several threads take items
    before = blas.set_num_threads(2)
    try:
        with forced_split(k):
            parallel.for_each_item(n, body, nbytes=10 ** 9, worker_context=context)
        assert blas.get_num_threads() == 2
    finally:
        blas.set_num_threads(before)
    assert (seen == 1).all()
    assert len(entered) == (1 if min(k, n) <= 1 else min(k, n))
    if min(k, n) > 1:
        assert blas_counts == {1}


def test_for_each_item_propagates_errors_and_restores_blas(threads):
    from minidl.kernels.runtime import blas
    threads(3)
    before = blas.set_num_threads(2)

    def body(i, _):
        if i == 5:
            raise KeyError("item 5")
    try:
        with pytest.raises(KeyError, match="item 5"):
            parallel.for_each_item(9, body, nbytes=10 ** 9)
        assert blas.get_num_threads() == 2
    finally:
        blas.set_num_threads(before)


@settings(max_examples=20, deadline=None)
@given(cfg=conv_configs(max_batch=7), layout=st.sampled_from(["cnhw", "chwn", "nhwc"]), k=st.integers(2, 4),
       need=st.sampled_from([(True, True), (True, False), (False, True)]))
def test_conv_chunks_on_several_threads_match_one_thread(cfg, layout, k, need):
    """im2col's chunks of one image each, shared out to k threads (``for_each_item``): the
    outputs and gradients are bitwise those of one thread, and the reference's."""
    from minidl.kernels import conv_im2col
    x, w, gy = conv_data(cfg)
    (kh, kw), (Ho, Wo) = cfg["kernel"], cfg["out_shape"][2:]
    old = conv_im2col.CHUNK_BYTES
    conv_im2col.CHUNK_BYTES = kh * kw * cfg["x_shape"][1] * Ho * Wo * 8   # one image per chunk
    try:
        results = []
        for n in (1, k):
            with forced_split(n):
                y, cache = conv2d_forward(x, w, cfg["stride"], cfg["padding"], layout=layout)
                results.append((y,) + conv2d_backward(gy, cache, *need))
    finally:
        conv_im2col.CHUNK_BYTES = old
    for serial, threaded in zip(*results):
        assert (serial is None and threaded is None) or np.array_equal(serial, threaded)
    np.testing.assert_allclose(results[1][0], ref_conv(x, w, cfg["stride"], cfg["padding"]), rtol=1e-10, atol=1e-10)
    rgx, rgw = ref_conv_grads(x, w, gy, cfg["stride"], cfg["padding"])
    for got, want, needed in zip(results[1][1:], (rgx, rgw), need):
        if needed:
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("k", [2, 3])
def test_batch_norm_does_not_depend_on_the_thread_count(k):
    """Batch norm's per-chunk partial sums are added in chunk order, so forward and backward are
    bitwise the same on one thread and on k."""
    from minidl import Tensor
    import minidl.functional as F
    from minidl.kernels import batch_norm_cpu
    rng = np.random.default_rng(1)
    x0 = rng.standard_normal((9, 3, 4, 5)) * 2 + 1
    g0 = rng.standard_normal(x0.shape)
    old_bn = batch_norm_cpu.CHUNK_BYTES
    batch_norm_cpu.CHUNK_BYTES = 2 * x0[0].nbytes
    try:
        results = []
        for n in (1, k):
            with forced_split(n):
                x, gamma, beta = Tensor(x0, requires_grad=True), Tensor(np.ones(3), requires_grad=True), Tensor(np.zeros(3), requires_grad=True)
                y = F.relu(F.batch_norm(x, np.zeros(3), np.ones(3), gamma, beta, training=True))
                y.backward(g0)
                results.append([y.array, x.grad.array, gamma.grad.array, beta.grad.array])
    finally:
        batch_norm_cpu.CHUNK_BYTES = old_bn
    for serial, threaded in zip(*results):
        assert np.array_equal(serial, threaded)


@settings(max_examples=30, deadline=None)
@given(shapes=st.sampled_from([((5, 3), (3, 7)), ((9, 4), (4, 2)), ((1, 4), (4, 9)), ((3, 5, 4), (3, 4, 6)),
                               ((4,), (4, 3)), ((2, 3, 4), (4, 5)), ((6, 2), (2,))]),
       k=st.integers(1, 4), transposed=st.booleans(), out=st.booleans(), complex_=st.booleans())
def test_matmul_blocks_match_numpy(shapes, k, transposed, out, complex_):
    """``parallel.matmul`` cut into blocks along rows, columns or the stack (every product
    forced to split) is bitwise the same on 1 and k threads and equals numpy.matmul; the
    shapes it does not cut (1-D, broadcast) are one numpy call."""
    rng = np.random.default_rng(0)
    sa, sb = shapes
    a, b = rng.standard_normal(sa), rng.standard_normal(sb)
    if complex_:
        a = a + 1j * rng.standard_normal(sa)
    if transposed and b.ndim >= 2:  # a transposed view, as Linear passes weight.T
        b = np.ascontiguousarray(np.swapaxes(b, -1, -2)).swapaxes(-1, -2)
    want = np.matmul(a, b)
    old, parallel.MATMUL_SPLIT_MACS = parallel.MATMUL_SPLIT_MACS, 0
    try:
        results = []
        for n in (1, k):
            with forced_split(n):
                dst = np.empty(want.shape, want.dtype) if out else None
                got = parallel.matmul(a, b, out=dst)
                assert dst is None or got is dst
                results.append(got)
    finally:
        parallel.MATMUL_SPLIT_MACS = old
    assert np.array_equal(results[0], results[1])
    np.testing.assert_allclose(results[1], want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("algorithm", ["fft"])
def test_split_products_inside_conv_algorithms_match_reference(algorithm):
    """The FFT convolution's per-frequency products go through ``parallel.matmul``, into
    transposed output views; forced to split on 3 threads they still give the reference's
    outputs and gradients."""
    from minidl.kernels import conv_im2col  # noqa: F401  (the layouts' module, loaded as in use)
    rng = np.random.default_rng(3)
    x, w = rng.standard_normal((3, 4, 6, 5)), rng.standard_normal((5, 4, 3, 3))
    gy = rng.standard_normal((3, 5, 6, 5))
    old, parallel.MATMUL_SPLIT_MACS = parallel.MATMUL_SPLIT_MACS, 0
    try:
        with forced_split(3):
            y, cache = conv2d_forward(x, w, (1, 1), (1, 1), algorithm=algorithm)
            gx, gw = conv2d_backward(gy, cache)
    finally:
        parallel.MATMUL_SPLIT_MACS = old
    np.testing.assert_allclose(y, ref_conv(x, w, (1, 1), (1, 1)), rtol=1e-10, atol=1e-10)
    rgx, rgw = ref_conv_grads(x, w, gy, (1, 1), (1, 1))
    np.testing.assert_allclose(gx, rgx, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(gw, rgw, rtol=1e-10, atol=1e-10)
