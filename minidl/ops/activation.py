"""Activations and (log-)softmax, written to stay finite for large |x|."""
import numpy

from ..autograd import Function
from ..backend import get_array_module
from ..kernels import parallel


class ReLU(Function):
    """y = max(x, 0);  dL/dx = g * [x > 0]."""
    reads_inputs = False
    reads_output = True

    def forward(self, x):
        xp = get_array_module(x)
        if xp is numpy:  # over the kernel threads, in cache-sized pieces
            # against an array of zeros: NumPy's maximum with a scalar runs 2-2.6x slower
            # than with a second array (benchmarks/bench_primitives.py)
            self.y = parallel.elementwise(_relu_into, numpy.empty_like(x), x)
        else:
            self.y = xp.maximum(x, 0)
        return self.y

    def backward(self, g):
        # g * [y > 0] (y > 0 exactly where x > 0); a multiply is several times faster than
        # where(). On the CPU each piece's mask is a small temporary that stays in cache.
        xp = get_array_module(g)
        if xp is numpy:
            return (parallel.elementwise(lambda out, g, y: numpy.multiply(g, y > 0, out=out),
                                         numpy.empty_like(g), g, self.y),)
        return (g * (self.y > 0),)

    def backward_graph(self, g):
        # the mask is constant almost everywhere: the second derivative is 0 (as in PyTorch)
        return (g * (self.y > 0),)


_ZEROS = {}


def _relu_into(y, x):
    """y = max(x, 0) against ``_zeros``, a piece of at most ``parallel.ELEMENTWISE_BYTES`` at a
    time (a call with one thread gets the whole array; the pieces keep the zeros small)."""
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


class Sigmoid(Function):
    """y = 1 / (1 + e^-x), computed from e^-|x| so that no exponential overflows;
    dL/dx = g * y * (1 - y)."""
    reads_inputs = False
    reads_output = True

    def forward(self, x):
        xp = get_array_module(x)
        e = xp.exp(-xp.abs(x))          # in (0, 1]: never overflows
        self.y = xp.where(x >= 0, 1 / (1 + e), e / (1 + e))
        return self.y

    def backward(self, g):
        return (g * self.y * (1 - self.y),)

    def backward_graph(self, g):
        y = self.output_tensor(self.y)
        return (g * y * (1 - y),)


class Tanh(Function):
    """y = tanh x;  dL/dx = g * (1 - y^2)."""
    reads_inputs = False
    reads_output = True

    def forward(self, x):
        self.y = get_array_module(x).tanh(x)
        return self.y

    def backward(self, g):
        return (g * (1 - self.y * self.y),)

    def backward_graph(self, g):
        y = self.output_tensor(self.y)
        return (g * (1 - y * y),)


def log_softmax_array(x, axis):
    """log softmax(x) = x - max - log sum exp(x - max): the shift keeps exp from overflowing."""
    xp = get_array_module(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


class Softmax(Function):
    """y_i = e^{x_i} / sum_j e^{x_j};  dL/dx = y * (g - sum_j g_j y_j)."""
    reads_inputs = False
    reads_output = True

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.y = get_array_module(x).exp(log_softmax_array(x, self.axis))
        return self.y

    def backward(self, g):
        y = self.y
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)

    def backward_graph(self, g):
        y = self.output_tensor(self.y)
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """y = log softmax(x);  dL/dx = g - softmax(x) * sum_j g_j."""
    reads_inputs = False
    reads_output = True

    def __init__(self, axis=-1):
        self.axis = axis

    def forward(self, x):
        self.y = log_softmax_array(x, self.axis)
        return self.y

    def backward(self, g):
        xp = get_array_module(g)
        return (g - xp.exp(self.y) * g.sum(axis=self.axis, keepdims=True),)

    def backward_graph(self, g):
        return (g - self.output_tensor(self.y).exp() * g.sum(axis=self.axis, keepdims=True),)
