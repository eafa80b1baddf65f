"""Device and dtype changes are ops too, so that gradients flow through them."""
from .. import backend
from ..autograd import Function


class Transfer(Function):
    """y = x on another device;  dL/dx = g moved back."""
    reads_inputs = False

    def __init__(self, device):
        self.device = device

    def forward(self, x):
        self.source = backend.device_of(x)
        return backend.to_device(x, self.device)

    def backward(self, g):
        return (backend.to_device(g, self.source),)

    def backward_graph(self, g):
        return (g.to(self.source),)


class Cast(Function):
    """y = x converted to ``dtype``;  dL/dx = g converted back."""
    reads_inputs = False

    def __init__(self, dtype):
        self.dtype = dtype

    def forward(self, x):
        self.source = x.dtype
        return x.astype(self.dtype)

    def backward(self, g):
        return (g.astype(self.source),)

    backward_graph = backward  # linear, and Tensors have astype
