"""Activations and (log-)softmax, written to stay finite for large |x|."""
from ..autograd import Function
from ..backend import get_array_module


class ReLU(Function):
    """y = max(x, 0);  dL/dx = g * [x > 0] = g * [y > 0]."""
    reads_inputs = False
    reads_output = True

    def forward(self, x):
        self.y = get_array_module(x).maximum(x, 0)
        return self.y

    def backward(self, g):
        return (g * (self.y > 0),)

    def backward_graph(self, g):
        # the mask is constant almost everywhere: the second derivative is 0 (as in PyTorch)
        return (g * (self.y > 0),)


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
