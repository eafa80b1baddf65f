"""2-D convolution by im2col on the CPU: the fast path of ``reference.conv2d_forward``.

The same product as the reference (``y = W @ cols``, ``dW = g @ cols.T``, ``dcols = W.T @ g``
folded back by col2im; the math is in ``conv.py``), arranged for speed:

* the batch is processed a chunk of images at a time (``CHUNK_BYTES`` of cols), so cols is
  never built whole, stays in cache between its copy and its product, and is not kept for the
  backward pass (which rebuilds it from x);
* each chunk of the input is transposed into an internal layout (``_Layout``): channels first,
  so that cols is filled by one strided block copy per kernel offset (kh*kw Python
  iterations, never a loop over pixels or images), or channels last, so that cols is one
  strided copy with cols^T as the matrix; every product is one BLAS call;
* the buffers come from ``workspace`` (reused instead of freshly page-faulted);
* the copies and folds are split over cores by channel (by image channels last) when one chunk
  is the whole batch; otherwise whole chunks go to the kernel threads (``parallel``).
"""
import contextlib
import math

import numpy
from numpy.lib.stride_tricks import as_strided

from .runtime import parallel, workspace
from .arrays import Cache


# ---------------------------------------------------------------------------------------
# buffer layouts
# ---------------------------------------------------------------------------------------
class _Layout:
    """Axis order of the internal CPU buffers (padded input, cols, gradients).

    An NCHW array is transposed once into an internal order. With the channel axis first,
    ``cols[p, q]`` = the input block read by kernel offset (p, q) is one contiguous (C, ...)
    block and the product with the weights is a single (F, K) @ (K, M) GEMM; channels last,
    cols is the (M, K) matrix and the product (M, K) @ (K, F).

    * ``cnhw`` (internal axes C, N, H, W; M ordered (n, i, j)): cheap transposes (only
      the outer axes N and C swap) but every copy moves rows of only Wo elements.
    * ``chwn`` (internal axes C, H, W, N; M ordered (i, j, n)): the batch is innermost,
      so with stride 1 a window row is one run of Wo*N contiguous elements and the kh*kw
      copies/adds run near memory speed; the price is transposing x, y and dy with N
      moving between innermost and outermost, which is slow per byte.

    * ``nhwc`` (internal axes N, H, W, C; channels last, as oneDNN and cuDNN prefer): cols is
      the transposed matrix (M, K) with rows ordered (n, i, j). The kw*C inputs of one kernel
      row form one contiguous run of the padded input, so cols is a single strided copy
      (``_im2col_nhwc``), and the products are ``cols @ W^T`` with the long M as rows, which
      OpenBLAS's SkylakeX kernels run faster than ``W @ cols`` (``benchmarks/README.md``).
      The transposes between NCHW and NHWC move C between outer and innermost.

    Which one wins depends on the shapes and the BLAS kernel; the measurements behind
    ``choose_layout`` are in ``benchmarks/README.md``, and ``auto`` mode times all three.
    """

    def __init__(self, name):
        self.name = name
        self.channels_last = name == "nhwc"
        if name == "cnhw":
            self.perm, self.inv, self.h_ax, self.w_ax = (1, 0, 2, 3), (1, 0, 2, 3), 2, 3
        elif name == "chwn":
            self.perm, self.inv, self.h_ax, self.w_ax = (1, 2, 3, 0), (3, 0, 1, 2), 1, 2
        elif name == "nhwc":
            self.perm, self.inv, self.h_ax, self.w_ax = (0, 2, 3, 1), (0, 3, 1, 2), 1, 2
        else:
            raise ValueError(f"layout must be one of {', '.join(map(repr, LAYOUT_NAMES))}, got {name!r}")

    def shape(self, n, c, h, w):
        """Internal shape of an (n, c, h, w) array (its axes in ``perm`` order)."""
        dims = (n, c, h, w)
        return tuple(dims[axis] for axis in self.perm)

    def cols_shape(self, kernel, n, c, ho, wo):
        """Shape of the cols buffer: (kh, kw, C, spatial...) channels first, (n, Ho, Wo, kh,
        kw * C) channels last; either way K * M elements."""
        kh, kw = kernel
        return (n, ho, wo, kh, kw * c) if self.channels_last else (kh, kw) + self.shape(n, c, ho, wo)

    def view(self, a, rows, cols):
        """``a`` sliced by ``rows`` along H and ``cols`` along W (a strided view)."""
        index = [slice(None)] * a.ndim
        index[self.h_ax] = rows
        index[self.w_ax] = cols
        return a[tuple(index)]


LAYOUT_NAMES = ("cnhw", "chwn", "nhwc")
LAYOUTS = {name: _Layout(name) for name in LAYOUT_NAMES}


def choose_layout(C, F, kh, kw, Wo, sw):
    """Pick the CPU layout from the sizes (the measured trade-off in ``_Layout``).

    The copies scale with the cols size K*M = kh*kw*C*M, the transposes with the
    x/y/dy sizes (C + 2F)*M (about), so batch-innermost pays off when K is large
    relative to C + F, and only when cnhw rows are short: fewer than 32 elements, or
    not contiguous at all (sw > 1).
    """
    if kh * kw * C >= 2 * (C + F) and (Wo < 32 or sw > 1):
        return LAYOUTS["chwn"]
    return LAYOUTS["cnhw"]


def _rows(start, count, step):
    """Slice of ``count`` indices ``start, start+step, ...`` (the rows read by one offset)."""
    return slice(start, start + step * (count - 1) + 1, step)



# ---------------------------------------------------------------------------------------
# forward and backward, a chunk of images at a time
# ---------------------------------------------------------------------------------------
# The cols matrix of a stride-1 kxk layer is k*k times its input (113 MB for a 3x3 24->24 layer
# on 32x32 images at batch 128), so it is never built whole: the batch is cut into chunks of
# images whose cols fits in about CHUNK_BYTES, and each chunk runs im2col, its products and the
# fold on its own. No cols is kept for the backward pass either: that pass rebuilds each chunk's
# cols from x (which the caller keeps alive: autograd holds a Function's inputs) for the weight
# gradient. The chunks are shared out to the kernel threads, each of which runs whole chunks
# (copies and products, BLAS single-threaded: ``parallel.for_each_item``), so a chunk stays in
# its core's cache from its copy to its product and the threads meet once per call instead of
# at every copy and product. The chunk size depends on the shapes only, so the results stay
# deterministic and independent of the thread count. The size was measured on the CIFAR
# layers (``benchmarks/README.md``): 4 MiB is faster than 1-2 MiB (more calls) and 8-16 MiB
# (out of cache).
CHUNK_BYTES = 4 << 20


# At least this many chunks (when the batch has as many images), so that small layers too are
# shared out to the threads; a count fixed by the shapes keeps results thread-count independent.
# Two rather than four: for the 16->32 4x4 stride-2 layer of wong_mnist (batch 100) forward and
# backward took 5.8 ms with two chunks and 11.7 ms with four, whose 25-image chunks make the
# batch-innermost layout's transposes slow (benchmarks/README.md).
MIN_CHUNKS = 2


def _chunks(N, bytes_per_image):
    """Image ranges of about ``CHUNK_BYTES`` of cols each, at least ``MIN_CHUNKS`` of them."""
    return parallel.batch_chunks(N, bytes_per_image, CHUNK_BYTES, MIN_CHUNKS)


def _take(flat, shape):
    """The first prod(shape) elements of the flat buffer ``flat`` as a C-ordered array of
    ``shape`` (one buffer per call serves every chunk, the shorter last one included)."""
    return flat[:math.prod(shape)].reshape(shape)


def _im2col(x, lay, kernel, stride, padding, out_hw, xpad, cols):
    """Fill ``cols`` (kh, kw, C, spatial...) with the windows of ``x`` (n, C, H, W), using
    ``xpad`` (the padded input in the internal layout) as the staging buffer; returns cols.

    cols[p, q, c, <n, i, j>] = xpad[n, c, i*sh + p, j*sw + q]: one contiguous block write per
    kernel offset, K ordered (p, q, c), M in the layout's spatial order. Channels are
    independent, so threads take disjoint channel ranges (``parallel``).
    """
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, out_hw
    H, W = x.shape[2:]
    x_int = x.transpose(lay.perm)  # the transpose and the padding are one copy

    def run(c0, c1):
        xp_ = xpad[c0:c1]
        # Only the border is zeroed: the interior is overwritten next.
        for hs, ws in ((slice(0, ph), slice(None)), (slice(ph + H, None), slice(None)),
                       (slice(ph, ph + H), slice(0, pw)), (slice(ph, ph + H), slice(pw + W, None))):
            lay.view(xp_, hs, ws).fill(0)
        lay.view(xp_, slice(ph, ph + H), slice(pw, pw + W))[...] = x_int[c0:c1]
        for p in range(kh):
            for q in range(kw):
                cols[p, q, c0:c1] = lay.view(xpad[c0:c1], _rows(p, Ho, sh), _rows(q, Wo, sw))
    parallel.parallel_for(x_int.shape[0], run, cols.nbytes)
    return cols


def _im2col_nhwc(x, kernel, stride, padding, out_hw, xpad, cols):
    """Channels last: fill ``cols`` (n, Ho, Wo, kh, kw*C) with the windows of ``x`` (n, C, H, W),
    staging the padded input in ``xpad`` (n, Hp, Wp, C); returns cols.

    cols[n, i, j, p, q*C + c] = xpad[n, i*sh + p, j*sw + q, c]. For fixed (n, i, j, p) the kw*C
    values are xpad[n, i*sh + p, j*sw : j*sw + kw, :], one contiguous run, so the windows are a
    single strided view of xpad (overlapping, read only) and cols is one copy of it. As an
    (M, K) matrix, rows ordered (n, i, j) and K ordered (p, q, c) like the other layouts' rows.
    Images are independent, so threads take disjoint image ranges.
    """
    (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, out_hw
    C, H, W = x.shape[1:]

    def run(n0, n1):
        xp_ = xpad[n0:n1]
        for border in (xp_[:, :ph], xp_[:, ph + H:], xp_[:, ph:ph + H, :pw], xp_[:, ph:ph + H, pw + W:]):
            border.fill(0)
        xp_[:, ph:ph + H, pw:pw + W] = x[n0:n1].transpose(0, 2, 3, 1)
        s_n, s_h, s_w, s_c = xp_.strides
        cols[n0:n1] = as_strided(xp_, (n1 - n0, Ho, Wo, kh, kw * C), (s_n, sh * s_h, sw * s_w, s_h, s_c),
                                 writeable=False)
    parallel.parallel_for(x.shape[0], run, cols.nbytes)
    return cols


def _windows(x, lay, kernel, stride, padding, out_hw, xpad, cols):
    """im2col in layout ``lay``: ``_im2col_nhwc`` channels last, else ``_im2col``."""
    if lay.channels_last:
        return _im2col_nhwc(x, kernel, stride, padding, out_hw, xpad, cols)
    return _im2col(x, lay, kernel, stride, padding, out_hw, xpad, cols)


def _buffers(dtype, **sizes):
    """A ``worker_context`` for ``parallel.for_each_item``: each thread's own flat scratch
    buffers (name -> number of elements), taken once and reused for all its chunks."""
    @contextlib.contextmanager
    def context():
        with workspace.Scratch() as scratch:
            yield {name: scratch.empty((size,), dtype) for name, size in sizes.items()}
    return context


def _conv_chunks(x, wmat, lay, kernel, stride, padding, out):
    """``out`` (N, F, Ho, Wo) = conv2d(x, w) for x (N, C, H, W) and the weights as an (F, K)
    matrix ``wmat`` (K ordered (p, q, c)), a chunk of images at a time, the chunks spread
    over the kernel threads."""
    N, C, H, W = x.shape
    F, K = wmat.shape
    (kh, kw), (ph, pw), (Ho, Wo) = kernel, padding, out.shape[2:]
    Hp, Wp = H + 2 * ph, W + 2 * pw
    dtype = out.dtype
    chunks = _chunks(N, K * Ho * Wo * dtype.itemsize)
    nc = chunks[0][1] if chunks else 0

    def run(i, buf):
        n0, n1 = chunks[i]
        n = n1 - n0
        c = _windows(x[n0:n1], lay, kernel, stride, padding, (Ho, Wo),
                     _take(buf["xpad"], lay.shape(n, C, Hp, Wp)), _take(buf["cols"], lay.cols_shape(kernel, n, C, Ho, Wo)))
        if lay.channels_last:
            yc = numpy.matmul(c.reshape(-1, K), wmat.T, out=_take(buf["y"], (n * Ho * Wo, F)))
            parallel.assign(out[n0:n1], yc.reshape(n, Ho, Wo, F).transpose(lay.inv), axis=0)
        else:
            yc = numpy.matmul(wmat, c.reshape(K, -1), out=_take(buf["y"], (F, n * Ho * Wo)))
            # F is the outer axis of y_int in both channels-first layouts (a split along it when one chunk is all)
            parallel.assign(out[n0:n1], yc.reshape(lay.shape(n, F, Ho, Wo)).transpose(lay.inv), axis=1)
    parallel.for_each_item(len(chunks), run, N * K * Ho * Wo * dtype.itemsize,
                           _buffers(dtype, xpad=nc * C * Hp * Wp, cols=nc * K * Ho * Wo, y=nc * F * Ho * Wo))
    return out


def forward(x, w, stride, padding, out_hw, dtype, layout=None):
    """y = conv2d(x, w) by im2col on NumPy arrays; returns ``(y, cache)``.

    ``layout`` ('cnhw', 'chwn' or 'nhwc') forces the internal buffer layout; by default it is
    chosen from the shapes (``choose_layout``). The cache refers to ``x`` (not a copy):
    ``x`` must not change before the backward pass (autograd checks this).
    """
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    lay = LAYOUTS[layout] if layout is not None else choose_layout(C, F, kh, kw, out_hw[1], stride[1])
    # Weights reordered to the same (p, q, c) order as the rows of cols (tiny copy).
    wmat = numpy.ascontiguousarray(w.transpose(0, 2, 3, 1), dtype=dtype).reshape(F, kh * kw * C)
    y = _conv_chunks(x, wmat, lay, (kh, kw), stride, padding, numpy.empty((N, F) + tuple(out_hw), dtype))
    cache = Cache(device="cpu", x=x, wmat=wmat, x_shape=tuple(x.shape),
                  w_shape=tuple(w.shape), stride=stride, padding=padding,
                  out_hw=out_hw, layout=lay, dtype=dtype, algorithm="im2col")
    return y, cache


# Channels last, dL/dx is a convolution of dy from this many input channels up, whatever F is.
BY_CONV_MIN_CHANNELS_LAST = 16


def _input_grad_by_conv(stride, padding, kernel, C, F, channels_last=False):
    """Whether dL/dx is computed as a convolution of dy (see ``backward``): stride 1, padding
    at most kernel - 1 (so that dy's own padding kh - 1 - ph is not negative), and F <= C: the
    convolution copies kh*kw*F values per input pixel where col2im adds kh*kw*C, so with few
    input channels (an image's first layer, whose input gradient attacks need) col2im is cheaper.
    Channels last, the convolution's copy is one strided call while col2im's kh*kw adds run
    over rows of only C values, so the convolution wins from ``BY_CONV_MIN_CHANNELS_LAST``
    input channels even where F > C (``benchmarks/README.md``)."""
    (kh, kw), (ph, pw) = kernel, padding
    return (tuple(stride) == (1, 1) and ph <= kh - 1 and pw <= kw - 1
            and (F <= C or (channels_last and C >= BY_CONV_MIN_CHANNELS_LAST)))


def backward(grad_y, cache, need_x_grad, need_w_grad):
    """Gradients of :func:`forward`: returns ``(grad_x or None, grad_w or None)``.

    dL/dw = dy @ cols^T, summed over the chunks of images. For stride 1, dL/dx is itself a
    convolution: the "full" correlation of dy (zero-padded by kh - 1 - ph, kw - 1 - pw) with
    the weights flipped in both spatial axes and with F and C swapped,

        dL/dx[n, c, h, w] = sum_{f, p, q} dypad[n, f, h + p, w + q] * w[f, c, kh-1-p, kw-1-q],

    computed by the same im2col product as the forward pass: kh*kw block copies instead of
    col2im's kh*kw adds plus its zero fills (where F <= C, or channels last from
    ``BY_CONV_MIN_CHANNELS_LAST`` input channels: ``_input_grad_by_conv``). Otherwise
    dcols = W^T dy is folded back by col2im.
    """
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    (Ho, Wo), (sh, sw), (ph, pw) = cache.out_hw, cache.stride, cache.padding
    lay, x, wmat, dtype = cache.layout, cache.x, cache.wmat, cache.dtype
    K, Hp, Wp = kh * kw * C, H + 2 * ph, W + 2 * pw
    by_conv = need_x_grad and _input_grad_by_conv(cache.stride, cache.padding, (kh, kw), C, F, lay.channels_last)
    grad_x = None
    if by_conv:
        # w flipped, F and C swapped, as a (C, K') matrix with K' ordered (p, q, f)
        wflip = numpy.ascontiguousarray(
            wmat.reshape(F, kh, kw, C)[:, ::-1, ::-1, :].transpose(3, 1, 2, 0)).reshape(C, kh * kw * F)
        grad_x = _conv_chunks(grad_y, wflip, lay, (kh, kw), (1, 1), (kh - 1 - ph, kw - 1 - pw),
                              numpy.empty((N, C, H, W), dtype))
    if not (need_w_grad or (need_x_grad and not by_conv)):
        return grad_x, None
    fold = need_x_grad and not by_conv
    if fold:
        grad_x = numpy.empty((N, C, H, W), dtype)
    chunks = _chunks(N, K * Ho * Wo * dtype.itemsize)
    nc = chunks[0][1] if chunks else 0
    # Each chunk's share of dL/dw goes to a slot of its own; the slots are summed in chunk
    # order afterwards, so the sum is the same whichever threads computed them. The product
    # has a long inner dimension M and a small output, and OpenBLAS is sensitive to its
    # orientation: with fewer output rows than columns it can be far slower, worst when another
    # process competes for the cores (figures in benchmarks/README.md). So the larger of K and F
    # is made the row dimension.
    parts = numpy.zeros((max(1, len(chunks)),) + ((K, F) if K >= F else (F, K)), dtype) if need_w_grad else None

    def run(i, buf):
        n0, n1 = chunks[i]
        n = n1 - n0
        # dy in the internal layout as a matrix whose columns (channels first: (F, Mc)) or rows
        # (channels last: (Mc, F)) match those of cols; cm is cols as a (K, Mc) matrix.
        g = _take(buf["g"], lay.shape(n, F, Ho, Wo))
        parallel.assign(g, grad_y[n0:n1].transpose(lay.perm))
        g = g.reshape(-1, F).T if lay.channels_last else g.reshape(F, -1)
        c = _take(buf["cols"], lay.cols_shape((kh, kw), n, C, Ho, Wo))
        cm = c.reshape(-1, K).T if lay.channels_last else c.reshape(K, -1)
        if need_w_grad:
            _windows(x[n0:n1], lay, (kh, kw), cache.stride, cache.padding, cache.out_hw,
                     _take(buf["xpad"], lay.shape(n, C, Hp, Wp)), c)
            if K >= F:
                numpy.matmul(cm, g.T, out=parts[i])              # (K, F)
            else:
                numpy.matmul(g, cm.T, out=parts[i])              # (F, K)
        if fold:
            # dcols, then the fold into the padded-input buffer, free again
            gxpad = _take(buf["xpad"], lay.shape(n, C, Hp, Wp))
            if lay.channels_last:
                numpy.matmul(g.T, wmat, out=c.reshape(-1, K))
                _col2im_nhwc(c, (n, C, H, W), (Ho, Wo), (sh, sw), (ph, pw), gxpad, out=grad_x[n0:n1])
            else:
                numpy.matmul(wmat.T, g, out=cm)
                _col2im_cpu(c, lay, (n, C, H, W), (Ho, Wo), (sh, sw), (ph, pw), gxpad,
                            _take(buf["strip"], lay.shape(n, C, Hp, Wo)), out=grad_x[n0:n1])
    sizes = dict(xpad=nc * C * Hp * Wp, cols=nc * K * Ho * Wo, g=nc * F * Ho * Wo)
    if fold and not lay.channels_last:
        sizes["strip"] = nc * C * Hp * Wo
    parallel.for_each_item(len(chunks), run, N * K * Ho * Wo * dtype.itemsize, _buffers(dtype, **sizes))
    grad_w = None
    if need_w_grad:
        gw = parts[0]
        for part in parts[1:]:
            gw += part
        gw = gw.T if K >= F else gw                                       # (F, K)
        # K is ordered (p, q, c): back to (F, C, kh, kw)
        grad_w = numpy.ascontiguousarray(gw.reshape(F, kh, kw, C).transpose(0, 3, 1, 2))
    return grad_x, grad_w


def _col2im_cpu(gcols, lay, x_shape, out_hw, stride, padding, gxpad, strip, out):
    """Fold ``gcols`` (kh, kw, C, spatial...) back onto the input: the adjoint of im2col.

    dxpad[window(p, q)] += gcols[p, q] for every offset, done in two stages so that most
    adds run over long contiguous rows (a ufunc add into a strided view with short rows is
    several times slower per element than a contiguous one):

      1. for each column offset q, a strip S_q of shape (C, Hpad, Wo) [in layout order]
         collects sum_p gcols[p, q] shifted down by p rows (stride sh): along H the
         blocks are whole Ho*Wo(*N) runs;
      2. S_q is added into dxpad at columns q, q+sw, ... (kw strided adds in total
         instead of kh*kw).

    ``gxpad`` (the padded input's shape in the internal layout) and ``strip`` are scratch; the
    interior of gxpad is written to ``out`` (N, C, H, W). Additions happen in a fixed order,
    so the result is deterministic.
    """
    N, C, H, W = x_shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
    kh, kw = gcols.shape[:2]
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
    parallel.assign(out, interior.transpose(lay.inv), axis=1)  # C: outer in gxpad


def _col2im_nhwc(gcols, x_shape, out_hw, stride, padding, gxpad, out):
    """Channels last: fold ``gcols`` (n, Ho, Wo, kh, kw*C) back onto the input, the adjoint of
    ``_im2col_nhwc``: gxpad[n, i*sh + p, j*sw + q, c] += gcols[n, i, j, p, q*C + c] for every
    kernel offset, one strided add each (windows overlap, so they cannot be one add); then the
    interior of ``gxpad`` (n, Hp, Wp, C) goes to ``out`` (n, C, H, W). Images are independent,
    so threads take disjoint image ranges; additions happen in a fixed order."""
    N, C, H, W = x_shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
    kh = gcols.shape[3]
    kw = gcols.shape[4] // C
    blocks = gcols.reshape(gcols.shape[:3] + (kh, kw, C))

    def fold(n0, n1):
        gx = gxpad[n0:n1]
        gx.fill(0)
        for p in range(kh):
            for q in range(kw):
                view = gx[:, _rows(p, Ho, sh), _rows(q, Wo, sw)]
                view += blocks[n0:n1, :, :, p, q]
    parallel.parallel_for(N, fold, gcols.nbytes)
    parallel.assign(out, gxpad[:, ph:ph + H, pw:pw + W].transpose(0, 3, 1, 2), axis=0)
