"""Max and average pooling as autograd Functions; array kernels live in ``minidl.kernels.pool``."""
from ..autograd import Function
from ..kernels import pool as kernels
from ..kernels import max_pool2d_gather


class MaxPool2d(Function):
    """y[n,c,i,j] = max_{p<kh, q<kw} xpad[n,c,i*sh+p,j*sw+q] (padding is -inf).

    The gradient of each output goes to the one input that was its maximum (the first in
    row-major window order on ties); overlapping windows add up.
    """
    reads_inputs = False

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        y, self.cache = kernels.max_pool2d_forward(x, self.kernel, self.stride, self.padding)
        return y

    def backward(self, g):
        return (kernels.max_pool2d_backward(g, self.cache),)

    def backward_graph(self, g):
        return (MaxPool2dGrad.apply(g, cache=self.cache),)


class AvgPool2d(Function):
    """y[n,c,i,j] = (1 / (kh kw)) sum_{p,q} xpad[n,c,i*sh+p,j*sw+q] (zero padding counted).

    dL/dx[n,c,a,b] = (1 / (kh kw)) * sum of g over the windows that contain (a, b).
    """
    reads_inputs = False

    def __init__(self, kernel, stride, padding):
        self.kernel, self.stride, self.padding = kernel, stride, padding

    def forward(self, x):
        y, self.cache = kernels.avg_pool2d_forward(x, self.kernel, self.stride, self.padding)
        return y

    def backward(self, g):
        return (kernels.avg_pool2d_backward(g, self.cache),)

    def backward_graph(self, g):
        return (AvgPool2dGrad.apply(g, cache=self.cache),)


class MaxPool2dGrad(Function):
    """gx = max pooling's backward as an op of g: each g[n,c,i,j] scattered to its window's
    maximum (the forward pass's ``cache``). Linear in g, with the gather as its adjoint:
    dL/dg = h at each window's maximum (:class:`MaxPool2dGather`), for h = dL/dgx. The maxima
    stay where they are under small changes of x, so there is no other term."""
    reads_inputs = False

    def __init__(self, cache):
        self.cache = cache

    def forward(self, g):
        return kernels.max_pool2d_backward(g, self.cache)

    def backward(self, h):
        return (max_pool2d_gather(h, self.cache),)

    def backward_graph(self, h):
        return (MaxPool2dGather.apply(h, cache=self.cache),)


class MaxPool2dGather(Function):
    """y[n,c,i,j] = h at the maximum of window (i, j) (``kernels.pool_gather``): the adjoint of
    :class:`MaxPool2dGrad`, whose scatter is its own backward."""
    reads_inputs = False

    def __init__(self, cache):
        self.cache = cache

    def forward(self, h):
        return max_pool2d_gather(h, self.cache)

    def backward(self, k):
        return (kernels.max_pool2d_backward(k, self.cache),)

    def backward_graph(self, k):
        return (MaxPool2dGrad.apply(k, cache=self.cache),)


class AvgPool2dGrad(Function):
    """gx = average pooling's backward as an op of g (every input of a window gets g / (kh kw)).
    Linear in g; its adjoint is average pooling itself: dL/dg = avg_pool2d(h)."""
    reads_inputs = False

    def __init__(self, cache):
        self.cache = cache

    def forward(self, g):
        return kernels.avg_pool2d_backward(g, self.cache)

    def backward(self, h):
        c = self.cache
        return (kernels.avg_pool2d_forward(h, c.kernel, c.stride, c.padding)[0],)

    def backward_graph(self, h):
        c = self.cache
        return (AvgPool2d.apply(h, kernel=c.kernel, stride=c.stride, padding=c.padding),)
