"""Array-level kernels (no Tensor, no autograd): convolution and pooling.

Every function takes and returns plain NumPy or CuPy arrays in NCHW layout and
dispatches on the array module of its inputs (:func:`minidl.backend.get_array_module`).
Forward functions return ``(output, cache)``; the cache is opaque and is handed back
unchanged to the matching backward function.

Reading order: ``reference.py`` (plain NumPy, the oracle of the tests), then ``conv.py`` and
``pool.py`` (the array checks of ``arrays.py`` and the dispatch), then the fast paths:
``conv_im2col.py``, ``conv_fft.py``, ``pool_cpu.py`` (with ``workspace.py`` and ``parallel.py``)
and the CUDA ones, ``conv_cuda.py`` and ``pool_cuda.py`` (kernel sources in ``cuda_sources.py``).
"""
from .conv import conv2d_backward, conv2d_forward, conv_output_size
from .autotune import conv_algorithm, get_conv_algorithm, set_conv_algorithm
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward

__all__ = [
    "conv_output_size",
    "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward",
    "avg_pool2d_forward", "avg_pool2d_backward",
    "set_conv_algorithm", "get_conv_algorithm", "conv_algorithm",
]
