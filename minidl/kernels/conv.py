"""2-D convolution (cross-correlation) on NCHW arrays: forward and backward kernels.

Math (no bias; the caller adds it)::

    xpad = x zero-padded by ph rows top/bottom and pw columns left/right
    y[n, f, i, j] = sum_{c, p, q} xpad[n, c, i*sh + p, j*sw + q] * w[f, c, p, q]

    x: (N, C, H, W)   w: (F, C, kh, kw)   y: (N, F, Ho, Wo)
    Ho = (H + 2*ph - kh) // sh + 1,   Wo = (W + 2*pw - kw) // sw + 1

Gradients, with g = dL/dy::

    dL/dw[f, c, p, q]      = sum_{n, i, j} g[n, f, i, j] * xpad[n, c, i*sh + p, j*sw + q]
    dL/dxpad[n, c, h', w'] = sum of g[n, f, i, j] * w[f, c, p, q]
                             over all (f, i, j, p, q) with i*sh + p == h' and j*sw + q == w'
    dL/dx = dL/dxpad with the padding border cut off

Both are computed with im2col: the input windows are unrolled into a matrix
``cols`` of shape (K, M) with K = kh*kw*C rows (one per weight of a filter) and
M = N*Ho*Wo columns (one per output pixel), so that

    y     = W @ cols           (F, K) @ (K, M)
    dW    = g @ cols.T         (F, M) @ (M, K)
    dcols = W.T @ g            (K, F) @ (F, M),   then col2im folds dcols back onto dxpad.

CPU (NumPy): cols is filled by one strided block copy per kernel offset (kh*kw Python
iterations, never a loop over pixels or images) and every product is a single BLAS call.
Which axis order the M columns use decides how fast those copies are; see ``_Layout``.

CPU, stride 1 with large kernels and batches (``use_fft``): the same convolution by FFT instead, in
``conv_fft`` (one complex product per frequency instead of kh*kw per output pixel); 3x3, stride 1:
also Winograd's F(2x2, 3x3) in ``conv_winograd``. Which CPU algorithm runs is measured once per
shape by default (``autotune``), else the fixed rule or a forced choice.
Large copies and folds are split over cores by channel (``parallel``).

GPU (CuPy): im2col and col2im are CUDA kernels (``cuda_sources``) that gather, one
thread per output element, so results are deterministic; products go to cuBLAS.
"""
import numpy

from ..backend import get_array_module
from . import autotune, blas, conv_fft, conv_winograd, parallel, workspace


# ---------------------------------------------------------------------------------------
# shapes and validation (shared with pool.py)
# ---------------------------------------------------------------------------------------
def conv_output_size(in_hw, kernel, stride, padding, what="conv2d"):
    """Output (Ho, Wo) of a sliding window; ``ValueError`` if the window does not fit.

    ``Ho = (H + 2*ph - kh) // sh + 1`` and the same for the width.
    """
    (H, W), (kh, kw), (sh, sw), (ph, pw) = in_hw, kernel, stride, padding
    if kh < 1 or kw < 1:
        raise ValueError(f"{what}: kernel size must be >= 1, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{what}: stride must be >= 1, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{what}: padding must be >= 0, got {(ph, pw)}")
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{what}: output size would be {Ho}x{Wo} (< 1): input {H}x{W}, kernel {kh}x{kw}, "
            f"stride {sh}x{sw}, padding {ph}x{pw}; the padded input "
            f"{H + 2 * ph}x{W + 2 * pw} must be at least as large as the kernel")
    return Ho, Wo


def float_dtype(*arrays):
    """The common floating dtype of ``arrays``; integer or bool inputs are rejected."""
    dtype = numpy.result_type(*[a.dtype for a in arrays])
    if dtype.kind != "f":
        raise TypeError(f"expected floating-point arrays, got dtype {dtype}")
    return dtype


def gpu_dtype(dtype):
    """The dtype the CUDA kernels compute in: float32/float64 as is, float16 via float32."""
    return dtype if dtype in (numpy.float32, numpy.float64) else numpy.dtype(numpy.float32)


def check_nchw(a, name):
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(a.shape)}")


# ---------------------------------------------------------------------------------------
# CPU buffer layouts
# ---------------------------------------------------------------------------------------
class _Layout:
    """Axis order of the internal CPU buffers (padded input, cols, gradients).

    An NCHW array is transposed once into an internal order with the channel axis first,
    so that ``cols[p, q]`` = the input block read by kernel offset (p, q) is one contiguous
    (C, ...) block and the product with the weights is a single (F, K) @ (K, M) GEMM.

    * ``cnhw`` (internal axes C, N, H, W; M ordered (n, i, j)): cheap transposes (only
      the outer axes N and C swap) but every copy moves rows of only Wo elements.
    * ``chwn`` (internal axes C, H, W, N; M ordered (i, j, n)): the batch is innermost,
      so with stride 1 a window row is one run of Wo*N contiguous elements and the kh*kw
      copies/adds run near memory speed; the price is transposing x, y and dy with N
      moving between innermost and outermost, which is slow per byte.

    Measured on the Madry MNIST network (2-core AVX-512 machine, batch 128, float32):
    conv 32->64 5x5 on 14x14 (K=800): im2col 7.4 -> 5.3 ms and a one-add-per-offset
    col2im 27 -> 11 ms with ``chwn`` (the two-stage col2im below: 26 -> 16 ms on a busy
    machine); conv 1->32 5x5 on 28x28 (K=25): the y/dy transposes cost 12 ms with
    ``chwn`` versus 2 ms with ``cnhw`` while the copies are small either way.
    """

    def __init__(self, name):
        self.name = name
        if name == "cnhw":
            self.perm, self.inv, self.h_ax, self.w_ax = (1, 0, 2, 3), (1, 0, 2, 3), 2, 3
        elif name == "chwn":
            self.perm, self.inv, self.h_ax, self.w_ax = (1, 2, 3, 0), (3, 0, 1, 2), 1, 2
        else:
            raise ValueError(f"layout must be 'cnhw' or 'chwn', got {name!r}")

    def shape(self, n, c, h, w):
        """Internal shape of an (n, c, h, w) array."""
        return (c, n, h, w) if self.name == "cnhw" else (c, h, w, n)

    def view(self, a, rows, cols):
        """``a`` sliced by ``rows`` along H and ``cols`` along W (a strided view)."""
        index = [slice(None)] * a.ndim
        index[self.h_ax] = rows
        index[self.w_ax] = cols
        return a[tuple(index)]


_LAYOUTS = {name: _Layout(name) for name in ("cnhw", "chwn")}


def _choose_layout(C, F, kh, kw, Wo, sw):
    """Pick the CPU layout from the sizes (the measured trade-off in ``_Layout``).

    The copies scale with the cols size K*M = kh*kw*C*M, the transposes with the
    x/y/dy sizes (C + 2F)*M (about), so batch-innermost pays off when K is large
    relative to C + F, and only when cnhw rows are short: fewer than 32 elements, or
    not contiguous at all (sw > 1).
    """
    if kh * kw * C >= 2 * (C + F) and (Wo < 32 or sw > 1):
        return _LAYOUTS["chwn"]
    return _LAYOUTS["cnhw"]


def _rows(start, count, step):
    """Slice of ``count`` indices ``start, start+step, ...`` (the rows read by one offset)."""
    return slice(start, start + step * (count - 1) + 1, step)


class _ConvCache:
    """What the backward pass needs; opaque to callers."""
    __slots__ = ("device", "cols", "wmat", "x_shape", "w_shape", "stride", "padding",
                 "out_hw", "layout", "dtype", "algorithm")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


# ---------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------
# Below this batch size the per-frequency products are too small for the FFT path to pay.
FFT_MIN_BATCH = 32


def use_fft(N, C, F, kernel, stride):
    """Whether the CPU forward takes the FFT path (``conv_fft``) rather than im2col.

    Only stride 1, only where the im2col GEMMs are expensive per output pixel (a kernel of
    at least 5x5 and C*kh*kw >= 400 products per output), and only for batches of at least
    ``FFT_MIN_BATCH``. Measured with ``python benchmarks/bench_conv_algorithms.py`` (2 cores,
    forward and backward): the Madry network's 5x5 32->64 conv on 14x14 takes 49 ms by FFT
    against 73 ms by im2col at batch 128, 12.8 against 18.2 ms at batch 32, but 11.4 against
    9.6 ms at batch 16; its 5x5 1->32 conv (C*kh*kw = 25) takes 46 ms by FFT against 11 by
    im2col. 3x3 convs with 48 and 96 channels (16x16 and 8x8 images, batch 128) came out
    only 0.78x and 0.91x the im2col time by FFT, and slower at batch 16; that margin was
    measured on one machine only, so they stay on im2col for now.
    """
    kh, kw = kernel
    return tuple(stride) == (1, 1) and kh * kw >= 25 and C * kh * kw >= 400 and N >= FFT_MIN_BATCH


ALGORITHMS = ("im2col", "fft", "winograd")


def conv2d_forward(x, w, stride, padding, *, layout=None, algorithm=None, grads=(True, True)):
    """Cross-correlation ``y = conv2d(x, w)`` without bias; returns ``(y, cache)``.

    x: (N, C, H, W), w: (F, C, kh, kw), stride=(sh, sw), padding=(ph, pw) (zero padding).
    y: (N, F, Ho, Wo) in the common float dtype of x and w, C-contiguous.
    ``algorithm`` ('im2col'; CPU and stride 1 only: 'fft'; also 3x3 only: 'winograd') and
    ``layout`` ('cnhw' or 'chwn', im2col's internal CPU buffer layout) force the method
    (tests, tuning). By default the CPU method follows ``autotune``'s mode: measured once per
    shape (``auto``), the fixed rule (``use_fft``, ``_choose_layout``) or a forced algorithm.
    ``grads`` = (input gradient, weight gradient) that the backward pass will be asked for:
    part of the tuning key, since the candidates' backward costs differ.
    """
    check_nchw(x, "conv2d input x")
    check_nchw(w, "conv2d weight w")
    N, C, H, W = x.shape
    F, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: input has {C} channels but weight expects {Cw} "
                         f"(x {tuple(x.shape)}, w {tuple(w.shape)})")
    stride, padding = tuple(stride), tuple(padding)
    Ho, Wo = conv_output_size((H, W), (kh, kw), stride, padding)
    dtype = float_dtype(x, w)
    xp = get_array_module(x, w)
    if algorithm not in (None,) + ALGORITHMS:
        raise ValueError(f"conv2d: algorithm must be one of {', '.join(ALGORITHMS)}, got {algorithm!r}")
    if layout not in (None, "cnhw", "chwn"):
        raise ValueError(f"conv2d: layout must be 'cnhw' or 'chwn', got {layout!r}")
    if algorithm not in (None, "im2col") and layout is not None:
        raise ValueError(f"conv2d: layout={layout!r} applies to the im2col algorithm, not to {algorithm}")
    if algorithm == "fft" and (xp is not numpy or stride != (1, 1)):
        raise ValueError(f"conv2d: the fft algorithm needs CPU arrays and stride 1, got "
                         f"{'CuPy' if xp is not numpy else 'NumPy'} arrays and stride {stride}")
    if algorithm == "winograd" and (xp is not numpy or not conv_winograd.applies((kh, kw), stride)):
        raise ValueError(f"conv2d: the winograd algorithm needs CPU arrays, a 3x3 kernel and stride 1, "
                         f"got {'CuPy' if xp is not numpy else 'NumPy'} arrays, kernel {(kh, kw)} and "
                         f"stride {stride}")
    if xp is not numpy:
        from .cuda_sources import launch
        return _forward_gpu(x, w, stride, padding, (Ho, Wo), dtype, xp, launch)
    run = lambda name: _forward_by(name, x, w, stride, padding, (Ho, Wo), dtype)  # noqa: E731
    if algorithm is not None or layout is not None:
        return run(_name(algorithm or "im2col", layout))
    mode = autotune.get_conv_algorithm()
    candidates = _cpu_candidates((kh, kw), stride)
    if mode in candidates or mode == "im2col":
        return run(mode)
    rule = "fft" if use_fft(N, C, F, (kh, kw), stride) else "im2col"
    if mode != "auto" or 2 * N * Ho * Wo * F * C * kh * kw < autotune.MIN_TUNE_FLOPS:
        return run(rule)
    # Measured choice (``autotune``): the key holds everything the timing depends on.
    grads = tuple(bool(g) for g in grads)
    key = ("conv2d", tuple(x.shape), tuple(w.shape), stride, padding, dtype.str, "cpu",
           (parallel.get_num_threads(), blas.get_num_threads()), grads)
    name = autotune.lookup(key)
    if name is not None:
        return run(name)

    def timed(name):
        def once():
            y, cache = run(name)
            if any(grads):
                conv2d_backward(y, cache, *grads)  # y stands in for dL/dy: only the time counts
        return once
    prefer = rule if rule == "fft" else "im2col_" + _choose_layout(C, F, kh, kw, Wo, stride[1]).name
    name = autotune.tune(key, {name: timed(name) for name in candidates}, prefer=prefer)
    workspace.release()  # the losers' buffers would otherwise stay pooled, unused
    return run(name)


def _name(algorithm, layout):
    return f"im2col_{layout}" if algorithm == "im2col" and layout is not None else algorithm


def _cpu_candidates(kernel, stride):
    """The CPU algorithms that compute this convolution (im2col's two layouts count as two)."""
    names = ["im2col_cnhw", "im2col_chwn"]
    if tuple(stride) == (1, 1):
        names.append("fft")
    if conv_winograd.applies(kernel, stride):
        names.append("winograd")
    return names


def _forward_by(name, x, w, stride, padding, out_hw, dtype):
    """The CPU forward by the algorithm called ``name`` (``_cpu_candidates``, or 'im2col' with
    the layout chosen by ``_choose_layout``)."""
    if name == "fft":
        return conv_fft.forward(x, w, padding, out_hw, dtype)
    if name == "winograd":
        return conv_winograd.forward(x, w, padding, out_hw, dtype)
    layout = None if name == "im2col" else name[len("im2col_"):]
    return _forward_cpu(x, w, stride, padding, out_hw, dtype, layout)


def conv2d_backward(grad_y, cache, need_x_grad=True, need_w_grad=True):
    """Gradients of ``conv2d_forward``: returns ``(grad_x or None, grad_w or None)``.

    grad_y: (N, F, Ho, Wo). grad_x: (N, C, H, W), grad_w: (F, C, kh, kw), both in the
    forward dtype. Skipped gradients cost nothing.
    """
    expected = (cache.x_shape[0], cache.w_shape[0]) + tuple(cache.out_hw)
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"conv2d backward: grad_y has shape {tuple(grad_y.shape)}, "
                         f"expected {expected}")
    if not (need_x_grad or need_w_grad):
        return None, None
    if cache.device == "cpu":
        if cache.algorithm == "fft":
            return conv_fft.backward(grad_y, cache, need_x_grad, need_w_grad)
        if cache.algorithm == "winograd":
            return conv_winograd.backward(grad_y, cache, need_x_grad, need_w_grad)
        return _backward_cpu(grad_y, cache, need_x_grad, need_w_grad)
    from .cuda_sources import launch
    return _backward_gpu(grad_y, cache, need_x_grad, need_w_grad,
                         get_array_module(grad_y, cache.cols), launch)


# ---------------------------------------------------------------------------------------
# CPU (NumPy)
# ---------------------------------------------------------------------------------------
def _forward_cpu(x, w, stride, padding, out_hw, dtype, layout):
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
    lay = _LAYOUTS[layout] if layout is not None else _choose_layout(C, F, kh, kw, Wo, sw)

    # Zero-padded input in the internal layout: the transpose and the padding are one copy.
    # (Large CPU arrays come from ``workspace``, which reuses buffers to avoid page faults.)
    xpad = workspace.empty(lay.shape(N, C, H + 2 * ph, W + 2 * pw), dtype)
    x_int = x.transpose(lay.perm)

    # im2col: cols[p, q] is the (C, spatial...) block that kernel offset (p, q) reads,
    # i.e. cols[p, q, c, <n, i, j>] = xpad[n, c, i*sh + p, j*sw + q]. One contiguous block
    # write per offset; K is ordered (p, q, c) and M follows the layout's spatial order.
    # Channels are independent, so threads take disjoint channel ranges (``parallel``).
    cols = workspace.empty((kh, kw) + lay.shape(N, C, Ho, Wo), dtype)

    def im2col(c0, c1):
        if ph or pw:
            xpad[c0:c1].fill(0)
        lay.view(xpad[c0:c1], slice(ph, ph + H), slice(pw, pw + W))[...] = x_int[c0:c1]
        for p in range(kh):
            for q in range(kw):
                cols[p, q, c0:c1] = lay.view(xpad[c0:c1], _rows(p, Ho, sh), _rows(q, Wo, sw))
    parallel.parallel_for(C, im2col, cols.nbytes)

    K, M = kh * kw * C, N * Ho * Wo
    # Weights reordered to the same (p, q, c) order as the rows of cols (tiny copy).
    wmat = numpy.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype=dtype).reshape(F, K)
    y_int = numpy.matmul(wmat, cols.reshape(K, M), out=workspace.empty((F, M), dtype))
    # Split along F, the outer axis of y_int in both layouts.
    y = workspace.copy(y_int.reshape(lay.shape(N, F, Ho, Wo)).transpose(lay.inv), axis=1)
    cache = _ConvCache(device="cpu", cols=cols, wmat=wmat, x_shape=tuple(x.shape),
                       w_shape=tuple(w.shape), stride=stride, padding=padding,
                       out_hw=out_hw, layout=lay, dtype=dtype, algorithm="im2col")
    return y, cache


def _backward_cpu(grad_y, cache, need_x_grad, need_w_grad):
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    (Ho, Wo), (sh, sw), (ph, pw) = cache.out_hw, cache.stride, cache.padding
    lay, cols, wmat, dtype = cache.layout, cache.cols, cache.wmat, cache.dtype
    K, M = kh * kw * C, N * Ho * Wo

    # dy in the internal layout as an (F, M) matrix whose columns match those of cols.
    g = workspace.copy(grad_y.transpose(lay.perm), dtype).reshape(F, M)

    grad_w = None
    if need_w_grad:
        # A product with a long inner dimension M and a small output. OpenBLAS (2 threads)
        # is sensitive to its orientation: with fewer output rows than columns it
        # measured up to 100x slower when another process competes for the cores
        # ((25, M) @ (M, 32): 1.8 s instead of 12 ms), and ~20% slower when idle. So the
        # larger of K and F is made the row dimension.
        if K >= F:
            gw = numpy.matmul(cols.reshape(K, M), g.T).T                # (F, K)
        else:
            gw = numpy.matmul(g, cols.reshape(K, M).T)                  # (F, K)
        # K is ordered (p, q, c): back to (F, C, kh, kw)
        grad_w = numpy.ascontiguousarray(gw.reshape(F, kh, kw, C).transpose(0, 3, 1, 2))

    grad_x = None
    if need_x_grad:
        gcols = numpy.matmul(wmat.T, g, out=workspace.empty((K, M), dtype))
        gcols = gcols.reshape(cols.shape)                              # (kh, kw, C, ...)
        grad_x = _col2im_cpu(gcols, lay, (N, C, H, W), (Ho, Wo), (sh, sw), (ph, pw), dtype)
    return grad_x, grad_w


def _col2im_cpu(gcols, lay, x_shape, out_hw, stride, padding, dtype):
    """Fold ``gcols`` (kh, kw, C, spatial...) back onto the input: the adjoint of im2col.

    dxpad[window(p, q)] += gcols[p, q] for every offset, done in two stages so that most
    adds run over long contiguous rows (a ufunc add into a strided view with short rows
    measured ~3x slower per element than a contiguous one):

      1. for each column offset q, a strip S_q of shape (C, Hpad, Wo) [in layout order]
         collects sum_p gcols[p, q] shifted down by p rows (stride sh): along H the
         blocks are whole Ho*Wo(*N) runs;
      2. S_q is added into dxpad at columns q, q+sw, ... (kw strided adds in total
         instead of kh*kw).

    Additions happen in a fixed order, so the result is deterministic.
    """
    N, C, H, W = x_shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
    kh, kw = gcols.shape[:2]
    Hpad, Wpad = H + 2 * ph, W + 2 * pw
    gxpad = workspace.empty(lay.shape(N, C, Hpad, Wpad), dtype)
    strip = workspace.empty(lay.shape(N, C, Hpad, Wo), dtype)
    all_cols = slice(None)

    def fold(c0, c1):  # channels c0..c1-1; threads take disjoint channel ranges
        gx, st = gxpad[c0:c1], strip[c0:c1]
        gx.fill(0)
        for q in range(kw):
            st.fill(0)
            for p in range(kh):
                view = lay.view(st, _rows(p, Ho, sh), all_cols)
                view += gcols[p, q, c0:c1]
            view = lay.view(gx, slice(None), _rows(q, Wo, sw))
            view += st
    parallel.parallel_for(C, fold, gcols.nbytes)
    interior = lay.view(gxpad, slice(ph, ph + H), slice(pw, pw + W))
    return workspace.copy(interior.transpose(lay.inv), axis=1)  # C: outer in gxpad


# ---------------------------------------------------------------------------------------
# GPU (CuPy + CUDA kernels). Written against ``xp`` and a ``launch`` callable so that the
# exact same code can be exercised on the host with the kernel sources compiled as C++.
# ---------------------------------------------------------------------------------------
def _forward_gpu(x, w, stride, padding, out_hw, dtype, xp, launch):
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
    wdt = gpu_dtype(dtype)
    x = xp.ascontiguousarray(x, dtype=wdt)
    w = xp.ascontiguousarray(w, dtype=wdt)
    K, M = C * kh * kw, N * Ho * Wo
    # cols[k, m] with k = (c*kh + p)*kw + q (w's own order) and m = (n*Ho + i)*Wo + j.
    cols = xp.empty((K, M), wdt)
    launch("minidl_im2col", wdt, K * M,
           x, cols, K * M, N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)
    wmat = w.reshape(F, K)
    y = xp.matmul(wmat, cols).reshape(F, N, Ho, Wo).transpose(1, 0, 2, 3)
    y = xp.ascontiguousarray(y, dtype=dtype)
    cache = _ConvCache(device="cuda", cols=cols, wmat=wmat, x_shape=tuple(x.shape),
                       w_shape=tuple(w.shape), stride=stride, padding=padding,
                       out_hw=out_hw, layout=None, dtype=dtype, algorithm="im2col")
    return y, cache


def _backward_gpu(grad_y, cache, need_x_grad, need_w_grad, xp, launch):
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    (Ho, Wo), (sh, sw), (ph, pw) = cache.out_hw, cache.stride, cache.padding
    cols, wmat, dtype = cache.cols, cache.wmat, cache.dtype
    wdt = cols.dtype
    M = N * Ho * Wo
    g = xp.ascontiguousarray(grad_y.transpose(1, 0, 2, 3), dtype=wdt).reshape(F, M)
    grad_w = grad_x = None
    if need_w_grad:
        grad_w = xp.matmul(g, cols.T).reshape(F, C, kh, kw).astype(dtype, copy=False)
    if need_x_grad:
        gcols = xp.ascontiguousarray(xp.matmul(wmat.T, g))               # (K, M)
        grad_x = xp.empty((N, C, H, W), wdt)
        total = N * C * H * W
        launch("minidl_col2im", wdt, total,
               gcols, grad_x, total, N, C, H, W, kh, kw, sh, sw, ph, pw, Ho, Wo)
        grad_x = grad_x.astype(dtype, copy=False)
    return grad_x, grad_w
