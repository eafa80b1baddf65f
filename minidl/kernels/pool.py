"""2-D max and average pooling on NCHW arrays: forward and backward kernels.

With window offsets (p, q) in [0, kh) x [0, kw) and output pixel (i, j)::

    window(i, j) = { xpad[n, c, i*sh + p, j*sw + q] }
    max pool:  y[n, c, i, j] = max over window(i, j)        (padding counts as -inf)
    avg pool:  y[n, c, i, j] = sum over window(i, j) / (kh*kw)
                                (zero padding is counted: PyTorch's count_include_pad=True)

    x: (N, C, H, W) -> y: (N, C, Ho, Wo),  Ho = (H + 2*ph - kh) // sh + 1 (same for W)

Backward:

* max: each output's gradient goes to ONE input, the first maximum of its window in
  row-major (p, q) order (ties and repeated values are deterministic); overlapping
  windows (stride < kernel) add up. A NaN in a window makes its output NaN (it
  propagates, as in PyTorch); the gradient of such a window goes to the first maximum
  of the values before its first NaN (deterministic; PyTorch picks the NaN itself).
* avg: every input of a window receives grad_y / (kh*kw).

Padding must be at most half the kernel (``ph <= kh // 2``), as in PyTorch, so that every
window contains at least one real input.

CPU: Python loops run only over the kh*kw window offsets; each iteration is a whole-array
operation on strided views (no loop over pixels, no ``np.add.at``). GPU: CUDA kernels
that gather (one thread per output element) from ``cuda_sources``.
"""
import numpy

from ..backend import get_array_module
from . import parallel, workspace
from .cuda_sources import launch
from .conv import check_nchw, conv_output_size, float_dtype, gpu_dtype


class _PoolCache:
    """What the backward pass needs; opaque to callers."""
    __slots__ = ("device", "argmax", "x_shape", "kernel", "stride", "padding", "out_hw",
                 "dtype")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def _validate(x, kernel, stride, padding, what):
    check_nchw(x, f"{what} input")
    kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
    out_hw = conv_output_size(x.shape[2:], kernel, stride, padding, what=what)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{what}: padding {padding} must be at most half the kernel "
                         f"size {kernel}")
    float_dtype(x)
    return kernel, stride, padding, out_hw


def _window(a, p, q, out_hw, stride):
    """View of ``a`` (N, C, Hpad, Wpad) holding what offset (p, q) reads for every output:
    ``_window(a, p, q)[n, c, i, j] = a[n, c, i*sh + p, j*sw + q]``, shape (N, C, Ho, Wo)."""
    (Ho, Wo), (sh, sw) = out_hw, stride
    return a[:, :, p:p + sh * (Ho - 1) + 1:sh, q:q + sw * (Wo - 1) + 1:sw]


def _pad(x, padding, value, xp):
    """``x`` padded with ``value`` (returned as is when there is no padding)."""
    ph, pw = padding
    if not (ph or pw):
        return x
    N, C, H, W = x.shape
    shape = (N, C, H + 2 * ph, W + 2 * pw)
    if xp is numpy:
        out = workspace.empty(shape, x.dtype)
        out.fill(value)
    else:
        out = xp.full(shape, value, dtype=x.dtype)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _copy(a, xp):
    """A new C-contiguous copy of ``a`` (pooled on the CPU)."""
    return workspace.copy(a) if xp is numpy else xp.array(a, copy=True)


def _crop(gpad, x_shape, padding):
    """Inverse of ``_pad`` for CPU gradients: cut the border off (contiguous result)."""
    ph, pw = padding
    if not (ph or pw):
        return gpad
    H, W = x_shape[2:]
    return workspace.copy(gpad[:, :, ph:ph + H, pw:pw + W])


def _overlapping(kernel, stride):
    """True when some input lies in two windows, so gradients must add, not assign."""
    return stride[0] < kernel[0] or stride[1] < kernel[1]


# ---------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------
def max_pool2d_forward(x, kernel, stride, padding):
    """Max pooling; returns ``(y, cache)``. x: (N, C, H, W) -> y: (N, C, Ho, Wo)."""
    kernel, stride, padding, out_hw = _validate(x, kernel, stride, padding, "max_pool2d")
    xp = get_array_module(x)
    if xp is numpy:
        return _max_forward_cpu(x, kernel, stride, padding, out_hw)
    return _max_forward_gpu(x, kernel, stride, padding, out_hw, xp, launch)


def max_pool2d_backward(grad_y, cache):
    """Gradient of ``max_pool2d_forward``: grad_y (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    _check_grad_shape(grad_y, cache, "max_pool2d")
    if cache.device == "cpu":
        return _max_backward_cpu(grad_y, cache)
    return _max_backward_gpu(grad_y, cache, get_array_module(grad_y, cache.argmax), launch)


def _check_grad_shape(grad_y, cache, what):
    expected = tuple(cache.x_shape[:2]) + tuple(cache.out_hw)
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"{what} backward: grad_y has shape {tuple(grad_y.shape)}, "
                         f"expected {expected}")


def _argmax_dtype(kernel):
    return numpy.uint8 if kernel[0] * kernel[1] <= 255 else numpy.int32


def _max_forward_cpu(x, kernel, stride, padding, out_hw):
    kh, kw = kernel
    xpad = _pad(x, padding, -numpy.inf, numpy)
    N, C = x.shape[:2]
    y = workspace.empty((N, C) + tuple(out_hw), xpad.dtype)
    adt = numpy.dtype(_argmax_dtype(kernel))
    argmax = workspace.empty(y.shape, adt)
    v = workspace.empty(y.shape, y.dtype)
    wins = workspace.empty(y.shape, bool)
    k_if_wins = workspace.empty(y.shape, adt)

    def run(n0, n1):  # images n0..n1-1; threads take disjoint ranges of the batch
        # Running maximum over the kh*kw offsets in row-major order. A later offset takes
        # the argmax only if strictly greater, so ties keep the first maximum; y itself is
        # updated with numpy.maximum, so a NaN in the window propagates to y.
        xs, ys, am = xpad[n0:n1], y[n0:n1], argmax[n0:n1]
        vs, ws, kw_s = v[n0:n1], wins[n0:n1], k_if_wins[n0:n1]
        ys[...] = _window(xs, 0, 0, out_hw, stride)
        am.fill(0)
        for k in range(1, kh * kw):
            # Gather the strided window into a contiguous buffer first: the copy is cheap,
            # and ufuncs on contiguous operands are ~3x faster than on strided views.
            vs[...] = _window(xs, k // kw, k % kw, out_hw, stride)
            numpy.greater(vs, ys, out=ws)
            numpy.maximum(ys, vs, out=ys)
            # argmax = k where this offset wins. k grows with the loop, so a winner's k
            # exceeds every earlier argmax and max() does the select (numpy.copyto with
            # where= was 4x slower here).
            numpy.multiply(ws, adt.type(k), out=kw_s)
            numpy.maximum(am, kw_s, out=am)
    parallel.parallel_for(N, run, xpad.nbytes)
    cache = _PoolCache(device="cpu", argmax=argmax, x_shape=tuple(x.shape), kernel=kernel,
                       stride=stride, padding=padding, out_hw=out_hw, dtype=y.dtype)
    return y, cache


def _max_backward_cpu(grad_y, cache):
    (kh, kw), padding, dtype = cache.kernel, cache.padding, cache.dtype
    N, C, H, W = cache.x_shape
    ph, pw = padding
    g = numpy.ascontiguousarray(grad_y, dtype=dtype)
    # grad_x[window k] gets grad_y where argmax == k, else 0. The select is a bitwise AND
    # with an all-ones/all-zeros mask on the raw bits: exact even for inf/NaN gradients
    # (a multiply by the 0/1 mask would turn inf*0 into NaN) and much faster than
    # numpy.where or numpy.copyto(where=).
    bits = numpy.dtype(f"u{dtype.itemsize}")
    g_bits = g.view(bits)
    chosen = workspace.empty(g.shape, bool)
    mask = workspace.empty(g.shape, bits)
    sel = workspace.empty(g.shape, dtype)
    gpad = workspace.empty((N, C, H + 2 * ph, W + 2 * pw), dtype)
    overlap = _overlapping(cache.kernel, cache.stride)

    def run(n0, n1):  # images n0..n1-1; threads take disjoint ranges of the batch
        gp, ch, mk, sl = gpad[n0:n1], chosen[n0:n1], mask[n0:n1], sel[n0:n1]
        gp.fill(0)
        for k in range(kh * kw):
            numpy.equal(cache.argmax[n0:n1], k, out=ch)
            numpy.negative(ch.view(numpy.uint8), out=mk, dtype=bits, casting="unsafe")
            numpy.bitwise_and(g_bits[n0:n1], mk, out=sl.view(bits))
            view = _window(gp, k // kw, k % kw, cache.out_hw, cache.stride)
            if overlap:
                view += sl
            else:  # disjoint windows: each input is written at most once
                view[...] = sl
    parallel.parallel_for(N, run, gpad.nbytes)
    return _crop(gpad, cache.x_shape, padding)


def _max_forward_gpu(x, kernel, stride, padding, out_hw, xp, launch):
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, out_hw
    dtype = x.dtype
    wdt = gpu_dtype(dtype)
    x = xp.ascontiguousarray(x, dtype=wdt)
    y = xp.empty((N, C, Ho, Wo), wdt)
    argmax = xp.empty((N, C, Ho, Wo), numpy.int32)
    total = N * C * Ho * Wo
    launch("minidl_maxpool_fwd", wdt, total,
           x, y, argmax, total, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, float("-inf"))
    cache = _PoolCache(device="cuda", argmax=argmax, x_shape=tuple(x.shape), kernel=kernel,
                       stride=stride, padding=padding, out_hw=out_hw, dtype=dtype)
    return y.astype(dtype, copy=False), cache


def _max_backward_gpu(grad_y, cache, xp, launch):
    N, C, H, W = cache.x_shape
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = cache.kernel, cache.stride, cache.padding, \
        cache.out_hw
    wdt = gpu_dtype(cache.dtype)
    grad_y = xp.ascontiguousarray(grad_y, dtype=wdt)
    grad_x = xp.empty((N, C, H, W), wdt)
    total = N * C * H * W
    launch("minidl_maxpool_bwd", wdt, total,
           grad_y, cache.argmax, grad_x, total, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)
    return grad_x.astype(cache.dtype, copy=False)


# ---------------------------------------------------------------------------------------
# average pooling
# ---------------------------------------------------------------------------------------
def avg_pool2d_forward(x, kernel, stride, padding):
    """Average pooling (zero padding counted); returns ``(y, cache)``.

    x: (N, C, H, W) -> y: (N, C, Ho, Wo). The same array code runs on NumPy and CuPy:
    a sum of kh*kw strided views, then one division.
    """
    kernel, stride, padding, out_hw = _validate(x, kernel, stride, padding, "avg_pool2d")
    xp = get_array_module(x)
    kh, kw = kernel
    xpad = _pad(x, padding, 0, xp)
    y = _copy(_window(xpad, 0, 0, out_hw, stride), xp)
    for k in range(1, kh * kw):
        y += _window(xpad, k // kw, k % kw, out_hw, stride)
    y /= kh * kw  # a Python int keeps the array's dtype (no float64 upcast)
    cache = _PoolCache(device="cpu" if xp is numpy else "cuda", argmax=None,
                       x_shape=tuple(x.shape), kernel=kernel, stride=stride,
                       padding=padding, out_hw=out_hw, dtype=y.dtype)
    return y, cache


def avg_pool2d_backward(grad_y, cache):
    """Gradient of ``avg_pool2d_forward``: grad_y (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    _check_grad_shape(grad_y, cache, "avg_pool2d")
    if cache.device == "cpu":
        return _avg_backward_cpu(grad_y, cache)
    return _avg_backward_gpu(grad_y, cache, get_array_module(grad_y), launch)


def _avg_backward_cpu(grad_y, cache):
    (kh, kw), padding = cache.kernel, cache.padding
    N, C, H, W = cache.x_shape
    ph, pw = padding
    g = numpy.divide(grad_y, kh * kw, out=workspace.empty(grad_y.shape, cache.dtype))
    gpad = workspace.zeros((N, C, H + 2 * ph, W + 2 * pw), cache.dtype)
    overlap = _overlapping(cache.kernel, cache.stride)
    for k in range(kh * kw):
        view = _window(gpad, k // kw, k % kw, cache.out_hw, cache.stride)
        if overlap:
            view += g
        else:
            view[...] = g
    return _crop(gpad, cache.x_shape, padding)


def _avg_backward_gpu(grad_y, cache, xp, launch):
    N, C, H, W = cache.x_shape
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = cache.kernel, cache.stride, cache.padding, \
        cache.out_hw
    wdt = gpu_dtype(cache.dtype)
    grad_y = xp.ascontiguousarray(grad_y, dtype=wdt)
    grad_x = xp.empty((N, C, H, W), wdt)
    total = N * C * H * W
    launch("minidl_avgpool_bwd", wdt, total,
           grad_y, grad_x, total, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo, float(kh * kw))
    return grad_x.astype(cache.dtype, copy=False)
