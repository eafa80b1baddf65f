"""Selecting and combining values: where, elementwise minimum, gather, expand, p-norms.

These back the PyTorch-style Tensor methods (``x.where``, ``x.masked_fill``, ``x.gather``,
``x.expand``, ``x.norm``) and ``md.where``/``md.min``.
"""
from ..autograd import Function
from ..backend import get_array_module
from .arithmetic import unbroadcast
from .reduce import expand_reduced, expand_reduced_tensor, normalize_axes
from .shape import ScatterAdd, scatter_add


class Where(Function):
    """y = a where cond else b (broadcast);  dL/da = g [cond], dL/db = g [not cond]."""
    reads_inputs = False

    def __init__(self, cond):
        self.cond = cond

    def forward(self, a, b):
        self.shapes = a.shape, b.shape
        return get_array_module(a).where(self.cond, a, b)

    def backward(self, g):
        xp = get_array_module(g)
        sa, sb = self.shapes
        return (unbroadcast(xp.where(self.cond, g, 0), sa) if self.needs_grad[0] else None,
                unbroadcast(xp.where(self.cond, 0, g), sb) if self.needs_grad[1] else None)

    def backward_graph(self, g):
        sa, sb = self.shapes
        return (unbroadcast(Where.apply(g, 0.0, cond=self.cond), sa) if self.needs_grad[0] else None,
                unbroadcast(Where.apply(0.0, g, cond=self.cond), sb) if self.needs_grad[1] else None)


class Minimum(Function):
    """y = min(a, b) elementwise; ties split the gradient in half (as ``Maximum``)."""

    def forward(self, a, b):
        self.a, self.b = a, b
        return get_array_module(a).minimum(a, b)

    def backward(self, g):
        a, b = self.a, self.b
        share_a = ((a < b) + 0.5 * (a == b)).astype(g.dtype)
        return (unbroadcast(g * share_a, a.shape) if self.needs_grad[0] else None,
                unbroadcast(g * (1 - share_a), b.shape) if self.needs_grad[1] else None)

    backward_graph = backward  # the shares are constant almost everywhere


def _full_index(index, axis):
    """Index arrays that pick ``x[..., index[...], ...]`` along ``axis`` for every position of ``index``."""
    xp = get_array_module(index)
    grids = list(xp.indices(index.shape, sparse=True))
    grids[axis] = index
    return tuple(grids)


class Gather(Function):
    """y[i][j][k] = x[i][index[i][j][k]][k] for axis 1 (PyTorch's gather; index has x's ndim).
    dL/dx: zeros with g added at the gathered positions (repeats add up)."""
    reads_inputs = False

    def __init__(self, axis, index):
        self.axis, self.index = axis, index

    def forward(self, x):
        self.shape = x.shape
        self.where = _full_index(self.index, self.axis)
        return x[self.where]

    def backward(self, g):
        return (scatter_add(g, self.shape, self.where),)

    def backward_graph(self, g):
        return (ScatterAdd.apply(g, shape=self.shape, index=self.where),)


class Expand(Function):
    """y = x broadcast to ``shape`` (no copy);  dL/dx = g summed over the broadcast axes."""
    reads_inputs = False

    def __init__(self, shape):
        self.new_shape = shape

    def forward(self, x):
        self.shape = x.shape
        return get_array_module(x).broadcast_to(x, self.new_shape)

    def backward(self, g):
        return (unbroadcast(g, self.shape),)

    backward_graph = backward  # linear, and written with operations Tensors have


class Norm(Function):
    """y = (sum_{axes} |x|^p)^(1/p) for p >= 1, or max |x| for p = inf.

    dL/dx = g * sign(x) |x|^(p-1) / y^(p-1)  (p = 1: g * sign(x); p = inf: g to the entries of
    largest |x|, ties sharing). Where y = 0 the gradient is 0, the subgradient PyTorch uses.
    """
    reads_output = True  # y, kept as computed (the output is it or a reshaped view of it)

    def __init__(self, p=2, axis=None, keepdims=False):
        self.p, self.axis, self.keepdims = p, axis, keepdims

    def forward(self, x):
        xp = get_array_module(x)
        self.x, self.axes = x, normalize_axes(self.axis, x.ndim)
        a = xp.abs(x)
        if self.p == float("inf"):
            y = a.max(axis=self.axes, keepdims=True)
        elif self.p == 1:
            y = a.sum(axis=self.axes, keepdims=True)
        elif self.p == 2:
            y = xp.sqrt((x * x).sum(axis=self.axes, keepdims=True))
        else:
            y = (a ** self.p).sum(axis=self.axes, keepdims=True) ** (1.0 / self.p)
        self.y_kept = y
        return y if self.keepdims else y.reshape(tuple(n for i, n in enumerate(x.shape) if i not in self.axes))

    def backward(self, g):
        xp = get_array_module(g)
        x, y = self.x, self.y_kept
        g = expand_reduced(g, x.shape, self.axes)
        safe = xp.where(y == 0, 1, y)
        if self.p == float("inf"):
            top = (xp.abs(x) == y) & (y != 0)
            share = top / xp.maximum(top.sum(axis=self.axes, keepdims=True), 1)
            return (g * xp.sign(x) * share.astype(g.dtype),)
        if self.p == 1:
            return (g * xp.sign(x),)
        if self.p == 2:
            return (g * x / safe * (y != 0),)
        return (g * xp.sign(x) * xp.abs(x) ** (self.p - 1) / safe ** (self.p - 1) * (y != 0),)

    def backward_graph(self, g):
        xp = get_array_module(self.x)
        x_arr, y_arr = self.x, self.y_kept
        g = expand_reduced_tensor(g, x_arr.shape, self.axes)
        # p = inf and p = 1 are piecewise linear: their factors are constant almost everywhere
        if self.p == float("inf"):
            top = (xp.abs(x_arr) == y_arr) & (y_arr != 0)
            share = top / xp.maximum(top.sum(axis=self.axes, keepdims=True), 1)
            return (g * (xp.sign(x_arr) * share).astype(g.dtype),)
        if self.p == 1:
            return (g * xp.sign(x_arr),)
        x = self.input_tensor(0, x_arr)
        out = y_arr if self.keepdims else y_arr.reshape(tuple(n for i, n in enumerate(x_arr.shape)
                                                             if i not in self.axes))
        y = self.output_tensor(out).reshape(y_arr.shape)
        nonzero = y_arr != 0
        safe = Where.apply(y, 1.0, cond=nonzero)  # y where y != 0, else 1 (the gradient is 0 there)
        if self.p == 2:
            return (g * x / safe * nonzero,)
        return (g * xp.sign(x_arr) * x.abs() ** (self.p - 1) / safe ** (self.p - 1) * nonzero,)
