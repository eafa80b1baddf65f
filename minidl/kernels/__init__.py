"""Array-level kernels (no Tensor, no autograd), each a plain reference plus faster
implementations, chosen through one table (``registry``).

Every kernel takes and returns plain NumPy or CuPy arrays. The ops (``minidl/ops``), the
optimizers and the layers call the kernels below and never see how they run:

* convolution and pooling (``conv2d_forward``/``conv2d_backward``, ``max_pool2d_*``,
  ``avg_pool2d_*``; NCHW arrays; a forward returns ``(output, cache)`` and the opaque cache goes
  back unchanged to the matching backward);
* batch normalisation's per-channel passes (``batch_norm_stats``, ``channel_affine``,
  ``batch_norm_sums``, ``batch_norm_input_grad``) and ``matmul``.

Only what earns its place is a kernel: a fast implementation stays if it buys at least 3% of a
``madry_mnist`` or ``cifar_cnn`` training step (``benchmarks/README.md``). ReLU and the optimizer
updates measured no gain from threads and are plain code in ``ops`` and ``optim``.

Two tiers: ``reference`` runs ``reference.py`` everywhere (the plain code, the tests' oracle);
``fast`` (the default) runs each kernel's fixed, shape-based rule. ``MINIDL_KERNELS=reference``
or ``minidl.kernels.use("reference")`` selects the plain tier for the whole engine.

Reading order: ``reference.py``; ``registry.py`` (the table and the tiers); then ``conv.py`` and
``pool.py`` (checks and dispatch) and the fast implementations: ``conv_im2col.py``,
``conv_fft.py``, ``pool_cpu.py``, ``batch_norm_cpu.py`` (with the
machinery in ``runtime/``) and the CUDA ones, ``conv_cuda.py`` and ``pool_cuda.py`` (kernel
sources in ``cuda_sources.py``).
"""
import numpy

from . import batch_norm_cpu, conv_transpose, pool_gather, reference
from .conv import conv2d_backward, conv2d_forward, conv_output_size
from .pool import avg_pool2d_backward, avg_pool2d_forward, max_pool2d_backward, max_pool2d_forward
from .registry import KERNELS, Kernel, describe, force, tier, use
from .runtime import allocator, parallel
from .runtime.autotune import conv_algorithm, get_conv_algorithm, set_conv_algorithm


def _on_cpu(name):
    """A rule: implementation ``name`` for NumPy arrays, the reference for CuPy ones."""
    return lambda a, *args, **kwargs: name if isinstance(a, numpy.ndarray) else "reference"


batch_norm_stats = Kernel("batch_norm_stats", reference.batch_norm_stats, rule=_on_cpu("chunks"))
batch_norm_stats.add("chunks", batch_norm_cpu.batch_norm_stats)
channel_affine = Kernel("channel_affine", reference.channel_affine, rule=_on_cpu("chunks"))
channel_affine.add("chunks", batch_norm_cpu.channel_affine)
batch_norm_sums = Kernel("batch_norm_sums", reference.batch_norm_sums, rule=_on_cpu("chunks"))
batch_norm_sums.add("chunks", batch_norm_cpu.batch_norm_sums)
batch_norm_input_grad = Kernel("batch_norm_input_grad", reference.batch_norm_input_grad, rule=_on_cpu("chunks"))
batch_norm_input_grad.add("chunks", batch_norm_cpu.batch_norm_input_grad)

# The fast tier also fixes the C heap's thresholds (``runtime/allocator.py``): what it buys is
# measured in benchmarks/README.md; MINIDL_MALLOC=default leaves them to glibc.
if tier() == "fast":
    allocator.tune()

matmul = Kernel("matmul", reference.matmul, rule=_on_cpu("blocks"))
matmul.add("blocks", parallel.matmul)

# The second-derivative kernels (a convolution's input gradient as a transposed convolution,
# its weight gradient as a convolution, max pooling's gather): plain code on NumPy and CuPy,
# run only by ``backward_graph``; a faster implementation would be registered here beside them.
conv2d_transpose = Kernel("conv2d_transpose", conv_transpose.conv2d_transpose)
conv2d_weight = Kernel("conv2d_weight", conv_transpose.conv2d_weight)
max_pool2d_gather = Kernel("max_pool2d_gather", pool_gather.max_pool2d_gather)

__all__ = [
    "KERNELS", "Kernel", "use", "tier", "force", "describe",
    "conv_output_size", "conv2d_forward", "conv2d_backward",
    "max_pool2d_forward", "max_pool2d_backward", "avg_pool2d_forward", "avg_pool2d_backward",
    "batch_norm_stats", "channel_affine", "batch_norm_sums", "batch_norm_input_grad",
    "matmul", "conv2d_transpose", "conv2d_weight", "max_pool2d_gather",
    "set_conv_algorithm", "get_conv_algorithm", "conv_algorithm",
]
