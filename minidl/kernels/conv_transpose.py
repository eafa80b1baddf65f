"""The two other products of a convolution, as kernels of their own: the transposed
convolution (the gradient of conv2d's input) and the weight gradient, each given every operand
explicitly (no cache from a forward pass), so that autograd can make each of them a Function
with its own backward (second and higher derivatives of convolutional nets).

With y = conv2d(x, w) (``kernels.conv``: x (N, C, H, W), w (F, C, kh, kw), y (N, F, Ho, Wo))::

    conv2d_transpose(g, w)[n, c, h', w'] = sum of g[n, f, i, j] w[f, c, p, q]
                                           over i*sh + p - ph == h', j*sw + q - pw == w'
    conv2d_weight(x, g)[f, c, p, q]      = sum_{n, i, j} g[n, f, i, j] xpad[n, c, i*sh + p, j*sw + q]

so that <conv2d(x, w), g> = <x, conv2d_transpose(g, w)> = <w, conv2d_weight(x, g)>: the three
are one trilinear form read three ways, and each one's derivatives are the other two.

Both are im2col written for NumPy and CuPy alike: one matrix product with the unrolled
windows ``cols`` (C*kh*kw, N*Ho*Wo), and a loop over the kh*kw window offsets that moves each
offset's strided slice into or out of ``cols``.
"""
from ..backend import get_array_module
from .runtime import parallel
from .arrays import check_nchw, conv_output_size, float_dtype, window


def _check(g, w_or_x, name, F_or_C):
    check_nchw(g, "conv2d gradient g")
    check_nchw(w_or_x, name)
    if g.shape[1] != F_or_C:
        raise ValueError(f"conv2d: g has {g.shape[1]} channels (shape {tuple(g.shape)}), expected {F_or_C}")


def conv2d_transpose(g, w, x_hw, stride, padding):
    """dL/dx (N, C, H, W) of y = conv2d(x, w) for g = dL/dy (N, F, Ho, Wo); ``x_hw`` = (H, W)
    (several input sizes give the same Ho when the stride exceeds 1)."""
    _check(g, w, "conv2d weight w", w.shape[0])
    xp = get_array_module(g, w)
    N, F, Ho, Wo = g.shape
    _, C, kh, kw = w.shape
    (H, W), (ph, pw) = x_hw, padding
    if conv_output_size((H, W), (kh, kw), stride, padding) != (Ho, Wo):
        raise ValueError(f"conv2d_transpose: g's size {(Ho, Wo)} does not match an input of size {(H, W)}")
    dtype = float_dtype(g, w)
    g2 = g.astype(dtype, copy=False).transpose(1, 0, 2, 3).reshape(F, N * Ho * Wo)
    cols = parallel.matmul(w.astype(dtype, copy=False).reshape(F, -1).T, g2)  # BLAS reads the transpose
    cols = cols.reshape(C, kh, kw, N, Ho, Wo)
    gxpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype)
    for p in range(kh):
        for q in range(kw):  # one offset reads distinct positions, so += does not collide
            window(gxpad, p, q, (Ho, Wo), stride)[...] += cols[:, p, q].transpose(1, 0, 2, 3)
    return xp.ascontiguousarray(gxpad[:, :, ph:ph + H, pw:pw + W])


def conv2d_weight(x, g, kernel, stride, padding):
    """dL/dw (F, C, kh, kw) of y = conv2d(x, w) for g = dL/dy (N, F, Ho, Wo), x (N, C, H, W)."""
    check_nchw(x, "conv2d input x")
    check_nchw(g, "conv2d gradient g")
    xp = get_array_module(x, g)
    N, C, H, W = x.shape
    _, F, Ho, Wo = g.shape
    (kh, kw), (ph, pw) = kernel, padding
    if g.shape[0] != N or conv_output_size((H, W), (kh, kw), stride, padding) != (Ho, Wo):
        raise ValueError(f"conv2d_weight: g of shape {tuple(g.shape)} is not the output gradient of "
                         f"x of shape {tuple(x.shape)} with kernel {tuple(kernel)}")
    dtype = float_dtype(x, g)
    xpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), dtype)
    xpad[:, :, ph:ph + H, pw:pw + W] = x
    cols = xp.empty((C, kh, kw, N, Ho, Wo), dtype)
    for p in range(kh):
        for q in range(kw):
            cols[:, p, q] = window(xpad, p, q, (Ho, Wo), stride).transpose(1, 0, 2, 3)
    g2 = g.astype(dtype, copy=False).transpose(1, 0, 2, 3).reshape(F, N * Ho * Wo)
    return parallel.matmul(g2, cols.reshape(C * kh * kw, -1).T).reshape(F, C, kh, kw)
