"""Matrix products: ``a @ b`` and the fused dense layer ``x W^T + b``."""
from .. import kernels
from ..autograd import Function
from .arithmetic import unbroadcast


class MatMul(Function):
    """y = a @ b with NumPy's rules (batched, broadcast, 1-D operands promoted).

    For 2-D operands: dL/da = g @ b^T and dL/db = a^T @ g; batch axes are summed back
    to each operand's shape.
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: operands must have at least one dimension, "
                             f"got shapes {a.shape} and {b.shape}")
        if a.shape[-1] != b.shape[-2 if b.ndim > 1 else 0]:
            raise ValueError(f"matmul: inner dimensions differ: a has shape {a.shape}, b has shape {b.shape}")
        self.a, self.b = a, b
        return kernels.matmul(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        a2 = a[None, :] if a.ndim == 1 else a          # (.., n, k)
        b2 = b[:, None] if b.ndim == 1 else b          # (.., k, m)
        g2 = g
        if b.ndim == 1:  # first: for 1-D @ 1-D, g is 0-d and becomes (1,) then (1, 1)
            g2 = g2[..., None]
        if a.ndim == 1:
            g2 = g2[..., None, :]
        ga = gb = None
        if self.needs_grad[0]:
            ga = kernels.matmul(g2, b2.swapaxes(-1, -2))
            ga = unbroadcast(ga, a2.shape).reshape(a.shape) if ga.ndim >= a2.ndim else ga.reshape(a.shape)
        if self.needs_grad[1]:
            gb = kernels.matmul(a2.swapaxes(-1, -2), g2)
            gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb

    def backward_graph(self, g):
        # backward's steps with Tensor operations (reshape for [None, :], transpose for swapaxes)
        a, b = self.input_tensor(0, self.a), self.input_tensor(1, self.b)
        a2 = a.reshape((1,) + a.shape) if a.ndim == 1 else a
        b2 = b.reshape(b.shape + (1,)) if b.ndim == 1 else b
        g2 = g
        if b.ndim == 1:
            g2 = g2.reshape(g2.shape + (1,))
        if a.ndim == 1:
            g2 = g2.reshape(g2.shape[:-1] + (1,) + g2.shape[-1:])
        ga = gb = None
        if self.needs_grad[0]:
            ga = g2 @ b2.transpose(-1, -2)
            ga = unbroadcast(ga, a2.shape).reshape(a.shape) if ga.ndim >= a2.ndim else ga.reshape(a.shape)
        if self.needs_grad[1]:
            gb = unbroadcast(a2.transpose(-1, -2) @ g2, b2.shape).reshape(b.shape)
        return ga, gb


class Linear(Function):
    """y = x W^T + b with x (N, in), W (out, in), b (out,).

    dL/dx = g W,  dL/dW = g^T x,  dL/db = sum_n g.
    """

    def forward(self, x, weight, bias):
        self.x, self.w = x, weight
        y = kernels.matmul(x, weight.T)
        if bias is not None:  # None: the layer has no bias
            y += bias
        return y

    def backward(self, g):
        gx = kernels.matmul(g, self.w) if self.needs_grad[0] else None
        gw = kernels.matmul(g.T, self.x) if self.needs_grad[1] else None
        gb = g.sum(axis=0) if self.needs_grad[2] else None
        return gx, gw, gb

    def backward_graph(self, g):
        x, w = self.input_tensor(0, self.x), self.input_tensor(1, self.w)
        return (g @ w if self.needs_grad[0] else None,
                g.T @ x if self.needs_grad[1] else None,
                g.sum(axis=0) if self.needs_grad[2] else None)
