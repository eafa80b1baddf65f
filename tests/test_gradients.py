"""Property tests: the gradient of every differentiable op agrees with float64 central
finite differences (``minidl.testing.gradcheck``) on shapes, parameters and values drawn by
hypothesis, and its forward value agrees with a plain NumPy reference written here (loops
for convolution and pooling, independent of ``minidl.kernels``). Where an op has a kink
(relu, abs, clip, max, maximum, max-pooling) the values are drawn away from it
(``tensors(away_from=..., distinct=True)``), so that the finite differences measure the true
derivative. The strategies are the public ones of ``minidl.testing.strategies``.

Where a test draws its dtype (``FLOATS``), float32 inputs are re-run in float64 by gradcheck
and their float32 gradient is compared with the float64 one, which checks the float32 path too.
Each test runs on every backend in ``conftest.BACKENDS`` (CUDA ones skip without a GPU).
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import minidl as md
import minidl.functional as F
from minidl.autograd import Function
from minidl.kernels import batch_norm_cpu, reference
from minidl.ops import activation, arithmetic, loss, matmul, reduce, select, shape, unary
from minidl.ops import pad as pad_op
from minidl.ops import conv as conv_op
from minidl.ops import pool as pool_op
from minidl.tensor import Cast, Tensor, Transfer
from minidl.testing import check_backward, gradcheck
from minidl.testing.strategies import (advanced_indices, basic_indices, broadcastable_shapes, conv_configs,
                                       pool_configs, shapes, tensors, valid_axes)

from conftest import examples, host, leaf, on

FAST = examples(25)
SLOW = examples(15)
FLOATS = st.sampled_from([np.float32, np.float64])


# Central differences with h = 1e-6 in float64 are accurate to ~1e-9 here (moderate values,
# small shapes), so the tolerances can be much tighter than gradcheck's defaults: a gradient
# that is off by a factor 1.0001 fails.
TOL = dict(atol=1e-7, rtol=1e-6)
FORWARD_TOL = {np.dtype(np.float64): dict(rtol=1e-10, atol=1e-12), np.dtype(np.float32): dict(rtol=1e-5, atol=1e-5)}


def check(device, fn, *inputs, ref=None, **kw):
    """gradcheck ``fn`` with every Tensor input moved to ``device``; with ``ref``, also compare
    the forward value with ``ref(*float64_numpy_inputs)``, to the inputs' precision."""
    moved = [on(device, x) if isinstance(x, Tensor) else x for x in inputs]
    if ref is not None:
        out = fn(*moved)
        want = ref(*[x.numpy().astype(np.float64) if isinstance(x, Tensor) and x.dtype.kind == "f"
                     else x.numpy() if isinstance(x, Tensor) else x for x in inputs])
        dtype = np.result_type(*[x.dtype for x in inputs if isinstance(x, Tensor) and x.dtype.kind == "f"])
        assert out.shape == np.shape(want)
        assert out.dtype == dtype
        np.testing.assert_allclose(host(out), want, **FORWARD_TOL[dtype])
    assert gradcheck(fn, *moved, **{**TOL, **kw}) is True


def const(x):
    """The same values as a constant (no gradient wanted)."""
    return x.detach()


def split(t, *shapes_):
    """Cut the values of ``t`` into leaf Tensors of ``shapes_`` (same dtype and device)."""
    flat, out, start = t.array.reshape(-1), [], 0
    for shape in shapes_:
        n = int(np.prod(shape))
        out.append(Tensor(flat[start:start + n].reshape(shape).copy(), requires_grad=True))
        start += n
    return out


# --- elementwise arithmetic with broadcasting ----------------------------------------------------
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(data=st.data(), shapes_=broadcastable_shapes(2), dtype=FLOATS)
def test_binary_broadcasting(device, op, data, shapes_, dtype):
    sa, sb = shapes_
    a = data.draw(tensors(shape=sa, dtype=dtype, device=device))
    b = data.draw(tensors(shape=sb, dtype=dtype, device=device, away_from=0.0 if op == "div" else None, margin=0.5))
    # both operands, then each alone (the other a constant), so needs_grad paths are covered
    check(device, BINARY[op], a, b, ref=BINARY[op])
    check(device, BINARY[op], a, const(b))
    check(device, BINARY[op], const(a), b)


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(x=tensors(shape=(2, 3), away_from=0.0, margin=0.5), c=st.floats(0.5, 3.0))
def test_binary_with_python_scalars(device, op, x, c):
    f = BINARY[op]
    check(device, lambda t: f(t, c), x, ref=lambda t: f(t, c))
    check(device, lambda t: f(c, t), x, ref=lambda t: f(c, t))


@FAST
@given(x=tensors())
def test_neg(device, x):
    check(device, lambda t: -t, x, ref=lambda a: -a)


@FAST
@given(data=st.data(), shape=shapes(), p=st.sampled_from([2, 3, -1, 0.5, 1.7, -1.5]))
def test_pow(device, data, shape, p):
    if float(p).is_integer():  # any sign; away from 0 when the exponent is negative
        base = data.draw(tensors(shape=shape, away_from=0.0 if p < 0 else None, margin=0.3))
    else:  # fractional powers need a positive base
        base = data.draw(tensors(shape=shape, min_value=0.3, max_value=3.0))
    check(device, lambda t: t ** p, base, ref=lambda a: a ** p)


@FAST
@given(data=st.data(), shapes_=broadcastable_shapes(2))
def test_maximum(device, data, shapes_):
    # every value of a and of b pairwise 0.1 apart: no a[i] == b[j], whatever broadcasts
    sa, sb = shapes_
    both = data.draw(tensors(shape=(int(np.prod(sa)) + int(np.prod(sb)),), distinct=True, margin=0.1,
                             min_value=-8.0, max_value=8.0))
    a, b = split(both, sa, sb)
    check(device, lambda u, v: u.maximum(v), a, b, ref=np.maximum)


# --- matmul ----------------------------------------------------------------------------------------
@st.composite
def matmul_shapes(draw):
    n, k, m, b, c = (draw(st.integers(1, 4)) for _ in range(5))
    return draw(st.sampled_from([
        ((n, k), (k, m)),                 # 2-D
        ((b, n, k), (b, k, m)),           # batched
        ((b, n, k), (k, m)),              # batched @ matrix (b broadcast)
        ((n, k), (b, k, m)),              # matrix @ batched (a broadcast)
        ((c, 1, n, k), (b, k, m)),        # broadcast batch axes
        ((k,), (k, m)),                   # vector @ matrix
        ((n, k), (k,)),                   # matrix @ vector
        ((k,), (k,)),                     # dot product
        ((k,), (b, k, m)),                # vector @ batched
        ((b, n, k), (k,)),                # batched @ vector
    ]))


@FAST
@given(data=st.data(), sh=matmul_shapes(), dtype=FLOATS)
def test_matmul(device, data, sh, dtype):
    a, b = (data.draw(tensors(shape=s, dtype=dtype, device=device)) for s in sh)
    check(device, lambda u, v: u @ v, a, b, ref=np.matmul)
    check(device, lambda u: u @ const(b), a)


# --- unary math ------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), shape=shapes())
def test_exp_log_sqrt_abs(device, data, shape):
    positive = tensors(shape=shape, min_value=0.1, max_value=5.0, device=device)
    check(device, lambda t: t.exp(), data.draw(tensors(shape=shape, device=device)), ref=np.exp)
    check(device, lambda t: t.log(), data.draw(positive), ref=np.log)
    check(device, lambda t: t.sqrt(), data.draw(positive), ref=np.sqrt)
    check(device, lambda t: t.abs(), data.draw(tensors(shape=shape, away_from=0.0, device=device)), ref=np.abs)


@FAST
@given(data=st.data(), shape=shapes(), bounds=st.tuples(st.one_of(st.none(), st.integers(-8, 0)),
                                                        st.one_of(st.none(), st.integers(0, 8))))
def test_clip(device, data, shape, bounds):
    lo, hi = (None if b is None else b * 0.25 for b in bounds)
    assume(lo is not None or hi is not None)
    x = data.draw(tensors(shape=shape, away_from=[b for b in (lo, hi) if b is not None], margin=0.1))
    check(device, lambda t: t.clip(lo, hi), x,
          ref=lambda a: np.minimum(np.maximum(a, -np.inf if lo is None else lo), np.inf if hi is None else hi))


# --- reductions ------------------------------------------------------------------------------------
@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@FAST
@given(data=st.data(), shape=shapes(max_dims=4, max_side=3), keepdims=st.booleans(), dtype=FLOATS)
def test_reductions(device, op, data, shape, keepdims, dtype):
    axis = data.draw(valid_axes(len(shape)))
    x = data.draw(tensors(shape=shape, dtype=dtype, device=device, distinct=op == "max"))
    check(device, lambda t: getattr(t, op)(axis=axis, keepdims=keepdims), x,
          ref=lambda a: getattr(np, op)(a, axis=axis, keepdims=keepdims))


# --- shape ops ---------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), shape=shapes(max_dims=4, max_side=3))
def test_reshape_transpose_flatten(device, data, shape):
    x = data.draw(tensors(shape=shape, device=device))
    size = int(np.prod(shape))
    target = data.draw(st.sampled_from([(-1,), (size, 1), (1, size), tuple(reversed(shape)), (1,) + shape]))
    check(device, lambda t: t.reshape(target) * t.reshape(target), x, ref=lambda a: a.reshape(target) ** 2)
    perm = tuple(data.draw(st.permutations(range(len(shape)))))
    check(device, lambda t: t.transpose(perm), x, ref=lambda a: a.transpose(perm))
    check(device, lambda t: t.T, x, ref=lambda a: a.T)
    if len(shape) >= 2:
        i, j = data.draw(st.integers(0, len(shape) - 1)), data.draw(st.integers(0, len(shape) - 1))
        check(device, lambda t: t.transpose(i, j), x, ref=lambda a: np.swapaxes(a, i, j))
    s = data.draw(st.integers(0, len(shape) - 1))
    e = data.draw(st.integers(s, len(shape) - 1))
    flat_shape = shape[:s] + (int(np.prod(shape[s:e + 1])),) + shape[e + 1:]
    check(device, lambda t: t.flatten(s, e), x, ref=lambda a: a.reshape(flat_shape))


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4))
def test_getitem_basic(device, data, shape):
    index = data.draw(basic_indices(shape, allow_newaxis=True))
    x = data.draw(tensors(shape=shape, device=device))
    check(device, lambda t: t[index], x, ref=lambda a: a[index])


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4))
def test_getitem_advanced(device, data, shape):
    x = data.draw(tensors(shape=shape, device=device))
    # integer arrays selecting a position twice: the backward pass must accumulate, not assign
    index = data.draw(advanced_indices(shape, repeats=True))
    check(device, lambda t: t[index], x, ref=lambda a: a[index])
    index = data.draw(advanced_indices(shape))  # integer arrays, lists, masks, after slices
    check(device, lambda t: t[index], x, ref=lambda a: a[index])


def test_getitem_repeated_index_accumulates():
    # independent of finite differences: x[[0, 0, 0]].sum() has gradient 3 at 0
    x = md.tensor([1.0, 2.0], requires_grad=True)
    x[[0, 0, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0])


@FAST
@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3, max_side=3), n=st.integers(1, 3))
def test_concatenate_and_stack(device, data, shape, n):
    axis = data.draw(valid_axes(len(shape), allow_none=False, allow_tuple=False))
    parts = []
    for _ in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        parts.append(data.draw(tensors(shape=tuple(s), device=device)))
    check(device, lambda *ts: md.concatenate(list(ts), axis=axis), *parts,
          ref=lambda *arrays: np.concatenate(arrays, axis=axis))
    same = [data.draw(tensors(shape=shape, device=device)) for _ in range(n)]
    stack_axis = data.draw(valid_axes(len(shape) + 1, allow_none=False, allow_tuple=False))
    check(device, lambda *ts: md.stack(list(ts), axis=stack_axis), *same,
          ref=lambda *arrays: np.stack(arrays, axis=stack_axis))


# --- activations -------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), shape=shapes(max_dims=3), dtype=FLOATS)
def test_activations(device, data, shape, dtype):
    relu_input = tensors(shape=shape, dtype=dtype, device=device, away_from=0.0, margin=0.01)
    check(device, F.relu, data.draw(relu_input), ref=lambda a: np.maximum(a, 0))
    x = data.draw(tensors(shape=shape, dtype=dtype, device=device, min_value=-6.0, max_value=6.0))
    check(device, F.sigmoid, x, ref=lambda a: 1 / (1 + np.exp(-a)))
    check(device, F.tanh, x, ref=np.tanh)
    axis = data.draw(valid_axes(len(shape), allow_none=False, allow_tuple=False))
    check(device, lambda t: F.softmax(t, axis=axis), x, ref=lambda a: np.exp(log_softmax_ref(a, axis)))
    check(device, lambda t: F.log_softmax(t, axis=axis), x, ref=lambda a: log_softmax_ref(a, axis))


def log_softmax_ref(a, axis):
    m = a.max(axis=axis, keepdims=True)
    return a - m - np.log(np.exp(a - m).sum(axis=axis, keepdims=True))


REDUCE = {"mean": np.mean, "sum": np.sum, "none": lambda v: v}


# --- losses ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@FAST
@given(data=st.data(), n=st.integers(1, 5), c=st.integers(1, 5))
def test_cross_entropy(device, reduction, data, n, c):
    logits = data.draw(tensors(shape=(n, c), min_value=-5.0, max_value=5.0, device=device))
    target = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    check(device, lambda z: F.cross_entropy(z, on(device, target), reduction=reduction), logits,
          ref=lambda a: REDUCE[reduction](-log_softmax_ref(a, 1)[np.arange(n), target]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@FAST
@given(data=st.data(), shape=shapes())
def test_mse_loss(device, reduction, data, shape):
    a, b = (data.draw(tensors(shape=shape, device=device)) for _ in range(2))
    check(device, lambda u, v: F.mse_loss(u, v, reduction=reduction), a, b,
          ref=lambda u, v: REDUCE[reduction]((u - v) ** 2))


# --- layers ------------------------------------------------------------------------------------------
def conv2d_ref(x, w, stride, padding):
    """The oracle: the reference kernel (im2col and one product, minidl/kernels/reference.py)."""
    return reference.conv2d_forward(x, w, stride, padding)


def pool_ref(x, kernel, stride, padding, kind):
    """The oracle: max over the -inf-padded window or mean over the zero-padded one (reference.py)."""
    fn = reference.max_pool2d_forward if kind == "max" else reference.avg_pool2d_forward
    return fn(x, kernel, stride, padding)


@FAST
@given(data=st.data(), n=st.integers(1, 4), fin=st.integers(1, 4), fout=st.integers(1, 4),
       lead=st.sampled_from([(), (2,), (2, 3)]), bias=st.booleans())
def test_linear(device, data, n, fin, fout, lead, bias):
    x = data.draw(tensors(shape=lead + (n, fin), device=device))
    w = data.draw(tensors(shape=(fout, fin), device=device))
    if bias:
        check(device, F.linear, x, w, data.draw(tensors(shape=(fout,), device=device)), ref=lambda u, v, c: u @ v.T + c)
    else:
        check(device, F.linear, x, w, ref=lambda u, v: u @ v.T)


@SLOW
@given(data=st.data(), cfg=conv_configs(), bias=st.booleans(), dtype=FLOATS)
def test_conv2d(device, data, cfg, bias, dtype):
    x = data.draw(tensors(shape=cfg["x_shape"], dtype=dtype, device=device, min_value=-2.0, max_value=2.0))
    w = data.draw(tensors(shape=cfg["w_shape"], dtype=dtype, device=device, min_value=-2.0, max_value=2.0))
    kw = dict(stride=cfg["stride"], padding=cfg["padding"])
    if bias:
        b = data.draw(tensors(shape=(cfg["w_shape"][0],), dtype=dtype, device=device))
        check(device, lambda u, v, c: F.conv2d(u, v, c, **kw), x, w, b,
              ref=lambda u, v, c: conv2d_ref(u, v, **kw) + c[None, :, None, None])
    else:
        check(device, lambda u, v: F.conv2d(u, v, **kw), x, w, ref=lambda u, v: conv2d_ref(u, v, **kw))
    # only one input needing a gradient (the other a constant)
    check(device, lambda u: F.conv2d(u, const(w), **kw), x)


@SLOW
@given(data=st.data(), n=st.integers(1, 2), c=st.integers(16, 18), f=st.integers(1, 3),
       k=st.integers(5, 6), size=st.integers(0, 3), pad=st.integers(0, 2), bias=st.booleans())
def test_conv2d_large_kernel_fft_path(device, data, n, c, f, k, size, pad, bias):
    """Stride 1, kernel >= 5x5 and C*k*k >= 400: the CPU takes the FFT algorithm (``use_fft``;
    its minimum batch is lowered here to keep the finite differences cheap)."""
    from minidl.kernels import conv as conv_kernels
    # An FFT's rounding error is spread over every output (~1e-15 of their norm, not of each
    # value), which h = 1e-6 would amplify a millionfold. Convolution is linear in each input,
    # so central differences have no truncation error and a larger h costs nothing.
    h_fd = dict(eps=1e-3)
    min_batch, conv_kernels.FFT_MIN_BATCH = conv_kernels.FFT_MIN_BATCH, 1
    try:
        h = max(1, k - 2 * pad) + size
        x = data.draw(tensors(shape=(n, c, h, h + 1), min_value=-2.0, max_value=2.0))
        w = data.draw(tensors(shape=(f, c, k, k), min_value=-2.0, max_value=2.0))
        assert conv_kernels.conv2d_forward(x.array, w.array, (1, 1), (pad, pad))[1].algorithm == "fft"
        if bias:
            b = data.draw(tensors(shape=(f,)))
            check(device, lambda u, v, z: F.conv2d(u, v, z, padding=pad), x, w, b,
                  ref=lambda u, v, z: conv2d_ref(u, v, (1, 1), (pad, pad)) + z[None, :, None, None], **h_fd)
        else:
            check(device, lambda u, v: F.conv2d(u, v, padding=pad), x, w,
                  ref=lambda u, v: conv2d_ref(u, v, (1, 1), (pad, pad)), **h_fd)
    finally:
        conv_kernels.FFT_MIN_BATCH = min_batch


@SLOW
@given(data=st.data(), cfg=pool_configs(), dtype=FLOATS)
def test_max_pool2d(device, data, cfg, dtype):
    # no ties in a window: pairwise 0.05 apart (up to 294 values, hence the wider range)
    x = data.draw(tensors(shape=cfg["x_shape"], dtype=dtype, device=device, distinct=True, min_value=-10.0,
                          max_value=10.0))
    check(device, lambda t: F.max_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"]), x,
          ref=lambda a: pool_ref(a, cfg["kernel"], cfg["stride"], cfg["padding"], "max"))


@SLOW
@given(data=st.data(), cfg=pool_configs(), dtype=FLOATS)
def test_avg_pool2d(device, data, cfg, dtype):
    x = data.draw(tensors(shape=cfg["x_shape"], dtype=dtype, device=device))
    check(device, lambda t: F.avg_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"]), x,
          ref=lambda a: pool_ref(a, cfg["kernel"], cfg["stride"], cfg["padding"], "avg"))


@pytest.mark.parametrize("stride", [1, (1, 2)])
@examples(10)
@given(data=st.data())
def test_pools_with_overlapping_windows(device, stride, data):
    # kernel 3 with stride 1 or (1, 2): every interior input sits in several windows
    x = data.draw(tensors(shape=(2, 2, 5, 6), device=device, distinct=True, min_value=-5.0, max_value=5.0))
    s2 = (stride, stride) if isinstance(stride, int) else stride
    check(device, lambda t: F.max_pool2d(t, 3, stride, 1), x, ref=lambda a: pool_ref(a, (3, 3), s2, (1, 1), "max"))
    check(device, lambda t: F.avg_pool2d(t, 3, stride, 1), x, ref=lambda a: pool_ref(a, (3, 3), s2, (1, 1), "avg"))


@pytest.mark.parametrize("chunk_bytes", [None, 1, 100])  # 1 image per chunk; 100 bytes: 1-4 images
@pytest.mark.parametrize("training", [True, False])
@FAST
@given(seed=st.integers(0, 2 ** 32 - 1), shape=st.sampled_from([(4, 3), (2, 3, 2, 2), (3, 2, 1, 3), (5, 1)]),
       scale=st.floats(0.5, 3.0))
def test_batch_norm(device, training, chunk_bytes, seed, shape, scale):
    """Against the formula and finite differences, also with the CPU passes over several
    chunks of the batch (``batch_norm_cpu.CHUNK_BYTES``, a shorter last chunk included)."""
    old = batch_norm_cpu.CHUNK_BYTES
    batch_norm_cpu.CHUNK_BYTES = chunk_bytes or old
    try:
        _batch_norm_case(device, training, seed, shape, scale)
    finally:
        batch_norm_cpu.CHUNK_BYTES = old


@pytest.mark.parametrize("chunk_images", [1, 3, 64])
def test_batch_norm_statistics_merge_chunks_stably(chunk_images):
    """The batch mean and variance come from per-chunk means and squared deviations merged in
    chunk order (Chan et al.): in float32, with a mean 10^4 times the spread, they match the
    float64 two-pass values to float32 rounding of the variance, where E[x^2] - E[x]^2 would
    lose every digit (its rounding error, ~1e8 * 6e-8, is above the variance of 1)."""
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((64, 3, 5, 5)) + 1e4).astype(np.float32)
    old = batch_norm_cpu.CHUNK_BYTES
    batch_norm_cpu.CHUNK_BYTES = chunk_images * x[0].nbytes
    try:
        mu, var = batch_norm_cpu.batch_norm_stats(x)
    finally:
        batch_norm_cpu.CHUNK_BYTES = old
    x64 = x.astype(np.float64)
    for mu, var in ((mu, var), reference.batch_norm_stats(x)):  # the reference's two passes too
        np.testing.assert_allclose(mu, x64.mean(axis=(0, 2, 3)), rtol=1e-6)
        np.testing.assert_allclose(var, x64.var(axis=(0, 2, 3)), rtol=1e-3)
    naive = (x * x).mean(axis=(0, 2, 3), dtype=np.float32) - x.mean(axis=(0, 2, 3), dtype=np.float32) ** 2
    assert np.abs(naive - x64.var(axis=(0, 2, 3))).max() > 0.1  # the test can tell a naive formula


def _batch_norm_case(device, training, seed, shape, scale):
    rng = np.random.default_rng(seed)
    x = leaf(rng.standard_normal(shape) * scale + rng.standard_normal())
    c = shape[1]
    gamma, beta = leaf(rng.standard_normal(c)), leaf(rng.standard_normal(c))
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def f(u, g, b):
        running = on(device, rm).array, on(device, rv).array  # fresh copies: train mode updates them
        return F.batch_norm(u, *running, g, b, training=training)

    def ref(u, g, b):
        axes = (0,) + tuple(range(2, u.ndim))
        bshape = (1, c) + (1,) * (u.ndim - 2)
        mu, var = (u.mean(axis=axes), u.var(axis=axes)) if training else (rm, rv)
        return (u - mu.reshape(bshape)) / np.sqrt(var.reshape(bshape) + 1e-5) * g.reshape(bshape) + b.reshape(bshape)

    check(device, f, x, gamma, beta, ref=ref)


@FAST
@given(x=tensors(shape=(3, 4)), p=st.floats(0.1, 0.8), seed=st.integers(0, 1000))
def test_dropout_with_fixed_mask(device, x, p, seed):
    def f(t):
        md.manual_seed(seed)  # the same mask on every call
        return F.dropout(t, p, training=True)

    check(device, f, x)
    y, xv = host(f(on(device, x))), x.numpy()
    kept = y != 0
    np.testing.assert_allclose(y[kept], xv[kept] / (1 - p), rtol=1e-12)  # survivors scaled by 1/(1-p)


def test_cast_gradients():
    x = leaf(np.random.default_rng(0).standard_normal((3, 2)))
    # through float32 and back: linear, so coarse differences are exact up to float32 rounding
    assert gradcheck(lambda t: Cast.apply(Cast.apply(t, dtype=np.dtype(np.float32)), dtype=np.dtype(np.float64))
                     * 3.0, x, eps=1e-2, atol=1e-4)
    x.grad = None
    y = x.astype(np.float32)
    assert y.dtype == np.float32
    y.backward(np.full((3, 2), 2.0, dtype=np.float32))
    assert x.grad.dtype == np.float64  # the gradient comes back in the input's dtype
    np.testing.assert_array_equal(x.grad.numpy(), 2.0)


@FAST
@given(x=tensors())
def test_transfer_cpu_to_cpu(x):
    assert x.to("cpu") is x
    check("cpu", lambda t: Transfer.apply(t, device="cpu") * t, x)


@pytest.mark.skipif(not md.cuda_available(), reason="no usable CUDA device")
@FAST
@given(x=tensors())
def test_transfer_cpu_cuda_roundtrip(x):
    def f(t):
        y = t.to("cuda")
        assert y.device == "cuda"
        return (y * y).to("cpu")

    check("cpu", f, x)


# --- every engine Function against its contract (check_backward) ------------------------------------
# check_backward calls each backward directly, so a gradient of the wrong dtype or device is
# caught here even where the graph walk would cast it on its way to a leaf.
UNARY_FUNCTIONS = [
    (unary.Exp, {}, {}), (unary.Log, {}, dict(min_value=0.1)), (unary.Sqrt, {}, dict(min_value=0.1)),
    (unary.Abs, {}, dict(away_from=0.0)), (unary.Clip, dict(lo=-1.0, hi=1.0), dict(away_from=[-1.0, 1.0])),
    (arithmetic.Neg, {}, {}), (arithmetic.Pow, dict(exponent=3), {}),
    (activation.ReLU, {}, dict(away_from=0.0)), (activation.Sigmoid, {}, {}), (activation.Tanh, {}, {}),
    (activation.Softmax, dict(axis=-1), {}), (activation.LogSoftmax, dict(axis=0), {}),
    (reduce.Sum, dict(axis=0, keepdims=True), {}), (reduce.Mean, dict(axis=-1), {}),
    (reduce.Max, dict(axis=None), dict(distinct=True)),
    (select.Norm, dict(p=2, axis=-1), dict(away_from=0.0)),
    # the inf-norm's kink is a tie in |x|: values of one sign, pairwise apart, keep |x| apart too
    (select.Norm, dict(p=float("inf")), dict(distinct=True, min_value=0.1, max_value=6.0)),
    (select.Norm, dict(p=float("inf")), dict(distinct=True, min_value=-6.0, max_value=-0.1)),
]


@pytest.mark.parametrize("op, params, values", UNARY_FUNCTIONS, ids=[c[0].__name__ for c in UNARY_FUNCTIONS])
@examples(10)
@given(data=st.data(), dtype=FLOATS)
def test_unary_functions_keep_their_contract(device, op, params, values, data, dtype):
    x = data.draw(tensors(dtype=dtype, device=device, **values))
    assert check_backward(op, x, params=params, **TOL)


@pytest.mark.parametrize("op", [arithmetic.Add, arithmetic.Sub, arithmetic.Mul, arithmetic.Div, arithmetic.Maximum])
@examples(10)
@given(data=st.data(), shapes_=broadcastable_shapes(2), dtype=FLOATS)
def test_binary_functions_keep_their_contract(device, op, data, shapes_, dtype):
    sa, sb = shapes_
    # all values pairwise apart and away from 0: no ties for Maximum, no division by ~0
    both = data.draw(tensors(shape=(int(np.prod(sa)) + int(np.prod(sb)),), dtype=dtype, device=device,
                             distinct=True, away_from=0.0, margin=0.1, min_value=-8.0, max_value=8.0))
    a, b = split(both, sa, sb)
    assert check_backward(op, a, b, **TOL)
    assert check_backward(op, a, const(b), **TOL)


# The ops that declare ``reads_inputs = False`` (autograd keeps no input alive for them) and are
# not checked above: check_backward overwrites their inputs with NaN between forward and
# backward, so a wrong declaration fails here.
SHAPE_FUNCTIONS = [
    (shape.Reshape, dict(shape=(3, 2)), 1), (shape.Transpose, dict(axes=(1, 0)), 1),
    (shape.GetItem, dict(index=(slice(None), [0, 2, 0])), 1), (shape.Concatenate, dict(axis=1), 2),
    (shape.Stack, dict(axis=0), 2), (pad_op.Pad, dict(widths=((1, 0), (0, 2))), 1),
    (select.Expand, dict(shape=(4, 2, 3)), 1), (select.Gather, dict(axis=1, index=np.array([[2, 0], [1, 1]])), 1),
    (select.Where, dict(cond=np.array([[True, False, True], [False, False, True]])), 2),
    (loss.CrossEntropy, dict(target=np.array([2, 0])), 1), (loss.MSELoss, {}, 2),
    (Transfer, dict(device="cpu"), 1),
]


@pytest.mark.parametrize("op, params, n", SHAPE_FUNCTIONS, ids=[c[0].__name__ for c in SHAPE_FUNCTIONS])
@examples(5)
@given(data=st.data(), dtype=FLOATS)
def test_shape_and_loss_functions_keep_their_contract(op, params, n, data, dtype):
    assert op.reads_inputs is False
    xs = [data.draw(tensors(shape=(2, 3), dtype=dtype)) for _ in range(n)]
    assert check_backward(op, *xs, params=params, **TOL)


@pytest.mark.parametrize("algorithm", ["im2col_cnhw", "im2col_nhwc", "fft"])
@examples(5)
@given(data=st.data(), dtype=FLOATS)
def test_conv_keeps_its_contract_in_every_cpu_algorithm(algorithm, data, dtype):
    """Conv2d reads its input only where the algorithm keeps it (im2col); under FFT it declares
    that it reads none, which check_backward verifies by overwriting the inputs."""
    from minidl.kernels.runtime import autotune
    x = data.draw(tensors(shape=(2, 3, 5, 5), dtype=dtype))
    w, b = data.draw(tensors(shape=(4, 3, 3, 3), dtype=dtype)), data.draw(tensors(shape=(4,), dtype=dtype))
    with autotune.conv_algorithm(algorithm):
        fn = conv_op.Conv2d.apply(x, w, b, stride=(1, 1), padding=(1, 1))._ctx
        assert fn.reads_inputs == algorithm.startswith("im2col")
        # gradcheck's own tolerances: a loss summed over 200 outputs of up to ~100 leaves TOL's
        # finite differences too little precision for small bias gradients
        assert check_backward(conv_op.Conv2d, x, w, b, params=dict(stride=(1, 1), padding=(1, 1)))


@examples(10)
@given(data=st.data(), cfg=conv_configs(), pool=pool_configs(), dtype=FLOATS)
def test_layer_functions_keep_their_contract(device, data, cfg, pool, dtype):
    draw = lambda shape, **kw: data.draw(tensors(shape=shape, dtype=dtype, device=device, **kw))  # noqa: E731
    x, w, b = draw(cfg["x_shape"]), draw(cfg["w_shape"]), draw((cfg["w_shape"][0],))
    layer = dict(stride=cfg["stride"], padding=cfg["padding"])
    assert check_backward(conv_op.Conv2d, x, w, b, params=layer, **TOL)
    a, m = draw((3, 4)), draw((4, 2))
    assert check_backward(matmul.MatMul, a, m, **TOL)
    windows = dict(kernel=pool["kernel"], stride=pool["stride"], padding=pool["padding"])
    x = draw(pool["x_shape"], distinct=True, min_value=-10.0, max_value=10.0)
    assert check_backward(pool_op.MaxPool2d, x, params=windows, **TOL)
    assert check_backward(pool_op.AvgPool2d, x, params=windows, **TOL)
