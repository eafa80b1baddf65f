"""Standard layers: thin Modules around ``minidl.functional``."""
import numpy

from .. import functional as F
from ..tensor import Tensor
from ..validation import check_number
from . import init as nn_init
from .module import Module, Parameter


def _empty(*shape):
    return Parameter(numpy.zeros(shape, dtype=numpy.float32))


class Linear(Module):
    """y = x W^T + b, W (out_features, in_features), b (out_features,).

    ``init`` (see :func:`minidl.nn.init.init_layer`): ``"fan_in_uniform"`` (default, as
    PyTorch: W and b uniform in +-1/sqrt(in_features)) or ``"he"`` (W He normal, b zero).
    """

    def __init__(self, in_features, out_features, bias=True, init="fan_in_uniform"):
        check_number("Linear: in_features", in_features, minimum=1, integer=True)
        check_number("Linear: out_features", out_features, minimum=1, integer=True)
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = _empty(out_features, in_features)
        self.bias = _empty(out_features) if bias else None
        nn_init.init_layer(self.weight, self.bias, init)

    def forward(self, x):
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Conv2d(Module):
    """2-D convolution (NCHW), weight (out, in, kh, kw), bias (out,).

    ``init``: ``"fan_in_uniform"`` (default, as PyTorch: weight and bias uniform in
    +-1/sqrt(in * kh * kw)) or ``"he"`` (weight He normal, bias zero).
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 init="fan_in_uniform"):
        check_number("Conv2d: in_channels", in_channels, minimum=1, integer=True)
        check_number("Conv2d: out_channels", out_channels, minimum=1, integer=True)
        super().__init__()
        kh, kw = F.pair(kernel_size, "kernel_size", "Conv2d", minimum=1)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride, self.padding = (kh, kw), stride, padding
        self.weight = _empty(out_channels, in_channels, kh, kw)
        self.bias = _empty(out_channels) if bias else None
        nn_init.init_layer(self.weight, self.bias, init)

    def forward(self, x):
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def extra_repr(self):
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}")


class MaxPool2d(Module):
    def __init__(self, kernel_size, stride=None, padding=0):
        super().__init__()
        self.kernel_size, self.stride, self.padding = kernel_size, stride, padding

    def forward(self, x):
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def extra_repr(self):
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class AvgPool2d(MaxPool2d):
    def forward(self, x):
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class GlobalAvgPool2d(Module):
    """(N, C, H, W) -> (N, C): the mean over each feature map."""

    def forward(self, x):
        return x.mean(axis=(2, 3))


class ReLU(Module):
    """max(x, 0). ``inplace=True`` is accepted for PyTorch code and computes out of place
    (the result is the same; minidl's ReLU keeps its output for backward, not its input)."""

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, x):
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x):
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x):
        return F.tanh(x)


class Identity(Module):
    def __init__(self, *args, **kwargs):  # PyTorch's Identity ignores its arguments
        super().__init__()

    def forward(self, x):
        return x


class LeakyReLU(Module):
    def __init__(self, negative_slope=0.01):
        super().__init__()
        self.negative_slope = negative_slope

    def forward(self, x):
        return F.leaky_relu(x, self.negative_slope)

    def extra_repr(self):
        return f"negative_slope={self.negative_slope}"


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...)."""

    def forward(self, x):
        return x.flatten(1)


class Dropout(Module):
    """Zero each element with probability p (``F.dropout``). ``inplace`` is accepted and
    computes out of place."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if not 0 <= p < 1:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = p

    def forward(self, x):
        return F.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


class BatchNorm2d(Module):
    """Per-channel normalisation with learnable scale (weight, ones) and shift (bias, zeros);
    running statistics are buffers updated in training mode and used in eval mode."""

    expected_ndim = 4
    _optional_state = ("num_batches_tracked",)  # checkpoints written before it existed

    def __init__(self, num_features, momentum=0.1, eps=1e-5):
        super().__init__()
        self.num_features, self.momentum, self.eps = num_features, momentum, eps
        self.weight = Parameter(numpy.ones(num_features, dtype=numpy.float32))
        self.bias = _empty(num_features)
        self.register_buffer("running_mean", numpy.zeros(num_features, dtype=numpy.float32))
        self.register_buffer("running_var", numpy.ones(num_features, dtype=numpy.float32))
        self.register_buffer("num_batches_tracked", numpy.zeros((), dtype=numpy.int64))  # as in PyTorch

    def forward(self, x):
        if not isinstance(x, Tensor) or x.ndim != self.expected_ndim or x.shape[1] != self.num_features:
            shape = x.shape if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"{type(self).__name__}({self.num_features}): expected a {self.expected_ndim}-d "
                             f"input with {self.num_features} channels, got {shape}")
        if self.training:
            self._buffers["num_batches_tracked"] += 1
        return F.batch_norm(x, self._buffers["running_mean"], self._buffers["running_var"], self.weight,
                            self.bias, training=self.training, momentum=self.momentum, eps=self.eps)

    def extra_repr(self):
        return f"{self.num_features}"


class BatchNorm1d(BatchNorm2d):
    expected_ndim = 2


class Dropout2d(Dropout):
    """Zero whole channels of an (N, C, H, W) input with probability p (``F.dropout2d``)."""

    def forward(self, x):
        return F.dropout2d(x, self.p, self.training)


class AdaptiveAvgPool2d(Module):
    """(N, C, H, W) -> (N, C, *output_size) by averaging (``F.adaptive_avg_pool2d``)."""

    def __init__(self, output_size):
        super().__init__()
        self.output_size = output_size

    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.output_size)

    def extra_repr(self):
        return f"output_size={self.output_size}"
