"""3x3 stride-1 convolution by Winograd's minimal filtering F(2x2, 3x3) on the CPU.

The same operation as ``reference.conv2d_forward`` (cross-correlation, zero padding, NCHW)::

    y[n, f, i, j] = sum_{c, p, q} xpad[n, c, i + p, j + q] * w[f, c, p, q]      (kh = kw = 3)

The output is cut into 2x2 tiles; tile (t, u) reads the 4x4 input tile d = xpad[2t:2t+4,
2u:2u+4]. With the constant matrices below (Lavin and Gray, 2016),

    Y_tile = A^T [ sum_c (G w[f, c] G^T) * (B^T d[c] B) ] A        (* elementwise, 4x4)

so the channel sum becomes 16 matrix products, one per position (r, s) of the 4x4 tile:
M[rs] = U[rs] @ V[rs] with U[rs] = (G w G^T)[r, s] of shape (F, C) and V[rs] = (B^T d B)[r, s]
of shape (C, T), T = N * Th * Tw tiles. That is 16 products per 4 outputs instead of im2col's
9 per output: 2.25x fewer multiplications, and the transformed input V is 4x the input where
im2col's cols is 9x.

Gradients are the exact adjoints of the three linear steps (g = dL/dy cut into the same
2x2 tiles):

    dM[rs] = (A g_tile A^T)[r, s]
    dV[rs] = U[rs]^T @ dM[rs]      ->  dL/dxpad = sum over tiles of B dV B^T (tiles overlap by 2)
    dU[rs] = dM[rs] @ V[rs]^T      ->  dL/dw = G^T dU G

Every transform is a handful of whole-array adds over strided views (one per row or column
of a tile), split over channels on several cores (``parallel``); the additions run in a
fixed order, so results are deterministic. The constants are 0, +-1 and +-1/2, so float32
results differ from im2col's by rounding only (relative error ~1e-6).
"""
import numpy

from . import parallel, workspace

# y = A^T [(G w G^T) * (B^T d B)] A for one 4x4 tile d and a 3x3 kernel w (F(2, 3) along
# each axis: y0 = m0 + m1 + m2, y1 = m1 - m2 - m3).
BT = numpy.array([[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]], dtype=numpy.float64)
G = numpy.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], dtype=numpy.float64)
AT = numpy.array([[1, 1, 1, 0], [0, 1, -1, -1]], dtype=numpy.float64)


class WinogradConvCache:
    """What the backward pass needs; opaque to callers."""
    __slots__ = ("device", "V", "U", "x_shape", "w_shape", "stride", "padding", "out_hw",
                 "tiles", "dtype", "algorithm")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def applies(kernel, stride):
    """Whether this algorithm computes the convolution: 3x3 kernels, stride 1."""
    return tuple(kernel) == (3, 3) and tuple(stride) == (1, 1)


def _tile_rows(a, k, count, axis):
    """View of ``a`` along ``axis`` at k, k+2, ..., (``count`` entries): element k of every tile."""
    index = [slice(None)] * a.ndim
    index[axis] = slice(k, k + 2 * count - 1, 2)
    return a[tuple(index)]


def _input_transform(src, out, count, axis):
    """out[i] = sum_r BT[i, r] * (element r of every tile of ``src`` along ``axis``)."""
    d = [_tile_rows(src, k, count, axis) for k in range(4)]
    numpy.subtract(d[0], d[2], out=out[0])
    numpy.add(d[1], d[2], out=out[1])
    numpy.subtract(d[2], d[1], out=out[2])
    numpy.subtract(d[1], d[3], out=out[3])


def _input_adjoint(dv, dst, count, axis):
    """The adjoint of ``_input_transform``: dst (zeroed here) = sum over tiles of BT^T dv,
    tiles overlapping by two entries along ``axis``."""
    dst.fill(0)
    even = [_tile_rows(dst, k, count, axis) for k in (0, 2)]   # entries 2t and 2t + 2
    odd = [_tile_rows(dst, k, count, axis) for k in (1, 3)]    # entries 2t + 1 and 2t + 3
    # column r of BT: dd0 = dv0, dd1 = dv1 - dv2 + dv3, dd2 = -dv0 + dv1 + dv2, dd3 = -dv3
    even[0] += dv[0]
    even[1] += dv[1]
    even[1] += dv[2]
    even[1] -= dv[0]
    odd[0] += dv[1]
    odd[0] -= dv[2]
    odd[0] += dv[3]
    odd[1] -= dv[3]


def _output_transform(m, out, count, axis):
    """Element a of every output tile along ``axis``: out0 = m0 + m1 + m2, out1 = m1 - m2 - m3."""
    o0, o1 = (_tile_rows(out, a, count, axis) for a in (0, 1))
    numpy.add(m[0], m[1], out=o0)
    o0 += m[2]
    numpy.subtract(m[1], m[2], out=o1)
    o1 -= m[3]


def _output_adjoint(g, out, count, axis):
    """The adjoint of ``_output_transform``: out[r] = sum_a AT[a, r] * g_a (g_a: element a of
    every tile of ``g`` along ``axis``): g0, g0 + g1, g0 - g1, -g1."""
    g0, g1 = (_tile_rows(g, a, count, axis) for a in (0, 1))
    out[0][...] = g0
    numpy.add(g0, g1, out=out[1])
    numpy.subtract(g0, g1, out=out[2])
    numpy.negative(g1, out=out[3])


def _tiles(H, W, padding):
    (ph, pw) = padding
    Ho, Wo = H + 2 * ph - 2, W + 2 * pw - 2
    return Ho, Wo, (Ho + 1) // 2, (Wo + 1) // 2


def forward(x, w, stride, padding, out_hw, dtype):
    """Stride-1 conv2d of x (N, C, H, W) with w (F, C, 3, 3): returns (y (N, F, Ho, Wo), cache)."""
    N, C, H, W = x.shape
    F = w.shape[0]
    if not applies(w.shape[2:], stride):
        raise ValueError(f"conv_winograd: expected a 3x3 kernel and stride (1, 1), got kernel "
                         f"{tuple(w.shape[2:])} and stride {tuple(stride)}")
    ph, pw = padding
    Ho, Wo, Th, Tw = _tiles(H, W, padding)
    T = N * Th * Tw

    # V is kept for the backward pass, so it is an ordinary array; the rest is scratch.
    V = numpy.empty((4, 4, C, N, Th, Tw), dtype)
    with workspace.Scratch() as scratch:
        # Zero-padded input, channels first (C, N, 2Th + 2, 2Tw + 2): the last tiles may reach
        # one row/column past the padded input when Ho or Wo is odd; those read zeros.
        xpad = scratch.empty((C, N, 2 * Th + 2, 2 * Tw + 2), dtype)
        rows = scratch.empty((4, C, N, Th, 2 * Tw + 2), dtype)
        x_int = x.transpose(1, 0, 2, 3)

        def transform(c0, c1):  # channels c0..c1-1; threads take disjoint channel ranges
            xs = xpad[c0:c1]
            xs.fill(0)
            xs[:, :, ph:ph + H, pw:pw + W] = x_int[c0:c1]
            r = rows[:, c0:c1]
            _input_transform(xs, r, Th, axis=2)                       # B^T d over tile rows
            for i in range(4):
                _input_transform(r[i], V[i, :, c0:c1], Tw, axis=3)    # (B^T d) B over tile columns
        parallel.parallel_for(C, transform, V.nbytes)

        # U[rs] = (G w G^T)[r, s]: (16, F, C), tiny
        U = numpy.einsum("rp,fcpq,sq->rsfc", G, w.astype(numpy.float64, copy=False), G)
        U = numpy.ascontiguousarray(U.reshape(16, F, C), dtype=dtype)
        M = parallel.matmul(U, V.reshape(16, C, T), out=scratch.empty((16, F, T), dtype))
        y = _inverse_output(M, (N, F), (Th, Tw), (Ho, Wo), dtype, scratch)
    cache = WinogradConvCache(device="cpu", V=V, U=U, x_shape=tuple(x.shape), w_shape=tuple(w.shape),
                              stride=(1, 1), padding=tuple(padding), out_hw=tuple(out_hw), tiles=(Th, Tw),
                              dtype=dtype, algorithm="winograd")
    return y, cache


def _inverse_output(M, nf, tiles, out_hw, dtype, scratch):
    """y (N, F, Ho, Wo), an ordinary array, from the products M (16, F, T): A^T M A per tile,
    then cropped. The temporaries come from ``scratch``."""
    (N, F), (Th, Tw), (Ho, Wo) = nf, tiles, out_hw
    M = M.reshape(4, 4, F, N, Th, Tw)
    half = scratch.empty((4, F, N, 2 * Th, Tw), dtype)    # indexed by s, after the row pass
    y_full = scratch.empty((F, N, 2 * Th, 2 * Tw), dtype)

    def transform(f0, f1):
        h = half[:, f0:f1]
        for s in range(4):
            _output_transform(M[:, s, f0:f1], h[s], Th, axis=2)
        _output_transform(h, y_full[f0:f1], Tw, axis=3)
    parallel.parallel_for(F, transform, y_full.nbytes)
    return workspace.copy(y_full[:, :, :Ho, :Wo].transpose(1, 0, 2, 3), axis=1)  # F: outer in y_full


def backward(grad_y, cache, need_x_grad, need_w_grad):
    """Gradients of :func:`forward`: returns (grad_x or None, grad_w or None)."""
    N, C, H, W = cache.x_shape
    F = cache.w_shape[0]
    (ph, pw), (Ho, Wo), (Th, Tw), dtype = cache.padding, cache.out_hw, cache.tiles, cache.dtype
    T = N * Th * Tw

    with workspace.Scratch() as scratch:
        # dM = A g A^T per tile, g zero-extended to whole tiles, channels (F) first.
        gpad = scratch.empty((F, N, 2 * Th, 2 * Tw), dtype)
        rows = scratch.empty((4, F, N, Th, 2 * Tw), dtype)
        dM = scratch.empty((4, 4, F, N, Th, Tw), dtype)
        g_int = grad_y.transpose(1, 0, 2, 3)

        def transform(f0, f1):
            gs = gpad[f0:f1]
            if Ho % 2 or Wo % 2:
                gs.fill(0)
            gs[:, :, :Ho, :Wo] = g_int[f0:f1]
            r = rows[:, f0:f1]
            _output_adjoint(gs, r, Th, axis=2)
            for i in range(4):
                _output_adjoint(r[i], dM[i, :, f0:f1], Tw, axis=3)
        parallel.parallel_for(F, transform, dM.nbytes)
        dM = dM.reshape(16, F, T)
        V = cache.V.reshape(16, C, T)

        grad_w = None
        if need_w_grad:
            # dU[rs] = dM[rs] @ V[rs]^T (F, C), a long inner dimension T. As in conv_im2col, the
            # larger of F and C is made the row dimension (OpenBLAS is much slower the other way).
            if C > F:
                dU = parallel.matmul(V, dM.transpose(0, 2, 1)).transpose(0, 2, 1)
            else:
                dU = parallel.matmul(dM, V.transpose(0, 2, 1))
            dU = dU.reshape(4, 4, F, C).astype(numpy.float64)
            grad_w = numpy.ascontiguousarray(numpy.einsum("rp,rsfc,sq->fcpq", G, dU, G), dtype=dtype)

        grad_x = None
        if need_x_grad:
            dV = parallel.matmul(cache.U.transpose(0, 2, 1), dM, out=scratch.empty((16, C, T), dtype))
            dV = dV.reshape(4, 4, C, N, Th, Tw)
            cols = scratch.empty((4, C, N, Th, 2 * Tw + 2), dtype)
            gxpad = scratch.empty((C, N, 2 * Th + 2, 2 * Tw + 2), dtype)

            def fold(c0, c1):
                cs = cols[:, c0:c1]
                for i in range(4):
                    _input_adjoint(dV[i, :, c0:c1], cs[i], Tw, axis=3)
                _input_adjoint(cs, gxpad[c0:c1], Th, axis=2)
            parallel.parallel_for(C, fold, dV.nbytes)
            grad_x = workspace.copy(gxpad[:, :, ph:ph + H, pw:pw + W].transpose(1, 0, 2, 3), axis=1)
    return grad_x, grad_w
