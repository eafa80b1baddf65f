"""CUDA C sources of the GPU kernels, and a cached compile-and-launch helper.

All kernels share these conventions:

* ``real_t`` is ``float`` or ``double``: :func:`kernel_source` prepends the typedef, and
  each dtype is compiled into its own module (two instantiations of one source).
* Each kernel is a grid-stride loop over ``total`` OUTPUT elements and every iteration
  computes exactly one of them from its inputs (a gather). Nothing is scattered, there
  are no atomics, and every sum runs in a fixed order, so results are deterministic.
* Index math is done in ``long long`` (sizes such as N*C*H*W may exceed 2**31), and
  arrays are C-contiguous NCHW; "nc" below is the merged index n*C + c.
* The same text must also compile as plain C++ (no CUDA headers or intrinsics beyond
  blockIdx/blockDim/threadIdx/gridDim): the tests build it on the host with a small shim
  to check the index math without a GPU.

Importing this module never imports CuPy; :func:`get_kernel` does, on first use.
"""
import numpy

_BODY = r"""
#define MINIDL_GRID_LOOP(t, total) \
    for (long long t = (long long)blockIdx.x * blockDim.x + threadIdx.x; t < (total); \
         t += (long long)blockDim.x * gridDim.x)

/* im2col for conv2d. cols is (K, M) row-major with
 *   K = C*kh*kw rows, row k = (c*kh + p)*kw + q   (the order of w.reshape(F, K)),
 *   M = N*Ho*Wo columns, column m = (n*Ho + i)*Wo + j,
 *   cols[k, m] = xpad[n, c, i*sh + p, j*sw + q]
 * where xpad is x zero-padded by (ph, pw): input row h = i*sh + p - ph, column
 * w = j*sw + q - pw, and 0 when (h, w) falls outside x. One thread per cols entry. */
extern "C" __global__ void minidl_im2col(
    const real_t* x, real_t* cols, const long long total,
    const long long N, const long long C, const long long H, const long long W,
    const long long kh, const long long kw, const long long sh, const long long sw,
    const long long ph, const long long pw, const long long Ho, const long long Wo)
{
    const long long M = N * Ho * Wo;
    MINIDL_GRID_LOOP(t, total) {
        const long long m = t % M, k = t / M;
        const long long j = m % Wo, i = (m / Wo) % Ho, n = m / (Wo * Ho);
        const long long q = k % kw, p = (k / kw) % kh, c = k / (kw * kh);
        const long long h = i * sh + p - ph, w = j * sw + q - pw;
        real_t v = 0;
        if (h >= 0 && h < H && w >= 0 && w < W) v = x[((n * C + c) * H + h) * W + w];
        cols[t] = v;
    }
}

/* col2im, the adjoint of im2col, as a gather: one thread per input pixel (n, c, h, w)
 * sums every cols entry that im2col copied from it, i.e. all (p, q, i, j) with
 *   i*sh + p - ph == h   and   j*sw + q - pw == w.
 * For a fixed p that needs h + ph - p = i*sh: non-negative, divisible by sh, and
 * i = (h + ph - p)/sh < Ho; likewise for q and j. Terms are added in (p, q) order. */
extern "C" __global__ void minidl_col2im(
    const real_t* cols, real_t* x_grad, const long long total,
    const long long N, const long long C, const long long H, const long long W,
    const long long kh, const long long kw, const long long sh, const long long sw,
    const long long ph, const long long pw, const long long Ho, const long long Wo)
{
    const long long M = N * Ho * Wo;
    MINIDL_GRID_LOOP(t, total) {
        const long long w = t % W, h = (t / W) % H, c = (t / (W * H)) % C, n = t / (W * H * C);
        real_t acc = 0;
        for (long long p = 0; p < kh; ++p) {
            const long long hs = h + ph - p;                 /* = i*sh if offset p reads row h */
            if (hs < 0) break;                               /* hs only decreases with p */
            if (hs % sh != 0 || hs / sh >= Ho) continue;
            const long long i = hs / sh;
            for (long long q = 0; q < kw; ++q) {
                const long long ws = w + pw - q;             /* = j*sw */
                if (ws < 0) break;
                if (ws % sw != 0 || ws / sw >= Wo) continue;
                const long long j = ws / sw;
                acc += cols[((c * kh + p) * kw + q) * M + (n * Ho + i) * Wo + j];
            }
        }
        x_grad[t] = acc;
    }
}

/* Max pooling forward: one thread per output (nc, i, j) scans its window in row-major
 * order k = p*kw + q, reading xpad[nc, i*sh + p, j*sw + q] (neg_inf outside x). Same
 * rule as the CPU code: start from k = 0; a later value takes the argmax only if
 * strictly greater (ties keep the first maximum); a NaN makes the output NaN for good
 * (every later comparison with it is false) without taking the argmax. */
extern "C" __global__ void minidl_maxpool_fwd(
    const real_t* x, real_t* y, int* argmax, const long long total,
    const long long H, const long long W, const long long kh, const long long kw,
    const long long sh, const long long sw, const long long ph, const long long pw,
    const long long Ho, const long long Wo, const real_t neg_inf)
{
    MINIDL_GRID_LOOP(t, total) {
        const long long j = t % Wo, i = (t / Wo) % Ho, nc = t / (Wo * Ho);
        const real_t* plane = x + nc * H * W;
        real_t best = neg_inf;
        int arg = 0;
        for (long long k = 0; k < kh * kw; ++k) {
            const long long h = i * sh + k / kw - ph, w = j * sw + k % kw - pw;
            const real_t v = (h >= 0 && h < H && w >= 0 && w < W) ? plane[h * W + w] : neg_inf;
            if (k == 0) { best = v; }
            else if (v > best) { best = v; arg = (int)k; }
            else if (v != v) { best = v; }
        }
        y[t] = best;
        argmax[t] = arg;
    }
}

/* Max pooling backward, gathered: one thread per input pixel (nc, h, w) visits every
 * window that contains it -- offsets (p, q) with i = (h + ph - p)/sh and
 * j = (w + pw - q)/sw exact and in range, as in col2im -- and adds grad_y[nc, i, j] when
 * that window's argmax is this offset (p*kw + q). */
extern "C" __global__ void minidl_maxpool_bwd(
    const real_t* grad_y, const int* argmax, real_t* grad_x, const long long total,
    const long long H, const long long W, const long long kh, const long long kw,
    const long long sh, const long long sw, const long long ph, const long long pw,
    const long long Ho, const long long Wo)
{
    MINIDL_GRID_LOOP(t, total) {
        const long long w = t % W, h = (t / W) % H, nc = t / (W * H);
        real_t acc = 0;
        for (long long p = 0; p < kh; ++p) {
            const long long hs = h + ph - p;
            if (hs < 0) break;
            if (hs % sh != 0 || hs / sh >= Ho) continue;
            const long long i = hs / sh;
            for (long long q = 0; q < kw; ++q) {
                const long long ws = w + pw - q;
                if (ws < 0) break;
                if (ws % sw != 0 || ws / sw >= Wo) continue;
                const long long o = (nc * Ho + i) * Wo + ws / sw;
                if (argmax[o] == (int)(p * kw + q)) acc += grad_y[o];
            }
        }
        grad_x[t] = acc;
    }
}

/* Average pooling backward, gathered like maxpool_bwd: input pixel (nc, h, w) receives
 * grad_y[nc, i, j] / divisor from every window (i, j) containing it; divisor = kh*kw
 * (zero padding counted). */
extern "C" __global__ void minidl_avgpool_bwd(
    const real_t* grad_y, real_t* grad_x, const long long total,
    const long long H, const long long W, const long long kh, const long long kw,
    const long long sh, const long long sw, const long long ph, const long long pw,
    const long long Ho, const long long Wo, const real_t divisor)
{
    MINIDL_GRID_LOOP(t, total) {
        const long long w = t % W, h = (t / W) % H, nc = t / (W * H);
        real_t acc = 0;
        for (long long p = 0; p < kh; ++p) {
            const long long hs = h + ph - p;
            if (hs < 0) break;
            if (hs % sh != 0 || hs / sh >= Ho) continue;
            const long long i = hs / sh;
            for (long long q = 0; q < kw; ++q) {
                const long long ws = w + pw - q;
                if (ws < 0) break;
                if (ws % sw != 0 || ws / sw >= Wo) continue;
                acc += grad_y[(nc * Ho + i) * Wo + ws / sw] / divisor;
            }
        }
        grad_x[t] = acc;
    }
}
"""

KERNEL_NAMES = ("minidl_im2col", "minidl_col2im", "minidl_maxpool_fwd",
                "minidl_maxpool_bwd", "minidl_avgpool_bwd")

_C_TYPES = {numpy.dtype(numpy.float32): "float", numpy.dtype(numpy.float64): "double"}

# Extra NVRTC options of every kernel (CuPy adds its own: -arch, -ftz=true, --std, includes).
# tests/test_nvrtc.py compiles the sources with exactly these plus CuPy's, for sm_80 and sm_90.
OPTIONS = ()

THREADS_PER_BLOCK = 256
MAX_BLOCKS = 1 << 20  # the grid-stride loop covers anything beyond

_cache = {}


def c_type(dtype):
    """C type name for a kernel dtype; only float32 and float64 are compiled."""
    try:
        return _C_TYPES[numpy.dtype(dtype)]
    except KeyError:
        raise TypeError(f"CUDA kernels support float32 and float64, got {dtype}") from None


def kernel_source(dtype):
    """Full CUDA source for ``dtype``: the ``real_t`` typedef followed by all kernels."""
    return f"typedef {c_type(dtype)} real_t;\n" + _BODY


def get_kernel(name, dtype):
    """The ``cupy.RawKernel`` ``name`` for ``dtype``, built once and cached.

    CuPy compiles it with NVRTC on first launch (per device) and keeps the binary in its
    on-disk kernel cache, so later processes skip compilation too.
    """
    key = (name, c_type(dtype))
    kernel = _cache.get(key)
    if kernel is None:
        if name not in KERNEL_NAMES:
            raise KeyError(f"unknown kernel {name!r}")
        import cupy
        kernel = cupy.RawKernel(kernel_source(dtype), name, options=OPTIONS)
        _cache[key] = kernel
    return kernel


def kernel_args(args, dtype):
    """Convert launch arguments to the kernel's C types: arrays are passed as pointers,
    Python ints as ``long long`` (numpy.int64), Python floats as ``real_t``."""
    real = numpy.dtype(dtype).type
    out = []
    for a in args:
        if isinstance(a, (bool, numpy.bool_)):
            raise TypeError("bool kernel arguments are not used")
        if isinstance(a, (int, numpy.integer)):
            out.append(numpy.int64(a))
        elif isinstance(a, (float, numpy.floating)):
            out.append(real(a))
        else:
            out.append(a)
    return tuple(out)


def launch(name, dtype, total, *args):
    """Run kernel ``name`` over ``total`` outputs; ``args`` are in the kernel's order."""
    if total <= 0:
        return
    blocks = min((total + THREADS_PER_BLOCK - 1) // THREADS_PER_BLOCK, MAX_BLOCKS)
    get_kernel(name, dtype)((blocks,), (THREADS_PER_BLOCK,), kernel_args(args, dtype))
