"""The machinery behind the CPU kernels' fast implementations, kept in one place.

* ``parallel``: a thread pool that runs NumPy loops (which release the GIL) on slices of the
  arrays over several cores, and splits large matrix products into blocks;
* ``blas``: the BLAS library's thread count, seen and set at run time (threadpoolctl);
* ``workspace``: a pool of reusable scratch buffers, so that large temporaries do not pay
  fresh page faults on every call;
* ``autotune``: choosing a convolution algorithm by timing the candidates (opt-in, like
  ``cudnn.benchmark``);
* ``allocator``: the C heap's thresholds, fixed once so that a step's arrays are recycled
  rather than faulted in afresh (set when the engine is imported on the fast tier).

Only the fast implementations in ``minidl/kernels`` use these; the ops, optimizers and layers
never import them (``tests/test_imports.py`` checks it), so a reader of ``minidl/ops`` meets
plain array code.
"""
from . import allocator, autotune, blas, parallel, workspace

__all__ = ["allocator", "autotune", "blas", "parallel", "workspace"]
