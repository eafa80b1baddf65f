"""2-D convolution by FFT on the CPU, for stride-1 convolutions with large kernels.

The same operation as ``reference.conv2d_forward`` (cross-correlation, zero padding, NCHW)::

    y[n, f, i, j] = sum_{c, p, q} xpad[n, c, i + p, j + q] * w[f, c, p, q]

computed in the frequency domain, on planes of L rows (and likewise columns) that hold the
image at rows ph .. ph + H - 1 and zeros elsewhere. The circular cross-correlation of such a
plane with w equals the linear one at every output as soon as L >= max(H + ph, Ho, kh), not
only from L >= H + 2*ph on: a window that runs past row L - 1 (into the bottom padding, all
zeros) wraps around to rows 0 .. ph - 1, the top padding, which is zero as well. (``fft_extent``;
for the Madry network's 14x14 maps with pad 2 that is a 16 x 16 plane, not 18 x 18.) The same
bound keeps the two gradients below free of wrapped terms on the rows they are read from. By
the correlation theorem

    Y[n, f, u, v] = sum_c conj(Wf[f, c, u, v]) * X[n, c, u, v]    (X, Wf: 2-D real FFTs)

so a (kh*kw)-term sum per output becomes one product per frequency. Gradients, g = dL/dy
zero-extended to (L, L):

    dL/dxpad = irfft(sum_f Wf[f, c] * G[n, f])         (convolution: the adjoint)
    dL/dw    = irfft(sum_n conj(G[n, f]) * X[n, c]), first kh x kw entries

For each frequency (u, v) the channel sums are matrix products, (N, C) @ (C, F) and so on,
done as one batched complex GEMM over all frequencies. Arrays are kept channels last,
(N, L, L, C), so that every per-frequency matrix is a strided BLAS operand without copies and
the transposes from and to NCHW stay within one image.

Why: im2col for the Madry network's second convolution (5x5, 32 -> 64 channels on 14x14,
batch 128) costs three real GEMMs of 2.6 GFLOP each plus an 80 MB buffer; here the products
are 3 x 0.3 GFLOP of complex arithmetic and the FFTs of 25k small (16 x 16) planes. The FFT
path pays off only for large kernels with many channels (see ``use_fft`` in ``conv.py``).
Float32 results differ from im2col's by rounding only (relative error ~1e-6).
"""
import functools

import numpy
import scipy.fft

from .runtime import parallel, workspace


class FFTConvCache:
    """What the backward pass needs; opaque to callers."""
    __slots__ = ("device", "x_freq", "w_freq", "x_shape", "w_shape", "stride", "padding",
                 "out_hw", "fft_hw", "dtype", "algorithm")

    def __init__(self, **kw):
        for k, v in kw.items():
            setattr(self, k, v)


def fft_size(n):
    """The smallest size >= n whose real FFT is fast (only factors 2, 3, 5)."""
    return scipy.fft.next_fast_len(n, real=True)


def fft_extent(size, pad, kernel):
    """FFT length along one axis of an image of ``size`` with ``pad`` zeros on each side and a
    ``kernel``-long filter: the smallest fast length >= max(size + pad, out, kernel) (module
    docstring: the wrapped part of every window lands in the top padding, which is zero)."""
    out = size + 2 * pad - kernel + 1
    return fft_size(max(size + pad, out, kernel))


@functools.lru_cache(maxsize=32)
def _kernel_dft(fft_hw, kernel, dtype):
    """Matrices of the 2-D DFT restricted to a kernel-sized support, ``(E, D)``:

    E[(u, v), (p, q)] = exp(-2 pi i (u p / Lh + v q / Lw)) maps a kh x kw kernel to its
    half spectrum (v < Lw // 2 + 1), and D[(p, q), (u, v)] = a_v exp(+2 pi i (...)) / (Lh Lw)
    with a_v = 2 for the bins that stand for a conjugate pair (1 for v = 0 and v = Lw / 2)
    maps a half spectrum back to the kh x kw corner of its real inverse (Re(D @ S)). A kernel
    has only kh*kw nonzeros, so these small products beat an FFT of the whole plane.
    """
    (Lh, Lw), (kh, kw) = fft_hw, kernel
    Vw = Lw // 2 + 1
    u, v = numpy.arange(Lh)[:, None], numpy.arange(Vw)[None, :]
    p, q = numpy.arange(kh)[:, None], numpy.arange(kw)[None, :]
    phase = (u.reshape(-1, 1, 1, 1) * p.reshape(1, 1, -1, 1) / Lh
             + v.reshape(1, -1, 1, 1) * q.reshape(1, 1, 1, -1) / Lw).reshape(Lh * Vw, kh * kw)
    E = numpy.exp(-2j * numpy.pi * phase)
    a = numpy.full(Vw, 2.0)
    a[0] = 1.0
    if Lw % 2 == 0:
        a[-1] = 1.0
    D = (numpy.exp(2j * numpy.pi * phase) * numpy.tile(a, Lh)[:, None]).T / (Lh * Lw)
    cdt = numpy.result_type(dtype, numpy.complex64)
    return E.astype(cdt), D.astype(cdt)


def _rfft2(a, workers):
    return scipy.fft.rfft2(a, axes=(1, 2), workers=workers)


def _irfft2_rows(a, fft_hw, rows, workers):
    """Real inverse 2-D FFT of the half spectra ``a`` (N, Lh, Vw, K), kept only at ``rows`` (a
    slice of the Lh rows): the inverse along the rows first, then the real inverse along the
    columns of only the rows that are read, which skips Lh - len(rows) of the second pass.
    ``a`` is overwritten."""
    a = scipy.fft.ifft(a, axis=1, workers=workers, overwrite_x=True)[:, rows]
    return scipy.fft.irfft(a, n=fft_hw[1], axis=2, workers=workers)


def forward(x, w, stride, padding, out_hw, dtype):
    """Stride-1 conv2d of x (N, C, H, W) with w (F, C, kh, kw): returns (y (N, F, Ho, Wo), cache)."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    (ph, pw), (Ho, Wo) = padding, out_hw
    Lh, Lw = fft_extent(H, ph, kh), fft_extent(W, pw, kw)
    workers = parallel.get_num_threads()

    with workspace.Scratch() as scratch:
        # x zero-extended to (N, Lh, Lw, C), channels last: the interior at offset (ph, pw),
        # zeros elsewhere (the padding and the extension both read as zeros).
        xpad = scratch.empty((N, Lh, Lw, C), dtype)
        xpad.fill(0)
        xpad[:, ph:ph + H, pw:pw + W] = x.transpose(0, 2, 3, 1)
        x_freq = _rfft2(xpad, workers)                                   # (N, Lh, Vw, C)
        Vw = x_freq.shape[2]
        UV = Lh * Vw

        # Weight spectra, one (F, C) matrix per frequency: (UV, kh*kw) @ (kh*kw, F*C).
        E, _ = _kernel_dft((Lh, Lw), (kh, kw), numpy.dtype(dtype))
        w_freq = parallel.matmul(E, w.reshape(F * C, kh * kw).T.astype(dtype, copy=False)).reshape(UV, F, C)

        # Y[uv] = X[uv] @ conj(Wf[uv])^T: (UV, N, C) @ (UV, C, F) -> (UV, N, F), written into an
        # (N, UV, F) array so that the inverse FFT and the final transpose stay within each image.
        y_freq = scratch.empty((N, UV, F), x_freq.dtype)
        parallel.matmul(_per_freq(x_freq), w_freq.conj().transpose(0, 2, 1), out=y_freq.transpose(1, 0, 2))
        y_rows = _irfft2_rows(y_freq.reshape(N, Lh, Vw, F), (Lh, Lw), slice(0, Ho), workers)
        y = workspace.copy(y_rows[:, :, :Wo].transpose(0, 3, 1, 2), dtype)  # from (N, Ho, Lw, F)
    cache = FFTConvCache(device="cpu", x_freq=x_freq, w_freq=w_freq, x_shape=tuple(x.shape),
                         w_shape=tuple(w.shape), stride=(1, 1), padding=tuple(padding),
                         out_hw=tuple(out_hw), fft_hw=(Lh, Lw), dtype=dtype, algorithm="fft")
    return y, cache


def backward(grad_y, cache, need_x_grad, need_w_grad):
    """Gradients of :func:`forward`: returns (grad_x or None, grad_w or None)."""
    N, C, H, W = cache.x_shape
    F, _, kh, kw = cache.w_shape
    (ph, pw), (Ho, Wo), (Lh, Lw), dtype = cache.padding, cache.out_hw, cache.fft_hw, cache.dtype
    workers = parallel.get_num_threads()

    with workspace.Scratch() as scratch:
        gpad = scratch.empty((N, Lh, Lw, F), dtype)
        gpad.fill(0)
        gpad[:, :Ho, :Wo] = grad_y.transpose(0, 2, 3, 1)
        g_freq = _rfft2(gpad, workers)                                   # (N, Lh, Vw, F)
        Vw = g_freq.shape[2]
        UV = Lh * Vw

        grad_x = None
        if need_x_grad:
            # dXpad[uv] = G[uv] @ Wf[uv]: (UV, N, F) @ (UV, F, C) -> (UV, N, C), stored (N, UV, C)
            dx_freq = scratch.empty((N, UV, C), g_freq.dtype)
            parallel.matmul(_per_freq(g_freq), cache.w_freq, out=dx_freq.transpose(1, 0, 2))
            dx_rows = _irfft2_rows(dx_freq.reshape(N, Lh, Vw, C), (Lh, Lw), slice(ph, ph + H), workers)
            grad_x = workspace.copy(dx_rows[:, :, pw:pw + W].transpose(0, 3, 1, 2), dtype)

    grad_w = None
    if need_w_grad:
        # dWf[uv] = conj(G[uv])^T @ X[uv]: (UV, F, N) @ (UV, N, C) -> (UV, F, C)
        numpy.conjugate(g_freq, out=g_freq)
        dw_freq = parallel.matmul(_per_freq(g_freq).transpose(0, 2, 1), _per_freq(cache.x_freq))
        _, D = _kernel_dft((Lh, Lw), (kh, kw), numpy.dtype(dtype))
        dw = parallel.matmul(D, dw_freq.reshape(UV, F * C)).real                     # (kh*kw, F*C)
        grad_w = numpy.ascontiguousarray(dw.T.reshape(F, C, kh, kw), dtype=dtype)
    return grad_x, grad_w


def _per_freq(a):
    """An (N, Lh, Vw, K) spectrum as one (N, K) matrix per frequency: an (UV, N, K) view."""
    N, Lh, Vw, K = a.shape
    return a.reshape(N, Lh * Vw, K).transpose(1, 0, 2)
