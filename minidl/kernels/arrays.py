"""What the kernels share: their contract on arrays and the window view.

The contract (NCHW shapes, whether a window fits, floating dtypes) is checked here once, for
convolution and pooling alike; ``functional`` checks the Tensors (types, dimensions, dtypes)
before they reach the kernels.
"""
import numpy

from ..backend import get_array_module


def conv_output_size(in_hw, kernel, stride, padding, what="conv2d"):
    """Output (Ho, Wo) of a sliding window; ``ValueError`` if the window does not fit.

    ``Ho = (H + 2*ph - kh) // sh + 1`` and the same for the width.
    """
    (H, W), (kh, kw), (sh, sw), (ph, pw) = in_hw, kernel, stride, padding
    if kh < 1 or kw < 1:
        raise ValueError(f"{what}: kernel size must be >= 1, got {(kh, kw)}")
    if sh < 1 or sw < 1:
        raise ValueError(f"{what}: stride must be >= 1, got {(sh, sw)}")
    if ph < 0 or pw < 0:
        raise ValueError(f"{what}: padding must be >= 0, got {(ph, pw)}")
    Ho = (H + 2 * ph - kh) // sh + 1
    Wo = (W + 2 * pw - kw) // sw + 1
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"{what}: the window does not fit: input {H}x{W}, kernel {kh}x{kw}, stride {sh}x{sw}, "
            f"padding {ph}x{pw}; the padded input {H + 2 * ph}x{W + 2 * pw} must be at least as "
            f"large as the kernel (the output would be {Ho}x{Wo})")
    return Ho, Wo


def float_dtype(*arrays):
    """The common floating dtype of ``arrays``; integer or bool inputs are rejected."""
    dtype = numpy.result_type(*[a.dtype for a in arrays])
    if dtype.kind != "f":
        raise TypeError(f"expected floating-point arrays, got dtype {dtype}")
    return dtype


def gpu_dtype(dtype):
    """The dtype the CUDA kernels compute in: float32/float64 as is, float16 via float32."""
    return dtype if dtype in (numpy.float32, numpy.float64) else numpy.dtype(numpy.float32)


def check_nchw(a, name):
    if a.ndim != 4:
        raise ValueError(f"{name} must be 4-D (N, C, H, W), got shape {tuple(a.shape)}")


def window(a, p, q, out_hw, stride):
    """View of ``a`` (N, C, Hpad, Wpad) holding what offset (p, q) reads for every output:
    ``window(a, p, q)[n, c, i, j] = a[n, c, i*sh + p, j*sw + q]``, shape (N, C, Ho, Wo)."""
    (Ho, Wo), (sh, sw) = out_hw, stride
    return a[:, :, p:p + sh * (Ho - 1) + 1:sh, q:q + sw * (Wo - 1) + 1:sw]


def window_mean(xpad, kernel, stride, out):
    """``out`` (N, C, Ho, Wo) = the mean of every window of ``xpad``: a sum of kh*kw strided
    views, then one division (NumPy and CuPy alike)."""
    kh, kw = kernel
    out[...] = window(xpad, 0, 0, out.shape[2:], stride)
    for k in range(1, kh * kw):
        out += window(xpad, k // kw, k % kw, out.shape[2:], stride)
    out /= kh * kw  # a Python int keeps the array's dtype (no float64 upcast)
    return out


class Cache:
    """What a backward pass needs from its forward pass; opaque to callers."""

    def __init__(self, **fields):
        self.__dict__.update(fields)


def per_channel(v, like):
    """The per-channel values ``v`` (C,) shaped to broadcast against ``like`` (N, C, ...), in its
    dtype. On the CPU they are spread over one whole image, (1, C, H, W), contiguous: NumPy takes
    a faster loop for a binary ufunc when no operand has a zero stride inside the image
    (``benchmarks/bench_primitives.py``), and the copy is one image, small next to a batch."""
    v = v.astype(like.dtype, copy=False).reshape((1, -1) + (1,) * (like.ndim - 2))
    if not isinstance(like, numpy.ndarray):
        return v
    return numpy.ascontiguousarray(numpy.broadcast_to(v, (1,) + like.shape[1:]))


def channel_sum(a):
    """sum over all axes but 1, per channel: one pass (``a.sum(axis=(0, 2, 3))`` reduces over
    non-contiguous axes, a slower loop: ``benchmarks/bench_primitives.py``)."""
    n, c = a.shape[:2]
    return get_array_module(a).einsum("nci->c", a.reshape(n, c, -1))
