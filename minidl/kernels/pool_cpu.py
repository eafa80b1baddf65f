"""Max and average pooling on the CPU (NumPy): the fast path of the reference kernels.

The same results as ``reference.max_pool2d_*`` and ``reference.avg_pool2d_*`` (the math is
in ``pool.py``), arranged for speed: Python loops run only over the kh*kw window offsets, each
iteration a whole-array operation on strided views (no loop over pixels, no ``np.add.at``);
large buffers come from ``workspace``; the batch is split over cores (``parallel``). The max
backward pass selects gradients with a bit mask instead of a multiply (exact for inf/NaN).
"""
import numpy

from .runtime import parallel, workspace
from .arrays import Cache, window, window_mean


def _pad(x, padding, value, scratch):
    """``x`` padded with ``value`` in a scratch array (``x`` itself when there is no padding)."""
    ph, pw = padding
    if not (ph or pw):
        return x
    N, C, H, W = x.shape
    out = scratch.empty((N, C, H + 2 * ph, W + 2 * pw), x.dtype)
    out.fill(value)
    out[:, :, ph:ph + H, pw:pw + W] = x
    return out


def _grad_buffer(x_shape, padding, dtype, scratch):
    """The gradient of the padded input: scratch when padded (``_crop`` copies the interior
    out), else the result itself, an ordinary array."""
    N, C, H, W = x_shape
    (ph, pw) = padding
    shape = (N, C, H + 2 * ph, W + 2 * pw)
    return scratch.empty(shape, dtype) if ph or pw else numpy.empty(shape, dtype)


def _crop(gpad, x_shape, padding):
    """Inverse of ``_pad`` for gradients: cut the border off (a new contiguous array)."""
    ph, pw = padding
    if not (ph or pw):
        return gpad
    H, W = x_shape[2:]
    return workspace.copy(gpad[:, :, ph:ph + H, pw:pw + W])


def _overlapping(kernel, stride):
    """True when some input lies in two windows, so gradients must add, not assign."""
    return stride[0] < kernel[0] or stride[1] < kernel[1]


def _argmax_dtype(kernel):
    return numpy.uint8 if kernel[0] * kernel[1] <= 255 else numpy.int32


def max_forward(x, kernel, stride, padding, out_hw):
    """Max pooling: a running maximum over the kh*kw offsets; returns ``(y, cache)``."""
    kh, kw = kernel
    with workspace.Scratch() as scratch:
        xpad = _pad(x, padding, -numpy.inf, scratch)
        N, C = x.shape[:2]
        y = numpy.empty((N, C) + tuple(out_hw), xpad.dtype)
        adt = numpy.dtype(_argmax_dtype(kernel))
        argmax = numpy.empty(y.shape, adt)  # kept in the cache
        v = scratch.empty(y.shape, y.dtype)
        wins = scratch.empty(y.shape, bool)
        k_if_wins = scratch.empty(y.shape, adt)

        def run(n0, n1):  # images n0..n1-1; threads take disjoint ranges of the batch
            # Running maximum over the kh*kw offsets in row-major order. A later offset takes
            # the argmax only if strictly greater, so ties keep the first maximum; y itself is
            # updated with numpy.maximum, so a NaN in the window propagates to y.
            xs, ys, am = xpad[n0:n1], y[n0:n1], argmax[n0:n1]
            vs, ws, kw_s = v[n0:n1], wins[n0:n1], k_if_wins[n0:n1]
            ys[...] = window(xs, 0, 0, out_hw, stride)
            am.fill(0)
            for k in range(1, kh * kw):
                # Gather the strided window into a contiguous buffer first: the copy is cheap,
                # and ufuncs on contiguous operands are much faster than on strided views.
                vs[...] = window(xs, k // kw, k % kw, out_hw, stride)
                numpy.greater(vs, ys, out=ws)
                numpy.maximum(ys, vs, out=ys)
                # argmax = k where this offset wins. k grows with the loop, so a winner's k
                # exceeds every earlier argmax and max() does the select (numpy.copyto with
                # where= measured slower here).
                numpy.multiply(ws, adt.type(k), out=kw_s)
                numpy.maximum(am, kw_s, out=am)
        parallel.parallel_for(N, run, xpad.nbytes)
    cache = Cache(device="cpu", implementation="cpu", argmax=argmax, x_shape=tuple(x.shape), kernel=kernel,
                  stride=stride, padding=padding, out_hw=out_hw, dtype=y.dtype)
    return y, cache


def max_backward(grad_y, cache):
    """Each output's gradient to its window's first maximum (argmax from the cache)."""
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
    with workspace.Scratch() as scratch:
        chosen = scratch.empty(g.shape, bool)
        mask = scratch.empty(g.shape, bits)
        sel = scratch.empty(g.shape, dtype)
        gpad = _grad_buffer(cache.x_shape, padding, dtype, scratch)
        overlap = _overlapping(cache.kernel, cache.stride)

        def run(n0, n1):  # images n0..n1-1; threads take disjoint ranges of the batch
            gp, ch, mk, sl = gpad[n0:n1], chosen[n0:n1], mask[n0:n1], sel[n0:n1]
            gp.fill(0)
            for k in range(kh * kw):
                numpy.equal(cache.argmax[n0:n1], k, out=ch)
                numpy.negative(ch.view(numpy.uint8), out=mk, dtype=bits, casting="unsafe")
                numpy.bitwise_and(g_bits[n0:n1], mk, out=sl.view(bits))
                view = window(gp, k // kw, k % kw, cache.out_hw, cache.stride)
                if overlap:
                    view += sl
                else:  # disjoint windows: each input is written at most once
                    view[...] = sl
        parallel.parallel_for(N, run, gpad.nbytes)
        return _crop(gpad, cache.x_shape, padding)


def avg_forward(x, kernel, stride, padding, out_hw):
    """Average pooling: a sum of kh*kw strided views, then one division."""
    with workspace.Scratch() as scratch:
        xpad = _pad(x, padding, 0, scratch)
        y = window_mean(xpad, kernel, stride, numpy.empty(x.shape[:2] + tuple(out_hw), x.dtype))
    cache = Cache(device="cpu", implementation="cpu", x_shape=tuple(x.shape), kernel=kernel, stride=stride,
                  padding=padding, out_hw=out_hw, dtype=y.dtype)
    return y, cache


def avg_backward(grad_y, cache):
    """Every input of a window receives grad_y / (kh*kw)."""
    (kh, kw), padding = cache.kernel, cache.padding
    N, C, H, W = cache.x_shape
    ph, pw = padding
    with workspace.Scratch() as scratch:
        g = numpy.divide(grad_y, kh * kw, out=scratch.empty(grad_y.shape, cache.dtype))
        gpad = _grad_buffer(cache.x_shape, padding, cache.dtype, scratch)
        gpad.fill(0)
        overlap = _overlapping(cache.kernel, cache.stride)
        for k in range(kh * kw):
            view = window(gpad, k // kw, k % kw, cache.out_hw, cache.stride)
            if overlap:
                view += g
            else:
                view[...] = g
        return _crop(gpad, cache.x_shape, padding)
