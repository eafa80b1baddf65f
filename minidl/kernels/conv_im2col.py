"""2-D convolution by im2col on the CPU: the fast implementation of ``reference.conv2d_forward``.

The same products as the reference (``y = W @ cols``, ``dW = g @ cols.T``, ``dcols = W.T @ g``
folded back by col2im; the math is in ``conv.py``), with four arrangements, each readable on
its own:

1. **Chunks of images** (``_chunks``): the batch is processed a chunk of images at a time
   (``CHUNK_BYTES`` of cols), so cols is never built whole, stays in cache between its copy and
   its product, and is not kept for the backward pass (which rebuilds it from x). The chunks
   go to the kernel threads (``runtime.parallel.for_each_item``), each with its own scratch
   buffers (``runtime.workspace``).
2. **Layouts** (``ChannelsFirst``, ``ChannelsLast``): a chunk is transposed into an internal
   axis order whose im2col is a few large block copies (never a loop over pixels). A layout
   object owns its im2col, its col2im and the orientation of its two products, so the drivers
   below never ask which layout they run.
3. **The input gradient as a convolution** (``_input_grad_by_conv``): for stride 1, dL/dx is the
   convolution of dy with the flipped weights, block copies instead of col2im's adds.
4. **The weight gradient's orientation** (``_weight_grad_product``): the larger of K and F is
   the row dimension of its product.
"""
import contextlib
import math

import numpy
from numpy.lib.stride_tricks import as_strided

from .arrays import Cache
from .runtime import parallel, workspace


def _rows(start, count, step):
    """Slice of ``count`` indices ``start, start+step, ...`` (the rows read by one offset)."""
    return slice(start, start + step * (count - 1) + 1, step)


def _take(flat, shape):
    """The first prod(shape) elements of the flat buffer ``flat`` as a C-ordered array of
    ``shape`` (one buffer per thread serves every chunk, the shorter last one included)."""
    return flat[:math.prod(shape)].reshape(shape)


# ---------------------------------------------------------------------------------------
# 2. layouts
# ---------------------------------------------------------------------------------------
class ChannelsFirst:
    """Channel axis outermost: ``cols[p, q]`` = the input block read by kernel offset (p, q) is
    one contiguous (C, ...) block, written by one strided copy per offset, and cols is the
    (K, M) matrix of ``y = W @ cols`` (K ordered (p, q, c), M in the layout's spatial order).

    * ``cnhw`` (internal axes C, N, H, W): cheap transposes (only the outer axes N and C swap)
      but every copy moves rows of only Wo elements.
    * ``chwn`` (internal axes C, H, W, N): the batch is innermost, so with stride 1 a window row
      is one run of Wo*N contiguous elements; the price is transposing x, y and dy with N moving
      between innermost and outermost.
    """
    out_axis = 1          # F is outer in y's internal order: split the copy-out along it

    def __init__(self, name, perm, inv, h_ax, w_ax):
        self.name, self.perm, self.inv, self.h_ax, self.w_ax = name, perm, inv, h_ax, w_ax

    def shape(self, n, c, h, w):
        """Internal shape of an (n, c, h, w) array (its axes in ``perm`` order)."""
        dims = (n, c, h, w)
        return tuple(dims[axis] for axis in self.perm)

    def cols_shape(self, kernel, n, c, ho, wo):
        return tuple(kernel) + self.shape(n, c, ho, wo)

    def view(self, a, rows, cols):
        """``a`` sliced by ``rows`` along H and ``cols`` along W (a strided view)."""
        index = [slice(None)] * a.ndim
        index[self.h_ax], index[self.w_ax] = rows, cols
        return a[tuple(index)]

    def as_km(self, cols, K):
        return cols.reshape(K, -1)

    def as_fm(self, g_int, F):
        return g_int.reshape(F, -1)

    def product(self, wmat, cols, buf, n, out_hw):
        """y = W @ cols for one chunk, in the internal layout: (F, M) reshaped to ``shape``."""
        F, K = wmat.shape
        y = numpy.matmul(wmat, self.as_km(cols, K), out=_take(buf, (F, cols.size // K)))
        return y.reshape(self.shape(n, F, *out_hw))

    def cols_grad(self, wmat, g_int, cols):
        """dcols = W^T @ dy, written into the cols buffer."""
        F, K = wmat.shape
        numpy.matmul(wmat.T, self.as_fm(g_int, F), out=self.as_km(cols, K))

    def im2col(self, x, kernel, stride, padding, out_hw, xpad, cols):
        """cols[p, q, c, <n, i, j>] = xpad[n, c, i*sh + p, j*sw + q], staging the padded input in
        ``xpad``; threads take disjoint channel ranges."""
        (kh, kw), (sh, sw), (ph, pw), (Ho, Wo) = kernel, stride, padding, out_hw
        H, W = x.shape[2:]
        x_int = x.transpose(self.perm)  # the transpose and the padding are one copy

        def run(c0, c1):
            xp_ = xpad[c0:c1]
            # Only the border is zeroed: the interior is overwritten next.
            for hs, ws in ((slice(0, ph), slice(None)), (slice(ph + H, None), slice(None)),
                           (slice(ph, ph + H), slice(0, pw)), (slice(ph, ph + H), slice(pw + W, None))):
                self.view(xp_, hs, ws).fill(0)
            self.view(xp_, slice(ph, ph + H), slice(pw, pw + W))[...] = x_int[c0:c1]
            for p in range(kh):
                for q in range(kw):
                    cols[p, q, c0:c1] = self.view(xp_, _rows(p, Ho, sh), _rows(q, Wo, sw))
        parallel.parallel_for(x_int.shape[0], run, cols.nbytes)
        return cols

    def col2im_scratch(self, n, C, Hp, Wo):
        """Extra scratch elements col2im needs per chunk (its strip)."""
        return n * C * Hp * Wo

    def col2im(self, gcols, x_shape, out_hw, stride, padding, gxpad, strip, out):
        """Fold ``gcols`` (kh, kw, C, spatial...) back onto the input, the adjoint of im2col,
        and write the interior to ``out`` (n, C, H, W).

        dxpad[window(p, q)] += gcols[p, q] in two stages, so that most adds run over long
        contiguous rows (a ufunc add into a strided view with short rows is slow per element):
        for each column offset q a strip (C, Hpad, Wo) collects sum_p gcols[p, q] shifted down by
        p rows, whole runs along H; then the strip is added at columns q, q+sw, ... (kw strided
        adds instead of kh*kw). Threads take disjoint channels; the order of the adds is fixed.
        """
        N, C, H, W = x_shape
        (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
        kh, kw = gcols.shape[:2]
        strip = _take(strip, self.shape(N, C, H + 2 * ph, Wo))

        def fold(c0, c1):
            gx, st = gxpad[c0:c1], strip[c0:c1]
            gx.fill(0)
            for q in range(kw):
                st.fill(0)
                for p in range(kh):
                    view = self.view(st, _rows(p, Ho, sh), slice(None))
                    view += gcols[p, q, c0:c1]
                view = self.view(gx, slice(None), _rows(q, Wo, sw))
                view += st
        parallel.parallel_for(C, fold, gcols.nbytes)
        interior = self.view(gxpad, slice(ph, ph + H), slice(pw, pw + W))
        parallel.assign(out, interior.transpose(self.inv), axis=1)  # C: outer in gxpad


class ChannelsLast:
    """``nhwc`` (internal axes N, H, W, C, as oneDNN and cuDNN prefer): cols is the transposed
    matrix (M, K), rows ordered (n, i, j). The kw*C inputs of one kernel row form one contiguous
    run of the padded input, so cols is a single strided copy, and the products are
    ``cols @ W^T`` with the long M as rows (the orientation OpenBLAS's kernels prefer here). The
    transposes between NCHW and NHWC move C between outer and innermost.
    """
    name, perm, inv = "nhwc", (0, 2, 3, 1), (0, 3, 1, 2)
    out_axis = 0          # N is outer in y's internal order

    def shape(self, n, c, h, w):
        return (n, h, w, c)

    def cols_shape(self, kernel, n, c, ho, wo):
        kh, kw = kernel
        return (n, ho, wo, kh, kw * c)

    def as_km(self, cols, K):
        return cols.reshape(-1, K).T

    def as_fm(self, g_int, F):
        return g_int.reshape(-1, F).T

    def product(self, wmat, cols, buf, n, out_hw):
        """y = cols @ W^T for one chunk: (M, F), i.e. (n, Ho, Wo, F)."""
        F, K = wmat.shape
        y = numpy.matmul(cols.reshape(-1, K), wmat.T, out=_take(buf, (cols.size // K, F)))
        return y.reshape(self.shape(n, F, *out_hw))

    def cols_grad(self, wmat, g_int, cols):
        F, K = wmat.shape
        numpy.matmul(g_int.reshape(-1, F), wmat, out=cols.reshape(-1, K))

    def im2col(self, x, kernel, stride, padding, out_hw, xpad, cols):
        """cols[n, i, j, p, q*C + c] = xpad[n, i*sh + p, j*sw + q, c]: for fixed (n, i, j, p) the
        kw*C values are one contiguous run of xpad, so the windows are a single strided view
        (overlapping, read only) and cols is one copy of it. Threads take disjoint images."""
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

    def col2im_scratch(self, n, C, Hp, Wo):
        return 0

    def col2im(self, gcols, x_shape, out_hw, stride, padding, gxpad, strip, out):
        """gxpad[n, i*sh + p, j*sw + q, c] += gcols[n, i, j, p, q*C + c], one strided add per
        kernel offset (windows overlap, so they cannot be one add); then the interior goes to
        ``out`` (n, C, H, W). Threads take disjoint images; the order of the adds is fixed."""
        N, C, H, W = x_shape
        (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
        kh, kw = gcols.shape[3], gcols.shape[4] // C
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


LAYOUT_NAMES = ("cnhw", "chwn", "nhwc")
LAYOUTS = {"cnhw": ChannelsFirst("cnhw", (1, 0, 2, 3), (1, 0, 2, 3), 2, 3),
           "chwn": ChannelsFirst("chwn", (1, 2, 3, 0), (3, 0, 1, 2), 1, 2),
           "nhwc": ChannelsLast()}


def choose_layout(C, F, kh, kw, Wo, sw):
    """The layout of the fixed rule. The copies scale with the cols size K*M = kh*kw*C*M, the
    transposes with the x/y/dy sizes (C + 2F)*M (about), so batch-innermost (``chwn``) pays off
    when K is large relative to C + F, and only when cnhw rows are short: fewer than 32
    elements, or not contiguous at all (sw > 1). With stride 1 on maps of at most 16 columns the
    channels-last layout's single strided copy does better still (the tuner's choice on
    cifar_cnn's 16x16 and 8x8 layers). Measurements in ``benchmarks/README.md``."""
    if kh * kw * C >= 2 * (C + F) and (Wo < 32 or sw > 1):
        return LAYOUTS["nhwc"] if sw == 1 and Wo <= 16 else LAYOUTS["chwn"]
    return LAYOUTS["cnhw"]


# ---------------------------------------------------------------------------------------
# 1. chunks of images
# ---------------------------------------------------------------------------------------
# The cols matrix of a stride-1 kxk layer is k*k times its input, so it is never built whole:
# each chunk of images whose cols fits in about CHUNK_BYTES runs im2col, its products and the
# fold on its own, on one kernel thread (BLAS single-threaded meanwhile), so a chunk stays in
# its core's cache from its copy to its product. The cut depends on the shapes only, so results
# do not depend on the thread count. The size is measured (``benchmarks/README.md``).
CHUNK_BYTES = 4 << 20

# At least this many chunks (when the batch has as many images), so that small layers too are
# shared out to the threads; two rather than four, since small chunks make the batch-innermost
# layout's transposes slow (``benchmarks/README.md``).
MIN_CHUNKS = 2


def _chunks(N, bytes_per_image):
    """Image ranges of about ``CHUNK_BYTES`` of cols each, at least ``MIN_CHUNKS`` of them."""
    return parallel.batch_chunks(N, bytes_per_image, CHUNK_BYTES, MIN_CHUNKS)


def _for_each_chunk(chunks, body, nbytes, dtype, **sizes):
    """``body(i, n0, n1, buffers)`` for every chunk i = (n0, n1), spread over the kernel threads;
    ``buffers`` are the thread's own flat scratch arrays (name -> elements per image, times the
    first chunk's images; a size of 0 gives no buffer)."""
    nc = chunks[0][1] if chunks else 0

    @contextlib.contextmanager
    def buffers():
        with workspace.Scratch() as scratch:
            yield {name: scratch.empty((nc * size,), dtype) for name, size in sizes.items() if size}
    parallel.for_each_item(len(chunks), lambda i, buf: body(i, *chunks[i], buf), nbytes, buffers)


def _conv_chunks(x, wmat, lay, kernel, stride, padding, out):
    """``out`` (N, F, Ho, Wo) = conv2d(x, w) for x (N, C, H, W) and the weights as an (F, K)
    matrix ``wmat`` (K ordered (p, q, c)), a chunk of images at a time."""
    N, C, H, W = x.shape
    F, K = wmat.shape
    (ph, pw), (Ho, Wo) = padding, out.shape[2:]
    Hp, Wp = H + 2 * ph, W + 2 * pw

    def run(i, n0, n1, buf):
        n = n1 - n0
        cols = lay.im2col(x[n0:n1], kernel, stride, padding, (Ho, Wo), _take(buf["xpad"], lay.shape(n, C, Hp, Wp)),
                          _take(buf["cols"], lay.cols_shape(kernel, n, C, Ho, Wo)))
        y_int = lay.product(wmat, cols, buf["y"], n, (Ho, Wo))
        parallel.assign(out[n0:n1], y_int.transpose(lay.inv), axis=lay.out_axis)
    _for_each_chunk(_chunks(N, K * Ho * Wo * out.dtype.itemsize), run, N * K * Ho * Wo * out.dtype.itemsize,
                    out.dtype, xpad=C * Hp * Wp, cols=K * Ho * Wo, y=F * Ho * Wo)
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


# ---------------------------------------------------------------------------------------
# backward
# ---------------------------------------------------------------------------------------
def backward(grad_y, cache, need_x_grad, need_w_grad):
    """Gradients of :func:`forward`: returns ``(grad_x or None, grad_w or None)``.

    dL/dw = dy @ cols^T summed over the chunks (``_weight_grad_and_fold``). dL/dx is, where
    ``_input_grad_by_conv`` says so, a convolution of dy (``_input_grad_as_conv``); otherwise
    dcols = W^T dy folded back by col2im, in the same pass over the chunks as the weight gradient.
    """
    N, C = cache.x_shape[:2]
    F, _, kh, kw = cache.w_shape
    by_conv = need_x_grad and _input_grad_by_conv(cache.stride, cache.padding, (kh, kw), C, F,
                                                  isinstance(cache.layout, ChannelsLast))
    grad_x = _input_grad_as_conv(grad_y, cache) if by_conv else None
    fold = need_x_grad and not by_conv
    grad_w = None
    if need_w_grad or fold:
        grad_w, folded = _weight_grad_and_fold(grad_y, cache, need_w_grad, fold)
        grad_x = folded if fold else grad_x
    return grad_x, grad_w


# ---------------------------------------------------------------------------------------
# 3. the input gradient as a convolution
# ---------------------------------------------------------------------------------------
# Channels last, dL/dx is a convolution of dy from this many input channels up, whatever F is.
BY_CONV_MIN_CHANNELS_LAST = 16


def _input_grad_by_conv(stride, padding, kernel, C, F, channels_last=False):
    """Whether dL/dx is computed as a convolution of dy: stride 1, padding at most kernel - 1
    (so that dy's own padding kh - 1 - ph is not negative), and F <= C: the convolution copies
    kh*kw*F values per input pixel where col2im adds kh*kw*C, so with few input channels (an
    image's first layer, whose input gradient attacks need) col2im is cheaper. Channels last,
    the convolution's copy is one strided call while col2im's kh*kw adds run over rows of only
    C values, so the convolution wins from ``BY_CONV_MIN_CHANNELS_LAST`` input channels even
    where F > C (``benchmarks/README.md``)."""
    (kh, kw), (ph, pw) = kernel, padding
    return (tuple(stride) == (1, 1) and ph <= kh - 1 and pw <= kw - 1
            and (F <= C or (channels_last and C >= BY_CONV_MIN_CHANNELS_LAST)))


def _input_grad_as_conv(grad_y, cache):
    """For stride 1, the "full" correlation of dy (zero-padded by kh - 1 - ph, kw - 1 - pw) with
    the weights flipped in both spatial axes and with F and C swapped:

        dL/dx[n, c, h, w] = sum_{f, p, q} dypad[n, f, h + p, w + q] * w[f, c, kh-1-p, kw-1-q]
    """
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    ph, pw = cache.padding
    # w flipped, F and C swapped, as a (C, K') matrix with K' ordered (p, q, f)
    wflip = numpy.ascontiguousarray(
        cache.wmat.reshape(F, kh, kw, C)[:, ::-1, ::-1, :].transpose(3, 1, 2, 0)).reshape(C, kh * kw * F)
    return _conv_chunks(grad_y, wflip, cache.layout, (kh, kw), (1, 1), (kh - 1 - ph, kw - 1 - pw),
                        numpy.empty((N, C, H, W), cache.dtype))


# ---------------------------------------------------------------------------------------
# 4. the weight gradient, and col2im's fold in the same pass
# ---------------------------------------------------------------------------------------
def _weight_grad_product(cm, g, out):
    """This chunk's dL/dw = dy @ cols^T from cols as a (K, M) matrix ``cm`` and dy as an (F, M)
    matrix ``g``, into ``out``: (K, F) when K >= F, else (F, K). The product has a long inner
    dimension M and a small output, and OpenBLAS is sensitive to its orientation: with fewer
    output rows than columns it can be far slower (``benchmarks/README.md``), so the larger of K
    and F is made the row dimension."""
    if cm.shape[0] >= g.shape[0]:
        numpy.matmul(cm, g.T, out=out)              # (K, F)
    else:
        numpy.matmul(g, cm.T, out=out)              # (F, K)


def _weight_grad_and_fold(grad_y, cache, need_w_grad, fold):
    """One pass over the chunks: each rebuilds its cols from x for dL/dw (if needed) and, with
    ``fold``, folds dcols = W^T dy back onto the input. Returns (grad_w or None, grad_x or None).
    Each chunk's share of dL/dw goes to a slot of its own; the slots are summed in chunk order,
    so the sum is the same whichever threads computed them."""
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    (Ho, Wo), (ph, pw), lay, dtype = cache.out_hw, cache.padding, cache.layout, cache.dtype
    K, Hp, Wp = kh * kw * C, H + 2 * ph, W + 2 * pw
    chunks = _chunks(N, K * Ho * Wo * dtype.itemsize)
    parts = numpy.zeros((max(1, len(chunks)),) + ((K, F) if K >= F else (F, K)), dtype) if need_w_grad else None
    grad_x = numpy.empty((N, C, H, W), dtype) if fold else None

    def run(i, n0, n1, buf):
        n = n1 - n0
        g = _take(buf["g"], lay.shape(n, F, Ho, Wo))         # dy of the chunk, internal layout
        parallel.assign(g, grad_y[n0:n1].transpose(lay.perm))
        cols = _take(buf["cols"], lay.cols_shape((kh, kw), n, C, Ho, Wo))
        xpad = _take(buf["xpad"], lay.shape(n, C, Hp, Wp))
        if need_w_grad:
            lay.im2col(cache.x[n0:n1], (kh, kw), cache.stride, cache.padding, cache.out_hw, xpad, cols)
            _weight_grad_product(lay.as_km(cols, K), lay.as_fm(g, F), parts[i])
        if fold:  # dcols into the cols buffer, folded into the padded-input buffer, free again
            lay.cols_grad(cache.wmat, g, cols)
            lay.col2im(cols, (n, C, H, W), cache.out_hw, cache.stride, cache.padding, xpad,
                       buf.get("strip"), out=grad_x[n0:n1])
    _for_each_chunk(chunks, run, N * K * Ho * Wo * dtype.itemsize, dtype, xpad=C * Hp * Wp, cols=K * Ho * Wo,
                    g=F * Ho * Wo, strip=lay.col2im_scratch(1, C, Hp, Wo) if fold else 0)
    grad_w = None
    if need_w_grad:
        gw = parts[0]
        for part in parts[1:]:
            gw += part
        gw = gw.T if K >= F else gw                          # (F, K), K ordered (p, q, c)
        grad_w = numpy.ascontiguousarray(gw.reshape(F, kh, kw, C).transpose(0, 3, 1, 2))
    return grad_w, grad_x
