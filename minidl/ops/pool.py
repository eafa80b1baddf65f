"""Max and average pooling as autograd Functions; array kernels live in ``minidl.kernels.pool``."""
from ..autograd import Function
from ..kernels import pool as kernels


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
