"""Elementwise kernels on the CPU: the fast implementations of ``reference.relu_forward``,
``reference.relu_backward`` and ``reference.sgd_update``.

The same arithmetic as the reference, run a piece of the batch axis at a time over the kernel
threads (``runtime.parallel.elementwise``): NumPy runs a ufunc on one core, and an expression
of several ufuncs streams a temporary of the whole array's size through memory between them;
piece by piece the temporaries stay in a core's cache. Pieces are independent, so the result is
the same bits for any thread count.
"""
import numpy

from . import reference
from .runtime import parallel


def relu_forward(x):
    """y = max(x, 0), against an array of zeros (see ``_relu_into``)."""
    return parallel.elementwise(_relu_into, numpy.empty_like(x), x)


def relu_backward(g, y):
    """g * [y > 0] as one multiply by the boolean mask, piece by piece (where() is slower)."""
    return parallel.elementwise(lambda out, g, y: numpy.multiply(g, y > 0, out=out), numpy.empty_like(g), g, y)


def sgd_update(p, g, v, lr, momentum, nesterov, weight_decay, first):
    """``reference.sgd_update`` a piece of the parameter at a time (no velocity: g stands in)."""
    parallel.elementwise(
        lambda pp, gp, vp: reference.sgd_update(pp, gp, vp, lr, momentum, nesterov, weight_decay, first),
        p, g, v if momentum else g)


_ZEROS = {}


def _relu_into(y, x):
    """y = max(x, 0) against ``_zeros``, a piece of at most ``parallel.ELEMENTWISE_BYTES`` at a
    time: NumPy's maximum with a scalar operand takes a slower loop than with a second array
    (``benchmarks/bench_primitives.py``), and small pieces keep the zeros small."""
    limit = parallel.ELEMENTWISE_BYTES // x.dtype.itemsize
    if x.size <= limit:
        numpy.maximum(x, _zeros(x), out=y)
    elif x.ndim == 0 or x[0].size > limit:  # a single row beyond a piece: the scalar form
        numpy.maximum(x, 0, out=y)
    else:
        rows = limit // x[0].size
        for a in range(0, x.shape[0], rows):
            numpy.maximum(x[a:a + rows], _zeros(x[a:a + rows]), out=y[a:a + rows])


def _zeros(like):
    """A read-only array of zeros of ``like``'s shape and dtype (at most
    ``parallel.ELEMENTWISE_BYTES``): a view of one buffer kept per dtype."""
    limit = parallel.ELEMENTWISE_BYTES // like.dtype.itemsize
    flat = _ZEROS.get(like.dtype)
    if flat is None or flat.size < like.size:  # (the piece size may have been raised)
        flat = numpy.zeros(limit, like.dtype)
        flat.flags.writeable = False
        _ZEROS[like.dtype] = flat
    return flat[:like.size].reshape(like.shape)
