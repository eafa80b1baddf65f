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
module checks the arrays and dispatches on their device: ``pool_cpu`` (NumPy: loops over the
window offsets only, pooled buffers, threads, the bit-mask max backward) or ``pool_cuda``
(CUDA gather kernels).
"""
from ..backend import device_of
from . import pool_cpu, pool_cuda
from .arrays import check_nchw, conv_output_size, float_dtype

# The implementation per device; each module has max_forward, max_backward, avg_forward and
# avg_backward, and its cache records the device.
MODULES = {"cpu": pool_cpu, "cuda": pool_cuda}


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
    return MODULES[device_of(x)].max_forward(x, kernel, stride, padding, out_hw)


def max_pool2d_backward(grad_y, cache):
    """Gradient of ``max_pool2d_forward``: grad_y (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    _check_grad_shape(grad_y, cache, "max_pool2d")
    return MODULES[cache.device].max_backward(grad_y, cache)


def avg_pool2d_forward(x, kernel, stride, padding):
    """Average pooling (zero padding counted); returns ``(y, cache)``.
    x: (N, C, H, W) -> y: (N, C, Ho, Wo)."""
    kernel, stride, padding, out_hw = _validate(x, kernel, stride, padding, "avg_pool2d")
    return MODULES[device_of(x)].avg_forward(x, kernel, stride, padding, out_hw)


def avg_pool2d_backward(grad_y, cache):
    """Gradient of ``avg_pool2d_forward``: grad_y (N, C, Ho, Wo) -> grad_x (N, C, H, W)."""
    _check_grad_shape(grad_y, cache, "avg_pool2d")
    return MODULES[cache.device].avg_backward(grad_y, cache)
