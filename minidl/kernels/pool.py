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

Read ``reference.py`` first (each window reduced, the window gradients folded back). This
module checks the arrays and dispatches through the ``pool2d`` kernel (``registry``): on the
reference tier ``Reference`` (``reference.py``, NumPy or CuPy); on the fast tier by device,
``pool_cpu`` (NumPy: loops over the window offsets only, pooled buffers, threads, the bit-mask
max backward) or ``pool_cuda`` (CUDA gather kernels). Each implementation has max_forward,
max_backward, avg_forward and avg_backward, and its cache names it.
"""
from ..backend import device_of, get_array_module
from . import pool_cpu, pool_cuda, reference
from .arrays import Cache, check_nchw, conv_output_size, float_dtype
from .registry import Kernel


class Reference:
    """The plain implementation: ``reference.py``'s pooling; the max cache holds a copy of x
    (the caller may change x after the forward pass: MaxPool2d does not keep its input)."""

    @staticmethod
    def max_forward(x, kernel, stride, padding, out_hw):
        y = reference.max_pool2d_forward(x, kernel, stride, padding)
        return y, _cache(x, kernel, stride, padding, out_hw, x_copy=x.copy())

    @staticmethod
    def max_backward(grad_y, cache):
        return reference.max_pool2d_backward(cache.x_copy, grad_y, cache.kernel, cache.stride, cache.padding)

    @staticmethod
    def avg_forward(x, kernel, stride, padding, out_hw):
        return reference.avg_pool2d_forward(x, kernel, stride, padding), _cache(x, kernel, stride, padding, out_hw)

    @staticmethod
    def avg_backward(grad_y, cache):
        xp = get_array_module(grad_y)
        like_x = xp.broadcast_to(xp.zeros((), cache.dtype), cache.x_shape)  # only its shape is read
        return reference.avg_pool2d_backward(like_x, grad_y.astype(cache.dtype, copy=False), cache.kernel,
                                             cache.stride, cache.padding)


def _cache(a, kernel, stride, padding, out_hw, **fields):
    return Cache(device=device_of(a), implementation="reference", x_shape=tuple(a.shape), kernel=kernel,
                 stride=stride, padding=padding, out_hw=out_hw, dtype=a.dtype, **fields)


pool2d = Kernel("pool2d", Reference, rule=device_of)
pool2d.add("cpu", pool_cpu)
pool2d.add("cuda", pool_cuda)
MODULES = pool2d.implementations


def _validate(x, kernel, stride, padding, what):
    check_nchw(x, f"{what} input")
    kernel, stride, padding = tuple(kernel), tuple(stride), tuple(padding)
    out_hw = conv_output_size(x.shape[2:], kernel, stride, padding, what=what)
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise ValueError(f"{what}: padding {padding} must be at most half the kernel "
                         f"size {kernel}")
    float_dtype(x)
    return kernel, stride, padding, out_hw


def _check_grad_shape(grad_y, cache, what):
    expected = tuple(cache.x_shape[:2]) + tuple(cache.out_hw)
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"{what} backward: grad_y has shape {tuple(grad_y.shape)}, "
                         f"expected {expected}")


def max_pool2d_forward(x, kernel, stride, padding):
    """Max pooling; returns ``(y, cache)``. x: (N, C, H, W) -> y: (N, C, Ho, Wo)."""
    kernel, stride, padding, out_hw = _validate(x, kernel, stride, padding, "max_pool2d")
    return MODULES[pool2d.choose(x)].max_forward(x, kernel, stride, padding, out_hw)


def max_pool2d_backward(grad_y, cache):
    """Gradient of ``max_pool2d_forward``: grad_y (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    _check_grad_shape(grad_y, cache, "max_pool2d")
    return MODULES[cache.implementation].max_backward(grad_y, cache)


def avg_pool2d_forward(x, kernel, stride, padding):
    """Average pooling (zero padding counted); returns ``(y, cache)``.
    x: (N, C, H, W) -> y: (N, C, Ho, Wo)."""
    kernel, stride, padding, out_hw = _validate(x, kernel, stride, padding, "avg_pool2d")
    return MODULES[pool2d.choose(x)].avg_forward(x, kernel, stride, padding, out_hw)


def avg_pool2d_backward(grad_y, cache):
    """Gradient of ``avg_pool2d_forward``: grad_y (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    _check_grad_shape(grad_y, cache, "avg_pool2d")
    return MODULES[cache.implementation].avg_backward(grad_y, cache)
