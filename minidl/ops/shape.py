"""Shape ops: reshape, transpose, indexing, concatenation. Gradients only move values back."""
from ..autograd import Function
from ..backend import get_array_module
from .arithmetic import unbroadcast


class Reshape(Function):
    """y = x viewed with a new shape;  dL/dx = g reshaped to x's shape."""
    reads_inputs = False

    def __init__(self, shape):
        self.new_shape = shape

    def forward(self, x):
        self.shape = x.shape
        try:
            return x.reshape(self.new_shape)
        except ValueError:
            raise ValueError(f"reshape: cannot reshape a tensor of shape {x.shape} "
                             f"({x.size} elements) into {self.new_shape}") from None

    def backward(self, g):
        return (g.reshape(self.shape),)

    backward_graph = backward  # linear, and written with operations Tensors have


class Transpose(Function):
    """y = x with axes permuted;  dL/dx = g with the inverse permutation."""
    reads_inputs = False

    def __init__(self, axes=None):
        self.axes = axes

    def forward(self, x):
        axes = tuple(reversed(range(x.ndim))) if self.axes is None else tuple(a % x.ndim for a in self.axes)
        if sorted(axes) != list(range(x.ndim)):
            raise ValueError(f"transpose: axes {self.axes} are not a permutation of a {x.ndim}-d tensor's axes")
        self.inverse = tuple(sorted(range(x.ndim), key=axes.__getitem__))
        return x.transpose(axes)

    def backward(self, g):
        return (g.transpose(self.inverse),)

    backward_graph = backward


def _is_advanced(index):
    """True when the index uses integer/boolean arrays (elements may repeat, so the
    backward pass must accumulate with a scatter-add rather than assign)."""
    parts = index if isinstance(index, tuple) else (index,)
    return any(not isinstance(p, (int, slice, type(None), type(Ellipsis))) for p in parts)


class GetItem(Function):
    """y = x[index];  dL/dx is zero except at the selected positions, which receive g
    (summed where advanced indexing selects a position more than once)."""
    reads_inputs = False

    def __init__(self, index):
        self.index = index

    def forward(self, x):
        self.shape, self.dtype = x.shape, x.dtype
        return x[self.index]

    def backward(self, g):
        return (scatter_add(g, self.shape, self.index),)

    def backward_graph(self, g):
        return (ScatterAdd.apply(g, shape=self.shape, index=self.index),)


def scatter_add(g, shape, index):
    """Zeros of ``shape`` with ``g`` added at ``index`` (repeated positions add up)."""
    xp = get_array_module(g)
    grad = xp.zeros(shape, dtype=g.dtype)
    if _is_advanced(index):
        if hasattr(xp.add, "at"):
            xp.add.at(grad, index, g)
        else:  # older CuPy
            import cupyx
            cupyx.scatter_add(grad, index, g)
    else:
        grad[index] = g
    return grad


class ScatterAdd(Function):
    """y = zeros(shape) with g added at ``index``: the backward of ``x[index]`` (and of gather)
    as an op, so that it can be differentiated again. Linear; its adjoint takes y[index]:
    dL/dg = h[index]."""
    reads_inputs = False

    def __init__(self, shape, index):
        self.shape, self.index = shape, index

    def forward(self, g):
        return scatter_add(g, self.shape, self.index)

    def backward(self, h):
        return (h[self.index],)

    def backward_graph(self, h):
        return (GetItem.apply(h, index=self.index),)


class SetItem(Function):
    """y = x with y[index] = v (v broadcast to the selected shape): what ``x[index] = v`` computes.

    dL/dx = g with zeros at the selected positions (their old values were overwritten);
    dL/dv = g[index] summed down to v's shape. With an advanced index that selects a
    position twice the last write wins, so ``index`` should select each position once
    (masks and basic slices always do).
    """
    reads_inputs = False

    def __init__(self, index):
        self.index = index

    def forward(self, x, v):
        self.v_shape = v.shape
        out = x.copy()
        out[self.index] = v
        return out

    def backward(self, g):
        gx = gv = None
        if self.needs_grad[0]:
            gx = g.copy()
            gx[self.index] = 0
        if self.needs_grad[1]:
            gv = unbroadcast(g[self.index], self.v_shape)
        return gx, gv


class Concatenate(Function):
    """y = concatenate(xs, axis);  each input's gradient is its slice of g."""
    reads_inputs = False

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        xp = get_array_module(*xs)
        self.sizes = [x.shape[self.axis] for x in xs]
        return xp.concatenate(xs, axis=self.axis)

    def backward(self, g):
        xp = get_array_module(g)
        bounds = list(xp.cumsum(xp.asarray(self.sizes))[:-1].tolist()) if len(self.sizes) > 1 else []
        return tuple(xp.split(g, bounds, axis=self.axis))

    def backward_graph(self, g):
        lead = (slice(None),) * (self.axis % g.ndim)
        starts = [sum(self.sizes[:i]) for i in range(len(self.sizes))]
        return tuple(g[lead + (slice(s, s + n),)] for s, n in zip(starts, self.sizes))


class Stack(Function):
    """y = stack(xs, axis);  each input's gradient is g taken at its position on ``axis``."""
    reads_inputs = False

    def __init__(self, axis=0):
        self.axis = axis

    def forward(self, *xs):
        self.n = len(xs)
        return get_array_module(*xs).stack(xs, axis=self.axis)

    def backward(self, g):
        xp = get_array_module(g)
        return tuple(xp.take(g, i, axis=self.axis) for i in range(self.n))

    def backward_graph(self, g):
        lead = (slice(None),) * (self.axis % g.ndim)
        return tuple(g[lead + (i,)] for i in range(self.n))
