"""The reference kernels: plain array code, written to be read first, and run by the whole
engine on the ``reference`` tier (``MINIDL_KERNELS=reference``, ``minidl.kernels.use``).

Everything else in ``minidl/kernels`` computes the same numbers faster; the tests use these
functions as the oracle of every fast path. NumPy or CuPy arrays (``xp``), NCHW images, no
buffers, no threads. Convolution and pooling come first, then batch normalisation's
per-channel passes and the matrix product.

A window is what one output pixel reads. With stride (sh, sw) and xpad the padded input::

    windows[n, c, i, j, p, q] = xpad[n, c, i*sh + p, j*sw + q]        (N, C, Ho, Wo, kh, kw)
    Ho = (H + 2*ph - kh) // sh + 1,   Wo = (W + 2*pw - kw) // sw + 1

conv2d (cross-correlation) is then one matrix product (im2col)::

    cols = windows as an (N*Ho*Wo, C*kh*kw) matrix, one row per output pixel
    y    = cols @ w.reshape(F, C*kh*kw).T                                 (N*Ho*Wo, F)
    dL/dw    = g.T @ cols                  (g = dL/dy as an (N*Ho*Wo, F) matrix)
    dL/dcols = g @ w.reshape(F, -1)        then col2im adds each window back where it was read

Pooling reduces each window: max (padding is -inf; the gradient goes to the first maximum in
row-major (p, q) order) or mean over kh*kw (zero padding counted). Its backward passes build
the gradient of every window and fold them back with the same col2im.
"""
import numpy

from ..backend import get_array_module


def pad(x, padding, value=0.0):
    """x (N, C, H, W) with ``padding`` = (ph, pw) rows/columns of ``value`` on each side."""
    (ph, pw) = padding
    return get_array_module(x).pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def windows(xpad, kernel, stride):
    """All windows of xpad (N, C, Hp, Wp) as a read-only view (N, C, Ho, Wo, kh, kw)."""
    (sh, sw) = stride
    xp = get_array_module(xpad)
    return xp.lib.stride_tricks.sliding_window_view(xpad, kernel, axis=(2, 3))[:, :, ::sh, ::sw]


def col2im(gwin, xpad_shape, stride):
    """The adjoint of :func:`windows`: add each window's gradient (N, C, Ho, Wo, kh, kw) back
    onto the input positions it was read from; returns the gradient of xpad."""
    N, C, Ho, Wo, kh, kw = gwin.shape
    (sh, sw) = stride
    gxpad = get_array_module(gwin).zeros(xpad_shape, gwin.dtype)
    for p in range(kh):
        for q in range(kw):  # one offset: the windows read distinct positions, so += is safe
            gxpad[:, :, p:p + sh * (Ho - 1) + 1:sh, q:q + sw * (Wo - 1) + 1:sw] += gwin[..., p, q]
    return gxpad


def crop(gxpad, padding):
    """The gradient of x from that of xpad: cut the padding off."""
    (ph, pw), (Hp, Wp) = padding, gxpad.shape[2:]
    return gxpad[:, :, ph:Hp - ph, pw:Wp - pw]


# --- convolution ----------------------------------------------------------------------------
def conv2d_forward(x, w, stride, padding):
    """y (N, F, Ho, Wo) = conv2d(x (N, C, H, W), w (F, C, kh, kw)), no bias."""
    N, F = x.shape[0], w.shape[0]
    win = windows(pad(x, padding), w.shape[2:], stride)                # (N, C, Ho, Wo, kh, kw)
    Ho, Wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, -1)    # im2col
    y = cols @ w.reshape(F, -1).T                                      # (N*Ho*Wo, F)
    return y.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2)


def conv2d_backward(x, w, grad_y, stride, padding):
    """(dL/dx, dL/dw) for conv2d_forward(x, w, stride, padding), given grad_y = dL/dy."""
    N, C, _, _ = x.shape
    F, _, kh, kw = w.shape
    xpad = pad(x, padding)
    win = windows(xpad, (kh, kw), stride)
    Ho, Wo = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(N * Ho * Wo, -1)
    g = grad_y.transpose(0, 2, 3, 1).reshape(N * Ho * Wo, F)
    grad_w = (g.T @ cols).reshape(w.shape)
    gcols = (g @ w.reshape(F, -1)).reshape(N, Ho, Wo, C, kh, kw).transpose(0, 3, 1, 2, 4, 5)
    return crop(col2im(gcols, xpad.shape, stride), padding), grad_w


# --- pooling --------------------------------------------------------------------------------
def max_pool2d_forward(x, kernel, stride, padding):
    """y[n, c, i, j] = the maximum of window (i, j) of the -inf-padded x."""
    return windows(pad(x, padding, -numpy.inf), kernel, stride).max(axis=(4, 5))


def max_pool2d_backward(x, grad_y, kernel, stride, padding):
    """dL/dx: each output's gradient goes to the first maximum of its window (row-major)."""
    xpad = pad(x, padding, -numpy.inf)
    win = windows(xpad, kernel, stride)
    flat = win.reshape(win.shape[:4] + (-1,))                          # (N, C, Ho, Wo, kh*kw)
    first_max = flat.argmax(axis=4)[..., None] == get_array_module(x).arange(flat.shape[4])
    gwin = (first_max * grad_y[..., None]).reshape(win.shape)
    return crop(col2im(gwin, xpad.shape, stride), padding)


def avg_pool2d_forward(x, kernel, stride, padding):
    """y[n, c, i, j] = the mean of window (i, j) of the zero-padded x (padding counts)."""
    return windows(pad(x, padding), kernel, stride).mean(axis=(4, 5))


def avg_pool2d_backward(x, grad_y, kernel, stride, padding):
    """dL/dx: every input of a window receives grad_y / (kh*kw)."""
    xpad_shape = pad(x, padding).shape
    (kh, kw) = kernel
    gwin = get_array_module(grad_y).broadcast_to((grad_y / (kh * kw))[..., None, None], grad_y.shape + (kh, kw))
    return crop(col2im(gwin, xpad_shape, stride), padding)


# --- batch normalisation's per-channel passes ------------------------------------------------
def _channel_axes(x):
    """Every axis but the channel axis 1 of x (N, C, ...)."""
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, x):
    """Per-channel values v (C,) shaped (1, C, 1, ...) to broadcast against x, in x's dtype."""
    return v.astype(x.dtype, copy=False).reshape((1, -1) + (1,) * (x.ndim - 2))


def batch_norm_stats(x):
    """Per-channel mean and biased variance of x (N, C, ...): mean over every axis but 1."""
    axes = _channel_axes(x)
    mu = x.mean(axis=axes)
    xc = x - _per_channel(mu, x)
    return mu, (xc * xc).mean(axis=axes)


def channel_affine(x, scale, shift=None):
    """y = x * scale + shift with per-channel scale and shift (C,) (shift None: no shift)."""
    y = x * _per_channel(scale, x)
    return y if shift is None else y + _per_channel(shift, x)


def batch_norm_sums(g, x, mu):
    """The two per-channel sums of batch norm's backward pass: sum(g) and sum(g * (x - mu))."""
    axes = _channel_axes(x)
    return g.sum(axis=axes), (g * (x - _per_channel(mu, x))).sum(axis=axes)


def batch_norm_input_grad(g, x, mu, a, b, c):
    """dL/dx = a * g + b * (x - mu) + c with per-channel a, b, c (C,)."""
    return _per_channel(a, g) * g + _per_channel(b, g) * (x - _per_channel(mu, x)) + _per_channel(c, g)


# --- matrix product ---------------------------------------------------------------------------
def matmul(a, b):
    """a @ b with NumPy's rules."""
    return a @ b
