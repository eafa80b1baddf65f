"""Elementwise unary math: exp, log, sqrt, abs, clip."""
from ..autograd import Function
from ..backend import get_array_module


class Exp(Function):
    """y = e^x;  dL/dx = g * y."""
    reads_inputs = False
    reads_output = True

    def forward(self, x):
        self.y = get_array_module(x).exp(x)
        return self.y

    def backward(self, g):
        return (g * self.y,)

    def backward_graph(self, g):
        return (g * self.output_tensor(self.y),)


class Log(Function):
    """y = ln x;  dL/dx = g / x."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).log(x)

    def backward(self, g):
        return (g / self.x,)

    def backward_graph(self, g):
        return (g / self.input_tensor(0, self.x),)


class Sqrt(Function):
    """y = sqrt(x);  dL/dx = g / (2 y)."""
    reads_inputs = False
    reads_output = True

    def forward(self, x):
        self.y = get_array_module(x).sqrt(x)
        return self.y

    def backward(self, g):
        return (g / (2 * self.y),)

    def backward_graph(self, g):
        return (g / (2 * self.output_tensor(self.y)),)


class Abs(Function):
    """y = |x|;  dL/dx = g * sign(x) (0 at x = 0, the subgradient PyTorch uses)."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).abs(x)

    def backward(self, g):
        return (g * get_array_module(g).sign(self.x),)

    def backward_graph(self, g):  # sign(x) is constant almost everywhere
        return (g * get_array_module(self.x).sign(self.x),)


class Clip(Function):
    """y = min(max(x, lo), hi);  dL/dx = g where lo <= x <= hi, else 0."""

    def __init__(self, lo, hi):
        self.lo, self.hi = lo, hi

    def forward(self, x):
        xp = get_array_module(x)
        self.x = x
        return xp.clip(x, self.lo, self.hi)

    def backward(self, g):
        inside = True
        if self.lo is not None:
            inside = inside & (self.x >= self.lo)
        if self.hi is not None:
            inside = inside & (self.x <= self.hi)
        return (g * inside,)

    backward_graph = backward  # the mask is constant almost everywhere
