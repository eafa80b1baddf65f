"""Elementwise binary arithmetic with NumPy broadcasting.

When an input was broadcast in the forward pass (for example a bias of shape ``(F,)``
added to ``(N, F)``), every output element that reused it contributes to its gradient, so
the incoming gradient is summed back over the broadcast axes (:func:`unbroadcast`).
"""
from ..autograd import Function
from ..backend import get_array_module


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes along which an array of ``shape`` was broadcast."""
    if grad.shape == tuple(shape):
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


class Add(Function):
    """y = a + b;  dL/da = dL/dy, dL/db = dL/dy (each unbroadcast)."""
    reads_inputs = False

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a + b

    def backward(self, g):
        sa, sb = self.shapes
        return (unbroadcast(g, sa) if self.needs_grad[0] else None,
                unbroadcast(g, sb) if self.needs_grad[1] else None)

    backward_graph = backward  # linear, and written with operations Tensors have


class Sub(Function):
    """y = a - b;  dL/da = g, dL/db = -g."""
    reads_inputs = False

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return a - b

    def backward(self, g):
        sa, sb = self.shapes
        return (unbroadcast(g, sa) if self.needs_grad[0] else None,
                unbroadcast(-g, sb) if self.needs_grad[1] else None)

    backward_graph = backward


class Mul(Function):
    """y = a * b;  dL/da = g * b, dL/db = g * a."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        a, b = self.a, self.b
        return (unbroadcast(g * b, a.shape) if self.needs_grad[0] else None,
                unbroadcast(g * a, b.shape) if self.needs_grad[1] else None)

    def backward_graph(self, g):
        a, b = self.input_tensor(0, self.a), self.input_tensor(1, self.b)
        return (unbroadcast(g * b, a.shape) if self.needs_grad[0] else None,
                unbroadcast(g * a, b.shape) if self.needs_grad[1] else None)


class Div(Function):
    """y = a / b;  dL/da = g / b, dL/db = -g * a / b**2."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        a, b = self.a, self.b
        return (unbroadcast(g / b, a.shape) if self.needs_grad[0] else None,
                unbroadcast(-g * a / (b * b), b.shape) if self.needs_grad[1] else None)

    def backward_graph(self, g):
        a, b = self.input_tensor(0, self.a), self.input_tensor(1, self.b)
        return (unbroadcast(g / b, a.shape) if self.needs_grad[0] else None,
                unbroadcast(-g * a / (b * b), b.shape) if self.needs_grad[1] else None)


class Neg(Function):
    """y = -x."""
    reads_inputs = False

    def forward(self, x):
        return -x

    def backward(self, g):
        return (-g,)

    backward_graph = backward


class Pow(Function):
    """y = x ** p for a constant exponent p;  dL/dx = g * p * x**(p-1)."""

    def __init__(self, exponent):
        self.p = exponent

    def forward(self, x):
        self.x = x
        return x ** self.p

    def backward(self, g):
        return (g * self.p * self.x ** (self.p - 1),)

    def backward_graph(self, g):
        return (g * self.p * self.input_tensor(0, self.x) ** (self.p - 1),)


class Maximum(Function):
    """y = max(a, b) elementwise. Where a == b the gradient is split in half, the symmetric
    choice, so that maximum(x, x) has gradient 1 like x itself."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return get_array_module(a).maximum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        share_a = (a > b) + 0.5 * (a == b)
        share_a = share_a.astype(g.dtype)
        return (unbroadcast(g * share_a, a.shape) if self.needs_grad[0] else None,
                unbroadcast(g * (1 - share_a), b.shape) if self.needs_grad[1] else None)

    # the shares are constant almost everywhere (second derivative 0 off the ties)
    backward_graph = backward
