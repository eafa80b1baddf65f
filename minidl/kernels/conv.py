"""2-D convolution (cross-correlation) on NCHW arrays: checks the shapes, then dispatches.

Math (no bias; the caller adds it)::

    xpad = x zero-padded by ph rows top/bottom and pw columns left/right
    y[n, f, i, j] = sum_{c, p, q} xpad[n, c, i*sh + p, j*sw + q] * w[f, c, p, q]

    x: (N, C, H, W)   w: (F, C, kh, kw)   y: (N, F, Ho, Wo)
    Ho = (H + 2*ph - kh) // sh + 1,   Wo = (W + 2*pw - kw) // sw + 1

Gradients, with g = dL/dy::

    dL/dw[f, c, p, q]      = sum_{n, i, j} g[n, f, i, j] * xpad[n, c, i*sh + p, j*sw + q]
    dL/dxpad[n, c, h', w'] = sum of g[n, f, i, j] * w[f, c, p, q]
                             over all (f, i, j, p, q) with i*sh + p == h' and j*sw + q == w'
    dL/dx = dL/dxpad with the padding border cut off

Read ``reference.py`` first: im2col unrolls the windows into a matrix ``cols`` (one row per
weight of a filter, one column per output pixel), and the three results are one matrix
product each (``y = W @ cols``, ``dW = g @ cols.T``, ``dcols = W.T @ g``, folded back by col2im).

The algorithms that compute this, by name (the ``conv2d`` kernel's implementations,
``ALGORITHMS``; ``registry``):

* ``reference``: ``reference.conv2d_forward``/``conv2d_backward``, the plain code (NumPy or CuPy),
  what the ``reference`` tier runs;
* ``im2col``: on the CPU ``conv_im2col`` (internal layouts, chunks of images, threads), on the
  GPU ``conv_cuda`` (CUDA gather kernels and cuBLAS);
* ``fft``: ``conv_fft``, CPU and stride 1 only, one complex product per frequency instead
  of kh*kw per output pixel.

On the fast tier the choice is a fixed rule of the shapes (``choose_algorithm``: FFT where
``use_fft`` says it pays, else im2col with ``conv_im2col.choose_layout``), so the same call
always runs the same code. Timing the candidates instead (``auto``, like
``cudnn.benchmark = True``) is opt-in: ``MINIDL_CONV_ALGO=auto`` or
``set_conv_algorithm("auto")`` (``runtime.autotune``); a forced algorithm name works the same way.

Every algorithm module has ``forward(x, w, stride, padding, out_hw, dtype, **options) ->
(y, cache)`` and ``backward(grad_y, cache, need_x_grad, need_w_grad) -> (grad_x, grad_w)``;
its cache records ``algorithm`` and ``device``, so the backward pass finds its way back.
"""
from typing import NamedTuple

import numpy

from ..backend import device_of, get_array_module
from . import conv_cuda, conv_fft, conv_im2col, reference
from .arrays import Cache, check_nchw, conv_output_size, float_dtype, gpu_dtype  # noqa: F401 (public names)
from .registry import Kernel
from .runtime import autotune, blas, parallel, workspace


class Algorithm(NamedTuple):
    """One way to compute a convolution: its module per device, and its limits."""
    modules: dict                 # device ("cpu", "cuda") -> module with forward/backward
    stride_1_only: bool = False
    kernel: tuple = None          # the only kernel size it computes, or None for any

    def applies(self, device, kernel, stride):
        """Whether this algorithm computes a convolution with these settings on ``device``."""
        return (device in self.modules and not (self.stride_1_only and tuple(stride) != (1, 1))
                and (self.kernel is None or tuple(kernel) == self.kernel))


class Reference:
    """The plain algorithm: ``reference.conv2d_forward`` and ``conv2d_backward`` on NumPy or CuPy
    arrays; the cache holds the inputs."""

    @staticmethod
    def forward(x, w, stride, padding, out_hw, dtype):
        x, w = x.astype(dtype, copy=False), w.astype(dtype, copy=False)
        y = get_array_module(x).ascontiguousarray(reference.conv2d_forward(x, w, stride, padding))
        return y, Cache(device=device_of(x), x=x, w=w, x_shape=tuple(x.shape), w_shape=tuple(w.shape),
                        stride=stride, padding=padding, out_hw=out_hw, dtype=dtype, algorithm="reference")

    @staticmethod
    def backward(grad_y, cache, need_x_grad, need_w_grad):
        gx, gw = reference.conv2d_backward(cache.x, cache.w, grad_y.astype(cache.dtype, copy=False),
                                           cache.stride, cache.padding)
        xp = get_array_module(gx)
        return (xp.ascontiguousarray(gx) if need_x_grad else None), (gw if need_w_grad else None)


def _rule(x, w, stride, padding):
    """The fast tier's algorithm: ``choose_algorithm``."""
    return choose_algorithm(x, w, stride, padding)


conv2d = Kernel("conv2d", Algorithm({"cpu": Reference, "cuda": Reference}), rule=_rule)
conv2d.add("im2col", Algorithm({"cpu": conv_im2col, "cuda": conv_cuda}))
conv2d.add("fft", Algorithm({"cpu": conv_fft}, stride_1_only=True))
ALGORITHMS = conv2d.implementations

# Below this batch size the per-frequency products are too small for the FFT path to pay.
FFT_MIN_BATCH = 32


def use_fft(N, C, F, kernel, stride, out_hw):
    """Whether the CPU forward takes the FFT path (``conv_fft``) rather than im2col.

    Only stride 1, only where the im2col GEMMs are expensive per output pixel (a kernel of at
    least 5x5 and C*kh*kw >= 400 products per output, or any kernel with C*kh*kw >= 800 on maps
    of at most 8x8 outputs, where the per-frequency products are few), and only for batches of at
    least ``FFT_MIN_BATCH``. Other 3x3 layers stay on im2col even where FFT wins the layer alone:
    on cifar_cnn's 48-channel layers it measured faster layer by layer but made the training step
    slower (its spectra are kept for the backward pass). The measurements behind this rule (``python
    benchmarks/bench_layouts.py``, ``bench_conv_algorithms.py``, ``bench_revisions.py``) are in
    ``benchmarks/README.md``.
    """
    kh, kw = kernel
    Ho, Wo = out_hw
    return (tuple(stride) == (1, 1) and N >= FFT_MIN_BATCH
            and ((kh * kw >= 25 and C * kh * kw >= 400) or (C * kh * kw >= 800 and Ho * Wo <= 64)))


def choose_algorithm(x, w, stride, padding):
    """The fixed rule's algorithm for these arrays: FFT where ``use_fft`` says so, else im2col."""
    N, C, H, W = x.shape
    F, _, kh, kw = w.shape
    on_cpu = get_array_module(x, w) is numpy
    out_hw = conv_output_size((H, W), (kh, kw), stride, padding)
    return "fft" if on_cpu and use_fft(N, C, F, (kh, kw), stride, out_hw) else "im2col"


def conv2d_forward(x, w, stride, padding, *, layout=None, algorithm=None, grads=(True, True)):
    """Cross-correlation ``y = conv2d(x, w)`` without bias; returns ``(y, cache)``.

    x: (N, C, H, W), w: (F, C, kh, kw), stride=(sh, sw), padding=(ph, pw) (zero padding).
    y: (N, F, Ho, Wo) in the common float dtype of x and w, C-contiguous.
    ``algorithm`` (a name in ``ALGORITHMS``) forces the method and ``layout`` ('cnhw', 'chwn'
    or 'nhwc') the CPU buffer layout of im2col (tests, tuning). By default the ``conv2d`` kernel
    chooses (``registry``): the reference on the reference tier; on the fast tier the fixed rule
    (``choose_algorithm``, ``conv_im2col.choose_layout``) unless ``autotune``'s mode is ``auto``
    (measured once per shape) or a forced algorithm.
    ``grads`` = (input gradient, weight gradient) that the backward pass will be asked for:
    part of the tuning key, since the candidates' backward costs differ.
    """
    check_nchw(x, "conv2d input x")
    check_nchw(w, "conv2d weight w")
    N, C, H, W = x.shape
    F, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"conv2d: x has {C} channels (shape {tuple(x.shape)}) but weight expects {Cw} "
                         f"(weight shape {tuple(w.shape)})")
    stride, padding = tuple(stride), tuple(padding)
    out_hw = conv_output_size((H, W), (kh, kw), stride, padding)
    dtype = float_dtype(x, w)
    if algorithm is not None and algorithm not in ALGORITHMS:
        names = " or ".join(repr(name) for name in ALGORITHMS)
        raise ValueError(f"conv2d: algorithm must be {names}, got {algorithm!r}")
    device = device_of(x)
    if algorithm is None and layout is None:
        algorithm, layout = _split(_default_name(x, w, stride, padding, out_hw, dtype, device, grads))
    algorithm = algorithm or "im2col"
    chosen = ALGORITHMS[algorithm]
    if not chosen.applies(device, (kh, kw), stride):
        limits = [f"{' or '.join(d.upper() for d in chosen.modules)} arrays"]
        if chosen.kernel is not None:
            limits.append(f"a {chosen.kernel[0]}x{chosen.kernel[1]} kernel")
        if chosen.stride_1_only:
            limits.append("stride 1")
        needs = " and ".join([", ".join(limits[:-1]), limits[-1]] if len(limits) > 1 else limits)
        raise ValueError(f"conv2d: the {algorithm} algorithm needs {needs}, got "
                         f"{'CuPy' if device == 'cuda' else 'NumPy'} arrays, kernel {(kh, kw)} and "
                         f"stride {stride}")
    options = {}
    if layout is not None:
        if algorithm != "im2col" or device != "cpu":
            raise ValueError(f"conv2d: layout={layout!r} applies to the im2col algorithm on the CPU, "
                             f"not to {algorithm} on {device}")
        if layout not in conv_im2col.LAYOUTS:
            names = ", ".join(repr(name) for name in conv_im2col.LAYOUT_NAMES)
            raise ValueError(f"conv2d: layout must be one of {names}, got {layout!r}")
        options["layout"] = layout
    return chosen.modules[device].forward(x, w, stride, padding, out_hw, dtype, **options)


def _split(name):
    """'im2col_chwn' -> ('im2col', 'chwn'); any other candidate name -> (name, None)."""
    algorithm, _, layout = name.partition("_")
    return algorithm, layout or None


def _cpu_candidates(kernel, stride):
    """The fast CPU algorithms that compute this convolution (im2col's layouts count one each)."""
    return [f"im2col_{layout}" for layout in conv_im2col.LAYOUTS] + [
        name for name, algo in ALGORITHMS.items()
        if name not in ("im2col", "reference") and algo.applies("cpu", kernel, stride)]


def _default_name(x, w, stride, padding, out_hw, dtype, device, grads):
    """The candidate name (``_cpu_candidates``, or an algorithm with its layout left to the rule)
    that runs when the caller forces nothing: the ``conv2d`` kernel's choice (the tier and the
    fixed rule), unless ``autotune``'s mode says otherwise on the fast tier."""
    rule = conv2d.choose(x, w, stride, padding)
    mode = autotune.get_conv_algorithm()
    if device != "cpu" or rule == "reference" or mode == "rule":
        return rule
    N, C = x.shape[:2]
    F, _, kh, kw = w.shape
    (Ho, Wo) = out_hw
    candidates = _cpu_candidates((kh, kw), stride)
    if mode in candidates or mode == "im2col":
        return mode
    if mode != "auto" or 2 * N * Ho * Wo * F * C * kh * kw < autotune.MIN_TUNE_FLOPS:
        return rule  # a forced algorithm that does not apply here, or too small to time
    # Measured choice (``autotune``): the key holds everything the timing depends on.
    grads = tuple(bool(g) for g in grads)
    key = ("conv2d", tuple(x.shape), tuple(w.shape), stride, padding, dtype.str, device,
           (parallel.get_num_threads(), blas.get_num_threads()), grads)
    name = autotune.lookup(key)
    if name is not None:
        return name

    def timed(name):
        algorithm, layout = _split(name)
        options = {} if layout is None else {"layout": layout}
        module = ALGORITHMS[algorithm].modules[device]

        def once():
            y, cache = module.forward(x, w, stride, padding, out_hw, dtype, **options)
            if any(grads):
                module.backward(y, cache, *grads)  # y stands in for dL/dy: only the time counts
            return kept_bytes(cache, x, w) if any(grads) else None
        return once
    prefer = rule if rule != "im2col" else "im2col_" + conv_im2col.choose_layout(C, F, kh, kw, Wo, stride[1]).name
    name = autotune.tune(key, {name: timed(name) for name in candidates}, prefer=prefer,
                         memory_limit=MAX_KEPT_RATIO * x.size * dtype.itemsize)
    workspace.release()  # the losers' buffers would otherwise stay pooled, unused
    return name


# ``auto`` mode's memory limit: a candidate may keep at most this many times the input's bytes
# for the backward pass. im2col keeps nothing but a reference to x and its weight matrix, FFT
# the spectra of the input and weights (1.6x the input of a 3x3 layer on 32x32 images, 2.8x for
# madry_mnist's conv2, 3.3x on 8x8 images, float32): on a busy machine the timings alone once
# chose FFT for cifar_cnn layers and raised the peak memory of a training step by a third.
MAX_KEPT_RATIO = 3.0


def kept_bytes(cache, *inputs):
    """Bytes of the arrays in ``cache`` (a kernel's backward cache) beyond ``inputs``."""
    fields = vars(cache) if hasattr(cache, "__dict__") else {n: getattr(cache, n) for n in cache.__slots__}
    return sum(a.nbytes for a in fields.values()
               if hasattr(a, "nbytes") and not any(a is b or a.base is b for b in inputs))


def conv2d_backward(grad_y, cache, need_x_grad=True, need_w_grad=True):
    """Gradients of ``conv2d_forward``: returns ``(grad_x or None, grad_w or None)``.

    grad_y: (N, F, Ho, Wo). grad_x: (N, C, H, W), grad_w: (F, C, kh, kw), both in the
    forward dtype. Skipped gradients cost nothing.
    """
    expected = (cache.x_shape[0], cache.w_shape[0]) + tuple(cache.out_hw)
    if tuple(grad_y.shape) != expected:
        raise ValueError(f"conv2d backward: grad_y has shape {tuple(grad_y.shape)}, "
                         f"expected {expected}")
    if not (need_x_grad or need_w_grad):
        return None, None
    module = ALGORITHMS[cache.algorithm].modules[cache.device]
    return module.backward(grad_y, cache, need_x_grad, need_w_grad)
