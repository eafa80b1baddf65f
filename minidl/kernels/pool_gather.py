"""The adjoint of max pooling's backward pass, for second derivatives: a gather.

max_pool2d's backward scatters each output's gradient to the input its window's maximum came
from (``argmax`` in the forward pass's cache: the window offset k = p*kw + q, on the CPU and on
the GPU alike). That scatter is linear; its adjoint reads, for every output, the value at the
same position::

    max_pool2d_gather(h, cache)[n, c, i, j] = hpad[n, c, i*sh + p, j*sw + q],  (p, q) = divmod(k, kw)

Written for NumPy and CuPy alike: a loop over the kh*kw window offsets.
"""
from ..backend import get_array_module
from .arrays import window


def max_pool2d_gather(h, cache):
    """h (N, C, H, W) -> (N, C, Ho, Wo): h at each window's maximum (``cache`` from the forward)."""
    if tuple(h.shape) != tuple(cache.x_shape):
        raise ValueError(f"max_pool2d gather: h has shape {tuple(h.shape)}, expected {tuple(cache.x_shape)}")
    xp = get_array_module(h)
    (kh, kw), (ph, pw) = cache.kernel, cache.padding
    N, C, H, W = h.shape
    hpad = xp.zeros((N, C, H + 2 * ph, W + 2 * pw), h.dtype)
    hpad[:, :, ph:ph + H, pw:pw + W] = h
    out = xp.zeros(cache.argmax.shape, h.dtype)
    for k in range(kh * kw):
        picked = cache.argmax == k
        out += xp.where(picked, window(hpad, k // kw, k % kw, cache.out_hw, cache.stride), 0)
    return out
