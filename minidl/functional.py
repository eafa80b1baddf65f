"""The functional API (``import minidl.functional as F``): stateless layers on Tensors.

Every function checks its arguments first, so that a wrong type, dtype or shape is reported
with the op's name, the expected and the actual value instead of surfacing as a NumPy error
deep inside a kernel. Each contract is checked once, where it belongs: here the Tensors
(types, floating dtypes, dimensions, bias shapes); in ``Function.apply`` (autograd) that all
inputs share one device; in the kernels the array shapes (channels, whether the window fits).
"""
import numbers

from . import backend
from .ops import activation, conv, loss, matmul, normalization, pool
from .tensor import Tensor, as_tensor


# --- argument checks ----------------------------------------------------------------------------
def _check_tensor(op, name, x, ndim=None, floating=True):
    if not isinstance(x, Tensor):
        raise TypeError(f"{op}: {name} must be a minidl Tensor, got {type(x).__name__}")
    if ndim is not None and x.ndim not in ((ndim,) if isinstance(ndim, int) else ndim):
        raise ValueError(f"{op}: {name} must have {ndim} dimensions, got shape {x.shape}")
    if floating and x.dtype.kind != "f":
        raise TypeError(f"{op}: {name} must be a floating-point tensor (float32 or float64), got dtype {x.dtype}")


def pair(value, name, op, minimum=0):
    """An int or a pair of ints as a pair, each at least ``minimum``."""
    if isinstance(value, numbers.Integral):
        value = (int(value), int(value))
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, numbers.Integral) for v in value):
        raise ValueError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
    if min(value) < minimum:
        raise ValueError(f"{op}: {name} must be >= {minimum}, got {value!r}")
    return tuple(int(v) for v in value)


# --- dense and convolution ------------------------------------------------------------------
def linear(x, weight, bias=None):
    """y = x W^T + b for x (..., in), W (out, in), b (out,) -> (..., out)."""
    _check_tensor("linear", "x", x)
    _check_tensor("linear", "weight", weight, ndim=2)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(f"linear: x has {x.shape[-1]} features (shape {x.shape}) but weight expects "
                         f"{weight.shape[1]} (weight shape {weight.shape})")
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"linear: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    lead = x.shape[:-1]
    x2 = x if x.ndim == 2 else x.reshape(-1, x.shape[-1])
    y = matmul.Linear.apply(x2, weight, bias)
    return y if x.ndim == 2 else y.reshape(lead + (weight.shape[0],))


def conv2d(x, weight, bias=None, stride=1, padding=0):
    """2-D cross-correlation (what deep learning calls convolution), NCHW:

    y[n,f,i,j] = sum_{c,p,q} xpad[n,c,i*sh+p, j*sw+q] weight[f,c,p,q] + bias[f]

    x (N, C, H, W), weight (F, C, kh, kw), bias (F,) -> (N, F, Ho, Wo) with
    Ho = (H + 2*ph - kh) // sh + 1, Wo likewise.
    """
    _check_tensor("conv2d", "x", x, ndim=4)
    _check_tensor("conv2d", "weight", weight, ndim=4)
    if bias is not None and bias.shape != (weight.shape[0],):
        raise ValueError(f"conv2d: bias must have shape ({weight.shape[0]},), got {bias.shape}")
    # Channels, window fit and the ranges of stride and padding are the kernel's contract.
    return conv.Conv2d.apply(x, weight, bias, stride=pair(stride, "stride", "conv2d"),
                             padding=pair(padding, "padding", "conv2d"))


def _pool_args(op, x, kernel_size, stride, padding):
    _check_tensor(op, "x", x, ndim=4)
    kernel = pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None else pair(stride, "stride", op)
    # Ranges, window fit and the padding limit are checked by the kernels.
    return dict(kernel=kernel, stride=stride, padding=pair(padding, "padding", op))


def max_pool2d(x, kernel_size, stride=None, padding=0):
    """y[n,c,i,j] = max over the (kh, kw) window at (i*sh, j*sw) of the -inf-padded input.
    ``stride`` defaults to ``kernel_size``; windows may overlap (stride < kernel)."""
    return pool.MaxPool2d.apply(x, **_pool_args("max_pool2d", x, kernel_size, stride, padding))


def avg_pool2d(x, kernel_size, stride=None, padding=0):
    """y[n,c,i,j] = mean over the (kh, kw) window at (i*sh, j*sw) of the zero-padded input
    (padding counts in the mean, as PyTorch's default count_include_pad=True)."""
    return pool.AvgPool2d.apply(x, **_pool_args("avg_pool2d", x, kernel_size, stride, padding))


# --- activations ----------------------------------------------------------------------------
def relu(x):
    """max(x, 0)."""
    return activation.ReLU.apply(x)


def sigmoid(x):
    """1 / (1 + exp(-x)), stable for large |x|."""
    return activation.Sigmoid.apply(x)


def tanh(x):
    return activation.Tanh.apply(x)


def softmax(x, axis=-1):
    """exp(x_i) / sum_j exp(x_j) along ``axis``."""
    return activation.Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    """x_i - log sum_j exp(x_j) along ``axis``, without overflow."""
    return activation.LogSoftmax.apply(x, axis=axis)


# --- losses ---------------------------------------------------------------------------------
def _check_reduction(op, reduction):
    if reduction not in loss.REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {loss.REDUCTIONS}, got {reduction!r}")


def cross_entropy(logits, target, reduction="mean"):
    """Softmax cross-entropy: -log softmax(logits)[n, target[n]], reduced over the batch.

    logits (N, C) float; target (N,) integer class indices in [0, C).
    """
    _check_tensor("cross_entropy", "logits", logits, ndim=2)
    _check_reduction("cross_entropy", reduction)
    xp = backend.get_array_module(logits.data)
    t = target.data if isinstance(target, Tensor) else target
    t = backend.to_device(t, logits.device) if backend.is_array(t) else xp.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != (logits.shape[0],):
        raise ValueError(f"cross_entropy: target must have shape ({logits.shape[0]},) to match logits "
                         f"{logits.shape}, got {t.shape}")
    if t.size and (int(t.min()) < 0 or int(t.max()) >= logits.shape[1]):
        raise ValueError(f"cross_entropy: target values must lie in [0, {logits.shape[1]}), "
                         f"got range [{int(t.min())}, {int(t.max())}]")
    return loss.CrossEntropy.apply(logits, target=t, reduction=reduction)


def mse_loss(input, target, reduction="mean"):
    """Mean (or sum) of (input - target)^2 over all elements."""
    _check_tensor("mse_loss", "input", input)
    _check_reduction("mse_loss", reduction)
    target = as_tensor(target, dtype=input.dtype, device=input.device)
    if input.shape != target.shape:
        raise ValueError(f"mse_loss: input shape {input.shape} and target shape {target.shape} differ")
    return loss.MSELoss.apply(input, target, reduction=reduction)


# --- regularisation and normalisation -------------------------------------------------------
def dropout(x, p=0.5, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p); identity when not training."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    xp = backend.get_array_module(x.data)
    return normalization.Dropout.apply(x, p=p, rng=backend.rng(xp))


def batch_norm(x, running_mean, running_var, weight=None, bias=None, training=False,
               momentum=0.1, eps=1e-5):
    """Normalise each channel (axis 1) of x (N, C) or (N, C, H, W):
    y = weight * (x - mean) / sqrt(var + eps) + bias.

    training=True uses the batch's statistics and updates ``running_mean``/``running_var``
    (arrays or Tensors, modified in place); training=False uses the running statistics.
    """
    _check_tensor("batch_norm", "x", x, ndim=(2, 4))
    c = x.shape[1]
    xp = backend.get_array_module(x.data)
    rm = running_mean.data if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.data if isinstance(running_var, Tensor) else running_var
    if not training and (rm is None or rv is None):
        raise ValueError("batch_norm: running_mean and running_var are required when training=False")
    for name, a in (("running_mean", rm), ("running_var", rv)):
        if a is not None and a.shape != (c,):
            raise ValueError(f"batch_norm: {name} must have shape ({c},) for x of shape {x.shape}, got {a.shape}")
    if training and x.size // c < 2:
        raise ValueError(f"batch_norm: training needs more than one value per channel, got x of shape {x.shape}")
    weight = weight if weight is not None else Tensor(xp.ones(c, dtype=x.dtype))
    bias = bias if bias is not None else Tensor(xp.zeros(c, dtype=x.dtype))
    return normalization.BatchNorm.apply(x, weight, bias, running_mean=rm, running_var=rv,
                                         training=training, momentum=momentum, eps=eps)
