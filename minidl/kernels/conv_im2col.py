"""2-D convolution by im2col on the CPU: the fast path of ``reference.conv2d_forward``.

The same product as the reference (``y = W @ cols``, ``dW = g @ cols.T``, ``dcols = W.T @ g``
folded back by col2im; the math is in ``conv.py``), arranged for speed:

* the input is transposed once into an internal layout with channels first (``_Layout``),
  so that cols is filled by one strided block copy per kernel offset (kh*kw Python
  iterations, never a loop over pixels or images) and every product is a single BLAS call;
* large buffers come from ``workspace`` (reused instead of freshly page-faulted);
* the copies and folds are split over cores by channel (``parallel``).
"""
import numpy

from . import parallel, workspace
from .arrays import Cache


# ---------------------------------------------------------------------------------------
# buffer layouts
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

    Which one wins depends on the shapes; the measurements behind ``_choose_layout`` are in
    ``benchmarks/README.md``.
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


LAYOUTS = {name: _Layout(name) for name in ("cnhw", "chwn")}


def _choose_layout(C, F, kh, kw, Wo, sw):
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
# forward and backward
# ---------------------------------------------------------------------------------------
def forward(x, w, stride, padding, out_hw, dtype, layout=None):
    """y = conv2d(x, w) by im2col on NumPy arrays; returns ``(y, cache)``.

    ``layout`` ('cnhw' or 'chwn') forces the internal buffer layout; by default it is
    chosen from the shapes (``_choose_layout``).
    """
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    (Ho, Wo), (sh, sw), (ph, pw) = out_hw, stride, padding
    lay = LAYOUTS[layout] if layout is not None else _choose_layout(C, F, kh, kw, Wo, sw)

    with workspace.Scratch() as scratch:
        # Zero-padded input in the internal layout: the transpose and the padding are one copy.
        # (Temporaries come from a ``workspace.Scratch``, which reuses buffers across calls.)
        xpad = scratch.empty(lay.shape(N, C, H + 2 * ph, W + 2 * pw), dtype)
        x_int = x.transpose(lay.perm)

        # im2col: cols[p, q] is the (C, spatial...) block that kernel offset (p, q) reads,
        # i.e. cols[p, q, c, <n, i, j>] = xpad[n, c, i*sh + p, j*sw + q]. One contiguous block
        # write per offset; K is ordered (p, q, c) and M follows the layout's spatial order.
        # Channels are independent, so threads take disjoint channel ranges (``parallel``).
        cols = numpy.empty((kh, kw) + lay.shape(N, C, Ho, Wo), dtype)  # kept in the cache

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
        y_int = numpy.matmul(wmat, cols.reshape(K, M), out=scratch.empty((F, M), dtype))
        # Split along F, the outer axis of y_int in both layouts.
        y = workspace.copy(y_int.reshape(lay.shape(N, F, Ho, Wo)).transpose(lay.inv), axis=1)
    cache = Cache(device="cpu", cols=cols, wmat=wmat, x_shape=tuple(x.shape),
                  w_shape=tuple(w.shape), stride=stride, padding=padding,
                  out_hw=out_hw, layout=lay, dtype=dtype, algorithm="im2col")
    return y, cache


def backward(grad_y, cache, need_x_grad, need_w_grad):
    """Gradients of :func:`forward`: returns ``(grad_x or None, grad_w or None)``."""
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    (Ho, Wo), (sh, sw), (ph, pw) = cache.out_hw, cache.stride, cache.padding
    lay, cols, wmat, dtype = cache.layout, cache.cols, cache.wmat, cache.dtype
    K, M = kh * kw * C, N * Ho * Wo

    with workspace.Scratch() as scratch:
        # dy in the internal layout as an (F, M) matrix whose columns match those of cols.
        g = scratch.copy(grad_y.transpose(lay.perm), dtype).reshape(F, M)

        grad_w = None
        if need_w_grad:
            # A product with a long inner dimension M and a small output. OpenBLAS is
            # sensitive to its orientation: with fewer output rows than columns it can be far
            # slower, worst when another process competes for the cores (figures in
            # benchmarks/README.md). So the larger of K and F is made the row dimension.
            if K >= F:
                gw = numpy.matmul(cols.reshape(K, M), g.T).T                # (F, K)
            else:
                gw = numpy.matmul(g, cols.reshape(K, M).T)                  # (F, K)
            # K is ordered (p, q, c): back to (F, C, kh, kw)
            grad_w = numpy.ascontiguousarray(gw.reshape(F, kh, kw, C).transpose(0, 3, 1, 2))

        grad_x = None
        if need_x_grad:
            gcols = numpy.matmul(wmat.T, g, out=scratch.empty((K, M), dtype))
            gcols = gcols.reshape(cols.shape)                              # (kh, kw, C, ...)
            grad_x = _col2im_cpu(gcols, lay, (N, C, H, W), (Ho, Wo), (sh, sw), (ph, pw), dtype, scratch)
    return grad_x, grad_w


def _col2im_cpu(gcols, lay, x_shape, out_hw, stride, padding, dtype, scratch):
    """Fold ``gcols`` (kh, kw, C, spatial...) back onto the input: the adjoint of im2col.

    dxpad[window(p, q)] += gcols[p, q] for every offset, done in two stages so that most
    adds run over long contiguous rows (a ufunc add into a strided view with short rows is
    several times slower per element than a contiguous one):

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
    gxpad = scratch.empty(lay.shape(N, C, Hpad, Wpad), dtype)
    strip = scratch.empty(lay.shape(N, C, Hpad, Wo), dtype)
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
