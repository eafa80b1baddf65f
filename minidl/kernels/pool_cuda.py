"""Max and average pooling on the GPU (CuPy): CUDA kernels that gather, one thread per output
element (``cuda_sources``), so results are deterministic. Written against ``xp`` and a
``launch`` callable, so that the tests run this very code on the host with the kernel
sources compiled as C++ (``xp=numpy``).
"""
import numpy

from ..backend import get_array_module
from . import cuda_sources
from .arrays import Cache, gpu_dtype, window_mean


def max_forward(x, kernel, stride, padding, out_hw, *, xp=None, launch=cuda_sources.launch):
    """Max pooling by the ``minidl_maxpool_fwd`` kernel; returns ``(y, cache)``."""
    xp = xp or get_array_module(x)
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
    cache = Cache(device="cuda", implementation="cuda", argmax=argmax, x_shape=tuple(x.shape), kernel=kernel,
                  stride=stride, padding=padding, out_hw=out_hw, dtype=dtype)
    return y.astype(dtype, copy=False), cache


def max_backward(grad_y, cache, *, xp=None, launch=cuda_sources.launch):
    """Gradient of :func:`max_forward` (each input gathers from the windows it won)."""
    xp = xp or get_array_module(grad_y, cache.argmax)
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


def avg_forward(x, kernel, stride, padding, out_hw, *, xp=None):
    """Average pooling: a sum of kh*kw strided views, then one division."""
    xp = xp or get_array_module(x)
    (ph, pw) = padding
    xpad = xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw))) if ph or pw else x
    y = window_mean(xpad, kernel, stride, xp.empty(x.shape[:2] + tuple(out_hw), x.dtype))
    cache = Cache(device="cuda", implementation="cuda", x_shape=tuple(x.shape), kernel=kernel, stride=stride,
                  padding=padding, out_hw=out_hw, dtype=y.dtype)
    return y, cache


def avg_backward(grad_y, cache, *, xp=None, launch=cuda_sources.launch):
    """Gradient of :func:`avg_forward` (each input gathers from the windows holding it)."""
    xp = xp or get_array_module(grad_y)
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
