"""Property tests: the gradient of every differentiable op agrees with float64 central
finite differences (``minidl.testing.gradcheck``) on shapes, parameters and values drawn by
hypothesis, and its forward value agrees with a plain NumPy reference written here (loops
for convolution and pooling, independent of ``minidl.kernels``). Where an op has a kink
(relu, abs, clip, max, maximum, max-pooling) the values are drawn away from it, so that the
finite differences measure the true derivative.

Each test runs on every backend in ``conftest.BACKENDS`` (CUDA ones skip without a GPU).
"""
import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import minidl as md
import minidl.functional as F
from minidl.autograd import Function
from minidl.kernels import reference
from minidl.tensor import Cast, Tensor, Transfer
from minidl.testing import GradcheckError, gradcheck, numerical_gradient
from minidl.testing.strategies import broadcastable_shapes, conv_configs, pool_configs, shapes, tensors

from conftest import examples, host, on

FAST = examples(25)
SLOW = examples(15)


# Central differences with h = 1e-6 in float64 are accurate to ~1e-9 here (moderate values,
# small shapes), so the tolerances can be much tighter than gradcheck's defaults: a gradient
# that is off by a factor 1.0001 fails.
TOL = dict(atol=1e-7, rtol=1e-6)


def check(device, fn, *inputs, ref=None, **kw):
    """gradcheck ``fn`` with every Tensor input moved to ``device``; with ``ref``, also compare
    the forward value with ``ref(*numpy_inputs)``."""
    moved = [on(device, x) if isinstance(x, Tensor) else x for x in inputs]
    if ref is not None:
        out = fn(*moved)
        want = ref(*[x.numpy() if isinstance(x, Tensor) else x for x in inputs])
        assert out.shape == np.shape(want)
        assert out.dtype == np.float64
        np.testing.assert_allclose(host(out), want, rtol=1e-10, atol=1e-12)
    assert gradcheck(fn, *moved, **{**TOL, **kw}) is True


def arrays(shape, lo=-3.0, hi=3.0):
    return hnp.arrays(np.float64, shape, elements=st.floats(lo, hi, allow_nan=False, width=64))


def away_from_zero(shape, lo=0.2, hi=3.0):
    """Values with |v| in [lo, hi] and either sign."""
    mags = st.floats(lo, hi, width=64)
    return hnp.arrays(np.float64, shape, elements=st.one_of(mags, mags.map(lambda v: -v)))


@st.composite
def distinct(draw, shape, spacing=0.25):
    """An array of ``shape`` whose values are pairwise at least ``spacing`` apart (a random
    permutation of an evenly spaced grid, shifted), so every max is unique and stays unique
    under the finite-difference perturbation."""
    n = int(np.prod(shape))
    perm = np.array(draw(st.permutations(range(n))), dtype=np.float64)
    shift = draw(st.floats(-2.0, 2.0, width=64))
    return ((perm - n / 2) * spacing + shift).reshape(shape)


def T(array):
    return Tensor(np.asarray(array, dtype=np.float64), requires_grad=True)


# --- elementwise arithmetic with broadcasting ----------------------------------------------------
BINARY = {
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
}


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(data=st.data(), shapes_=broadcastable_shapes())
def test_binary_broadcasting(device, op, data, shapes_):
    sa, sb = shapes_
    a = data.draw(arrays(sa))
    b = data.draw(away_from_zero(sb, 0.5, 3.0) if op == "div" else arrays(sb))
    # both operands, then each alone (the other a constant), so needs_grad paths are covered
    check(device, BINARY[op], T(a), T(b), ref=BINARY[op])
    check(device, BINARY[op], T(a), Tensor(b))
    check(device, BINARY[op], Tensor(a), T(b))


@pytest.mark.parametrize("op", sorted(BINARY))
@FAST
@given(x=away_from_zero((2, 3), 0.5, 3.0), c=st.floats(0.5, 3.0))
def test_binary_with_python_scalars(device, op, x, c):
    f = BINARY[op]
    check(device, lambda t: f(t, c), T(x), ref=lambda t: f(t, c))
    check(device, lambda t: f(c, t), T(x), ref=lambda t: f(c, t))


@FAST
@given(x=tensors())
def test_neg(device, x):
    check(device, lambda t: -t, x, ref=lambda a: -a)


@FAST
@given(data=st.data(), shape=shapes(), p=st.sampled_from([2, 3, -1, 0.5, 1.7, -1.5]))
def test_pow(device, data, shape, p):
    if float(p).is_integer():  # any sign; away from 0 when the exponent is negative
        base = data.draw(away_from_zero(shape, 0.3, 3.0) if p < 0 else arrays(shape))
    else:  # fractional powers need a positive base
        base = data.draw(arrays(shape, 0.3, 3.0))
    check(device, lambda t: t ** p, T(base), ref=lambda a: a ** p)


@FAST
@given(data=st.data(), shapes_=broadcastable_shapes())
def test_maximum(device, data, shapes_):
    # a on a grid of multiples of 0.25, b on the grid shifted by 0.125: never equal
    sa, sb = shapes_
    a = data.draw(hnp.arrays(np.int64, sa, elements=st.integers(-12, 12))) * 0.25
    b = data.draw(hnp.arrays(np.int64, sb, elements=st.integers(-12, 12))) * 0.25 + 0.125
    check(device, lambda u, v: u.maximum(v), T(a), T(b), ref=np.maximum)


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
@given(data=st.data(), sh=matmul_shapes())
def test_matmul(device, data, sh):
    a, b = data.draw(arrays(sh[0])), data.draw(arrays(sh[1]))
    check(device, lambda u, v: u @ v, T(a), T(b), ref=np.matmul)
    check(device, lambda u: u @ Tensor(on(device, b).data), T(a))


# --- unary math ------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), shape=shapes())
def test_exp_log_sqrt_abs(device, data, shape):
    check(device, lambda t: t.exp(), T(data.draw(arrays(shape, -3, 3))), ref=np.exp)
    check(device, lambda t: t.log(), T(data.draw(arrays(shape, 0.1, 5))), ref=np.log)
    check(device, lambda t: t.sqrt(), T(data.draw(arrays(shape, 0.1, 5))), ref=np.sqrt)
    check(device, lambda t: t.abs(), T(data.draw(away_from_zero(shape, 0.05, 3))), ref=np.abs)


@FAST
@given(data=st.data(), shape=shapes(), bounds=st.tuples(st.one_of(st.none(), st.integers(-8, 0)),
                                                        st.one_of(st.none(), st.integers(0, 8))))
def test_clip(device, data, shape, bounds):
    lo, hi = (None if b is None else b * 0.25 for b in bounds)
    assume(lo is not None or hi is not None)
    x = data.draw(hnp.arrays(np.int64, shape, elements=st.integers(-12, 12))) * 0.25 + 0.125
    check(device, lambda t: t.clip(lo, hi), T(x),
          ref=lambda a: np.minimum(np.maximum(a, -np.inf if lo is None else lo), np.inf if hi is None else hi))


# --- reductions ------------------------------------------------------------------------------------
@st.composite
def axis_for(draw, ndim):
    return draw(st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple)))


@pytest.mark.parametrize("op", ["sum", "mean", "max"])
@FAST
@given(data=st.data(), shape=shapes(max_dims=4, max_side=3), keepdims=st.booleans())
def test_reductions(device, op, data, shape, keepdims):
    axis = data.draw(axis_for(len(shape)))
    x = data.draw(distinct(shape)) if op == "max" else data.draw(arrays(shape))
    check(device, lambda t: getattr(t, op)(axis=axis, keepdims=keepdims), T(x),
          ref=lambda a: getattr(np, op)(a, axis=axis, keepdims=keepdims))


# --- shape ops ---------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), shape=shapes(max_dims=4, max_side=3))
def test_reshape_transpose_flatten(device, data, shape):
    x = T(data.draw(arrays(shape)))
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


@st.composite
def basic_index(draw, shape):
    parts = []
    for n in shape[:draw(st.integers(1, len(shape)))]:
        parts.append(draw(st.one_of(st.slices(n), st.integers(-n, n - 1))))
    return tuple(parts)


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4))
def test_getitem_basic(device, data, shape):
    index = data.draw(basic_index(shape))
    x = T(data.draw(arrays(shape)))
    assume(np.asarray(x.data[index]).size > 0)
    check(device, lambda t: t[index], x, ref=lambda a: a[index])


@FAST
@given(data=st.data(), shape=shapes(max_dims=3, max_side=4))
def test_getitem_integer_arrays_with_repeats(device, data, shape):
    n0 = shape[0]
    idx = data.draw(st.lists(st.integers(-n0, n0 - 1), min_size=1, max_size=6))
    idx = idx + [idx[0]]  # at least one repeat: the backward pass must accumulate, not assign
    x = T(data.draw(arrays(shape)))
    check(device, lambda t: t[idx], x, ref=lambda a: a[idx])
    check(device, lambda t: t[np.array(idx)], x)
    if len(shape) >= 2:
        n1 = shape[1]
        cols = data.draw(st.lists(st.integers(0, n1 - 1), min_size=len(idx), max_size=len(idx)))
        check(device, lambda t: t[:, cols], x)
        check(device, lambda t: t[np.array(idx), np.array(cols)], x,  # pairs, may repeat
              ref=lambda a: a[np.array(idx), np.array(cols)])
    mask = data.draw(hnp.arrays(np.bool_, shape))
    check(device, lambda t: t[mask], x, ref=lambda a: a[mask])


def test_getitem_repeated_index_accumulates():
    # independent of finite differences: x[[0, 0, 0]].sum() has gradient 3 at 0
    x = md.tensor([1.0, 2.0], requires_grad=True)
    x[[0, 0, 0]].sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0])


@FAST
@given(data=st.data(), shape=shapes(min_dims=1, max_dims=3, max_side=3), n=st.integers(1, 3))
def test_concatenate_and_stack(device, data, shape, n):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    parts = []
    for _ in range(n):
        s = list(shape)
        s[axis] = data.draw(st.integers(1, 3))
        parts.append(T(data.draw(arrays(tuple(s)))))
    check(device, lambda *ts: md.concatenate(list(ts), axis=axis), *parts,
          ref=lambda *arrays: np.concatenate(arrays, axis=axis))
    same = [T(data.draw(arrays(shape))) for _ in range(n)]
    stack_axis = data.draw(st.integers(-len(shape) - 1, len(shape)))
    check(device, lambda *ts: md.stack(list(ts), axis=stack_axis), *same,
          ref=lambda *arrays: np.stack(arrays, axis=stack_axis))


# --- activations -------------------------------------------------------------------------------------
@FAST
@given(data=st.data(), shape=shapes(max_dims=3))
def test_activations(device, data, shape):
    check(device, F.relu, T(data.draw(away_from_zero(shape, 0.01, 3))), ref=lambda a: np.maximum(a, 0))
    x = T(data.draw(arrays(shape, -6, 6)))
    check(device, F.sigmoid, x, ref=lambda a: 1 / (1 + np.exp(-a)))
    check(device, F.tanh, x, ref=np.tanh)
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
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
    logits = T(data.draw(arrays((n, c), -5, 5)))
    target = np.array(data.draw(st.lists(st.integers(0, c - 1), min_size=n, max_size=n)), dtype=np.int64)
    check(device, lambda z: F.cross_entropy(z, on(device, target), reduction=reduction), logits,
          ref=lambda a: REDUCE[reduction](-log_softmax_ref(a, 1)[np.arange(n), target]))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@FAST
@given(data=st.data(), shape=shapes())
def test_mse_loss(device, reduction, data, shape):
    a, b = T(data.draw(arrays(shape))), T(data.draw(arrays(shape)))
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
    x = T(data.draw(arrays(lead + (n, fin))))
    w = T(data.draw(arrays((fout, fin))))
    if bias:
        check(device, F.linear, x, w, T(data.draw(arrays((fout,)))), ref=lambda u, v, c: u @ v.T + c)
    else:
        check(device, F.linear, x, w, ref=lambda u, v: u @ v.T)


@SLOW
@given(data=st.data(), cfg=conv_configs(), bias=st.booleans())
def test_conv2d(device, data, cfg, bias):
    x = T(data.draw(arrays(cfg["x_shape"], -2, 2)))
    w = T(data.draw(arrays(cfg["w_shape"], -2, 2)))
    kw = dict(stride=cfg["stride"], padding=cfg["padding"])
    if bias:
        b = T(data.draw(arrays((cfg["w_shape"][0],))))
        check(device, lambda u, v, c: F.conv2d(u, v, c, **kw), x, w, b,
              ref=lambda u, v, c: conv2d_ref(u, v, **kw) + c[None, :, None, None])
    else:
        check(device, lambda u, v: F.conv2d(u, v, **kw), x, w, ref=lambda u, v: conv2d_ref(u, v, **kw))
    # only one input needing a gradient (the other a constant)
    check(device, lambda u: F.conv2d(u, Tensor(on(device, w).data), **kw), x)


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
        x = T(data.draw(arrays((n, c, h, h + 1), -2, 2)))
        w = T(data.draw(arrays((f, c, k, k), -2, 2)))
        assert conv_kernels.conv2d_forward(x.data, w.data, (1, 1), (pad, pad))[1].algorithm == "fft"
        if bias:
            b = T(data.draw(arrays((f,))))
            check(device, lambda u, v, z: F.conv2d(u, v, z, padding=pad), x, w, b,
                  ref=lambda u, v, z: conv2d_ref(u, v, (1, 1), (pad, pad)) + z[None, :, None, None], **h_fd)
        else:
            check(device, lambda u, v: F.conv2d(u, v, padding=pad), x, w,
                  ref=lambda u, v: conv2d_ref(u, v, (1, 1), (pad, pad)), **h_fd)
    finally:
        conv_kernels.FFT_MIN_BATCH = min_batch


@SLOW
@given(data=st.data(), cfg=pool_configs())
def test_max_pool2d(device, data, cfg):
    x = T(data.draw(distinct(cfg["x_shape"], spacing=0.05)))
    check(device, lambda t: F.max_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"]), x,
          ref=lambda a: pool_ref(a, cfg["kernel"], cfg["stride"], cfg["padding"], "max"))


@SLOW
@given(data=st.data(), cfg=pool_configs())
def test_avg_pool2d(device, data, cfg):
    x = T(data.draw(arrays(cfg["x_shape"])))
    check(device, lambda t: F.avg_pool2d(t, cfg["kernel"], cfg["stride"], cfg["padding"]), x,
          ref=lambda a: pool_ref(a, cfg["kernel"], cfg["stride"], cfg["padding"], "avg"))


@pytest.mark.parametrize("stride", [1, (1, 2)])
@examples(10)
@given(data=st.data())
def test_pools_with_overlapping_windows(device, stride, data):
    # kernel 3 with stride 1 or (1, 2): every interior input sits in several windows
    x = T(data.draw(distinct((2, 2, 5, 6), spacing=0.05)))
    s2 = (stride, stride) if isinstance(stride, int) else stride
    check(device, lambda t: F.max_pool2d(t, 3, stride, 1), x, ref=lambda a: pool_ref(a, (3, 3), s2, (1, 1), "max"))
    check(device, lambda t: F.avg_pool2d(t, 3, stride, 1), x, ref=lambda a: pool_ref(a, (3, 3), s2, (1, 1), "avg"))


@pytest.mark.parametrize("training", [True, False])
@FAST
@given(seed=st.integers(0, 2 ** 32 - 1), shape=st.sampled_from([(4, 3), (2, 3, 2, 2), (3, 2, 1, 3), (5, 1)]),
       scale=st.floats(0.5, 3.0))
def test_batch_norm(device, training, seed, shape, scale):
    rng = np.random.default_rng(seed)
    x = T(rng.standard_normal(shape) * scale + rng.standard_normal())
    c = shape[1]
    gamma, beta = T(rng.standard_normal(c)), T(rng.standard_normal(c))
    rm, rv = rng.standard_normal(c), rng.uniform(0.5, 2.0, c)

    def f(u, g, b):
        running = on(device, rm).data, on(device, rv).data  # fresh copies: train mode updates them
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
    x = T(np.random.default_rng(0).standard_normal((3, 2)))
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


# --- gradcheck itself --------------------------------------------------------------------------------
class WrongSquare(Function):
    """y = x^2 with the factor 2 missing from the backward pass."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return (g * self.x,)


class WrongSecondInput(Function):
    """y = a * b with a correct gradient for a but the sign of b's gradient flipped."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return g * self.b, -g * self.a


class MissingGradient(Function):
    """y = 2x whose backward claims there is no gradient."""

    def forward(self, x):
        return 2 * x

    def backward(self, g):
        return (None,)


@pytest.mark.parametrize("shape", [(3,), (2, 3), (30, 30)])  # (30, 30): the random-direction path
def test_gradcheck_rejects_wrong_backward(shape):
    x = T(np.random.default_rng(1).uniform(0.5, 2.0, shape))
    with pytest.raises(GradcheckError, match="input 0"):
        gradcheck(WrongSquare.apply, x)
    with pytest.raises(GradcheckError):
        gradcheck(MissingGradient.apply, x)
    b = T(np.random.default_rng(2).uniform(0.5, 2.0, shape))
    with pytest.raises(GradcheckError, match="input 1"):
        gradcheck(WrongSecondInput.apply, x, b)
    assert gradcheck(lambda u, v: u * v, x, b)  # and the correct op passes on the same inputs


def test_gradcheck_requires_float64():
    with pytest.raises(TypeError, match="float64"):
        gradcheck(lambda t: t * 2, md.tensor([1.0, 2.0], requires_grad=True))


def test_numerical_gradient_is_exact_for_a_quadratic():
    x = T([1.0, -2.0, 0.5])
    u = np.array([1.0, 2.0, 3.0])
    g = numerical_gradient(lambda t: t * t, [x], 0, u, 1e-6)
    np.testing.assert_allclose(g, 2 * x.numpy() * u, atol=1e-8)
