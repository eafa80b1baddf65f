"""Reductions: sum, mean and max over some axes."""
from ..autograd import Function
from ..backend import get_array_module


def normalize_axes(axis, ndim):
    """``axis`` (None, int or tuple) as a sorted tuple of non-negative axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < max(ndim, 1):
            raise ValueError(f"axis {a} is out of range for a tensor with {ndim} dimensions")
        out.append(a % max(ndim, 1))
    return tuple(sorted(set(out)))


def expand_reduced(g, shape, axes):
    """Broadcast a reduced gradient back to ``shape`` (reinserting the reduced axes)."""
    xp = get_array_module(g)
    kept_shape = tuple(1 if i in axes else n for i, n in enumerate(shape))
    return xp.broadcast_to(g.reshape(kept_shape), shape)


def expand_reduced_tensor(g, shape, axes):
    """:func:`expand_reduced` for a Tensor ``g`` (differentiable: a reshape and an expand)."""
    return g.reshape(tuple(1 if i in axes else n for i, n in enumerate(shape))).expand(shape)


class Sum(Function):
    """y = sum_{axes} x;  dL/dx = g broadcast back over the summed axes."""
    reads_inputs = False

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = normalize_axes(self.axis, x.ndim)
        return x.sum(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        return (expand_reduced(g, self.shape, self.axes).copy(),)

    def backward_graph(self, g):
        return (expand_reduced_tensor(g, self.shape, self.axes),)


class Mean(Function):
    """y = mean_{axes} x;  dL/dx = g / (number of averaged elements)."""
    reads_inputs = False

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.shape = x.shape
        self.axes = normalize_axes(self.axis, x.ndim)
        count = 1
        for a in self.axes:
            count *= x.shape[a]
        self.count = count
        return x.mean(axis=self.axes, keepdims=self.keepdims)

    def backward(self, g):
        return (expand_reduced(g / self.count, self.shape, self.axes).copy(),)

    def backward_graph(self, g):
        return (expand_reduced_tensor(g / self.count, self.shape, self.axes),)


class Max(Function):
    """y = max_{axes} x. The gradient goes to the maximal entries; ties share it equally
    (a valid subgradient, and symmetric in the tied entries)."""
    reads_output = True  # the maxima, kept as computed (the output is them or a reshaped view)

    def __init__(self, axis=None, keepdims=False):
        self.axis, self.keepdims = axis, keepdims

    def forward(self, x):
        self.x = x
        self.axes = normalize_axes(self.axis, x.ndim)
        self.y_kept = x.max(axis=self.axes, keepdims=True)
        return self.y_kept if self.keepdims else self.y_kept.reshape(
            tuple(n for i, n in enumerate(x.shape) if i not in self.axes))

    def backward(self, g):
        is_max = (self.x == self.y_kept).astype(g.dtype)
        is_max /= is_max.sum(axis=self.axes, keepdims=True)
        return (expand_reduced(g, self.x.shape, self.axes) * is_max,)

    def backward_graph(self, g):  # the shares of the maxima are constant almost everywhere
        is_max = (self.x == self.y_kept).astype(g.dtype)
        is_max /= is_max.sum(axis=self.axes, keepdims=True)
        return (expand_reduced_tensor(g, self.x.shape, self.axes) * is_max,)
