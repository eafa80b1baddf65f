"""2-D convolution by im2col on the GPU (CuPy): the CUDA version of ``reference.conv2d_forward``.

im2col and col2im are CUDA kernels (``cuda_sources``) that gather, one thread per output
element, so results are deterministic; the products go to cuBLAS. Written against ``xp`` and
a ``launch`` callable, so that the tests run this very code on the host with the kernel
sources compiled as C++ (``xp=numpy``).
"""
from ..backend import get_array_module
from . import cuda_sources
from .arrays import Cache, gpu_dtype


def forward(x, w, stride, padding, out_hw, dtype, *, xp=None, launch=cuda_sources.launch):
    """y = conv2d(x, w) by im2col on CuPy arrays; returns ``(y, cache)``."""
    xp = xp or get_array_module(x, w)
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
    cache = Cache(device="cuda", cols=cols, wmat=wmat, x_shape=tuple(x.shape),
                  w_shape=tuple(w.shape), stride=stride, padding=padding,
                  out_hw=out_hw, layout=None, dtype=dtype, algorithm="im2col")
    return y, cache


def backward(grad_y, cache, need_x_grad, need_w_grad, *, xp=None, launch=cuda_sources.launch):
    """Gradients of :func:`forward`: returns ``(grad_x or None, grad_w or None)``."""
    xp = xp or get_array_module(grad_y, cache.cols)
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
