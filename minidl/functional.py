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
from .ops import bce, pad as pad_ops
from .tensor import Tensor, as_tensor, stack


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


def softmax(x, dim=None, *, axis=None):
    """exp(x_i) / sum_j exp(x_j) along ``dim`` (or ``axis``; the last by default)."""
    return activation.Softmax.apply(x, axis=_softmax_dim("softmax", x, dim, axis))


def log_softmax(x, dim=None, *, axis=None):
    """x_i - log sum_j exp(x_j) along ``dim`` (or ``axis``; the last by default), without overflow."""
    return activation.LogSoftmax.apply(x, axis=_softmax_dim("log_softmax", x, dim, axis))


def _softmax_dim(op, x, dim, axis):
    _check_tensor(op, "x", x)
    if dim is not None and axis is not None:
        raise TypeError(f"{op}: give dim or axis, not both (got dim={dim!r}, axis={axis!r})")
    d = -1 if dim is None and axis is None else (axis if dim is None else dim)
    if not isinstance(d, numbers.Integral) or not -max(x.ndim, 1) <= d < max(x.ndim, 1):
        raise ValueError(f"{op}: dim must be an int in [{-x.ndim}, {x.ndim}), got {d!r}")
    return int(d)


# --- losses ---------------------------------------------------------------------------------
def _check_reduction(op, reduction):
    if reduction not in loss.REDUCTIONS:
        raise ValueError(f"{op}: reduction must be one of {loss.REDUCTIONS}, got {reduction!r}")


def cross_entropy(logits, target, reduction="mean", label_smoothing=0.0):
    """Softmax cross-entropy: -log softmax(logits)[n, target[n]], reduced over the batch.

    logits (N, C) float; target (N,) integer class indices in [0, C). With label smoothing e
    the target is (1 - e) onehot + e / C:  loss_n = (1 - e) ce_n - (e / C) sum_c log softmax_c.
    """
    _check_tensor("cross_entropy", "logits", logits, ndim=2)
    _check_reduction("cross_entropy", reduction)
    if not 0 <= label_smoothing <= 1:
        raise ValueError(f"cross_entropy: label_smoothing must be in [0, 1], got {label_smoothing!r}")
    if label_smoothing:
        ce = cross_entropy(logits, target, reduction="none")
        smooth = -log_softmax(logits, dim=1).mean(dim=1)
        return _reduce((1 - label_smoothing) * ce + label_smoothing * smooth, reduction)
    xp = backend.get_array_module(logits.array)
    t = target.array if isinstance(target, Tensor) else target
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
    xp = backend.get_array_module(x.array)
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
    xp = backend.get_array_module(x.array)
    rm = running_mean.array if isinstance(running_mean, Tensor) else running_mean
    rv = running_var.array if isinstance(running_var, Tensor) else running_var
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


# --- PyTorch's other losses and helpers -------------------------------------------------------
def _reduce(losses, reduction):
    if reduction == "mean":
        return losses.mean()
    return losses.sum() if reduction == "sum" else losses


def _class_targets(op, target, n, classes, device, ignore_index=None):
    xp = backend.xp_for(device)
    t = target.array if isinstance(target, Tensor) else target
    t = backend.to_device(t, device) if backend.is_array(t) else xp.asarray(t)
    if t.dtype.kind not in "iu":
        raise TypeError(f"{op}: target must hold integer class indices, got dtype {t.dtype}")
    if t.shape != (n,):
        raise ValueError(f"{op}: target must have shape ({n},), got {t.shape}")
    valid = t if ignore_index is None else t[t != ignore_index]
    if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= classes):
        raise ValueError(f"{op}: target values must lie in [0, {classes}), "
                         f"got range [{int(valid.min())}, {int(valid.max())}]")
    return t


def nll_loss(input, target, weight=None, reduction="mean", ignore_index=-100):
    """Negative log-likelihood of log-probabilities ``input`` (N, C) (e.g. from log_softmax):
    loss_n = -w[t_n] input[n, t_n]; the mean divides by sum_n w[t_n]. Targets equal to
    ``ignore_index`` count for nothing."""
    _check_tensor("nll_loss", "input", input, ndim=2)
    _check_reduction("nll_loss", reduction)
    n, c = input.shape
    t = _class_targets("nll_loss", target, n, c, input.device, ignore_index)
    xp = backend.get_array_module(input.array)
    keep = t != ignore_index
    safe = xp.where(keep, t, 0).astype(xp.int64)
    w = keep.astype(input.dtype)
    if weight is not None:
        wd = weight.array if isinstance(weight, Tensor) else xp.asarray(weight, dtype=input.dtype)
        if wd.shape != (c,):
            raise ValueError(f"nll_loss: weight must have shape ({c},), got {wd.shape}")
        w = w * wd[safe]
    losses = -input.gather(1, Tensor(safe[:, None])).reshape(n) * Tensor(w)
    if reduction == "mean":
        return losses.sum() / Tensor(xp.asarray(w.sum(), dtype=input.dtype))
    return _reduce(losses, reduction)


def binary_cross_entropy(input, target, reduction="mean"):
    """-[y log p + (1 - y) log(1 - p)] for probabilities p = ``input`` in [0, 1]; each log is
    clamped at -100, as PyTorch does, so p = 0 or 1 gives a finite loss."""
    _check_tensor("binary_cross_entropy", "input", input)
    _check_reduction("binary_cross_entropy", reduction)
    target = as_tensor(target, dtype=input.dtype, device=input.device)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy: target shape {target.shape} differs from input shape {input.shape}")
    bad = (input.array < 0) | (input.array > 1) | (input.array != input.array)
    if bool(bad.any()):
        raise ValueError("binary_cross_entropy: input must hold probabilities in [0, 1] (got values "
                         "outside, or NaN); use binary_cross_entropy_with_logits for logits")
    log_p, log_q = _clamped_log(input), _clamped_log(1 - input)
    return _reduce(-(target * log_p + (1 - target) * log_q), reduction)


def _clamped_log(p):
    """max(log p, -100), with log 0 never evaluated (its gradient would be 0 * inf = NaN)."""
    positive = p > 0
    return p.where(positive, 1.0).log().clamp(min=-100.0).where(positive, -100.0)


def binary_cross_entropy_with_logits(input, target, reduction="mean"):
    """binary_cross_entropy(sigmoid(input), target), computed stably from the logits."""
    _check_tensor("binary_cross_entropy_with_logits", "input", input)
    _check_reduction("binary_cross_entropy_with_logits", reduction)
    target = as_tensor(target, dtype=input.dtype, device=input.device)
    if target.shape != input.shape:
        raise ValueError(f"binary_cross_entropy_with_logits: target shape {target.shape} differs from "
                         f"input shape {input.shape}")
    return _reduce(bce.BCEWithLogits.apply(input, target), reduction)


def kl_div(input, target, reduction="mean", log_target=False):
    """Pointwise KL divergence with ``input`` = log q:  target * (log target - input), 0 where
    target = 0 (``log_target=True``: exp(target) * (target - input)). reduction "batchmean"
    divides the sum by the batch size, the mathematically meaningful KL(target || q)."""
    _check_tensor("kl_div", "input", input)
    if reduction not in loss.REDUCTIONS + ("batchmean",):
        raise ValueError(f"kl_div: reduction must be one of {loss.REDUCTIONS + ('batchmean',)}, got {reduction!r}")
    target = as_tensor(target, dtype=input.dtype, device=input.device)
    if log_target:
        pointwise = target.exp() * (target - input)
    else:
        positive = target > 0
        safe = target.where(positive, 1.0)  # log 1 = 0 where target = 0, and no 0 * -inf
        pointwise = target * (safe.log() - input)
    if reduction == "batchmean":
        return pointwise.sum() / input.shape[0]
    return _reduce(pointwise, reduction)


def pad(x, pad, mode="constant", value=0.0):
    """Pad the last len(pad) // 2 dimensions: ``pad = (left, right, top, bottom, ...)`` starts
    with the last dimension, as in PyTorch. Only ``mode="constant"``."""
    _check_tensor("pad", "x", x, floating=False)
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is implemented, got {mode!r}")
    pad = tuple(pad)
    if len(pad) % 2 or len(pad) // 2 > x.ndim or not all(isinstance(p, numbers.Integral) and p >= 0 for p in pad):
        raise ValueError(f"pad: expected an even number (at most {2 * x.ndim}) of ints >= 0, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (int(pad[2 * i]), int(pad[2 * i + 1]))
    return pad_ops.Pad.apply(x, widths=tuple(widths), value=value)


def one_hot(tensor, num_classes=-1):
    """(...,) integer classes -> (..., num_classes) int64 with a 1 at each class (no gradient)."""
    t = tensor.array if isinstance(tensor, Tensor) else backend.xp_for("cpu").asarray(tensor)
    if t.dtype.kind not in "iu":
        raise TypeError(f"one_hot: tensor must hold integer classes, got dtype {t.dtype}")
    xp = backend.get_array_module(t)
    if num_classes == -1:
        num_classes = int(t.max()) + 1 if t.size else 0
    if t.size and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(f"one_hot: classes must lie in [0, {num_classes}), got range [{int(t.min())}, {int(t.max())}]")
    return Tensor((t[..., None] == xp.arange(num_classes)).astype(xp.int64))


def leaky_relu(x, negative_slope=0.01):
    """x for x > 0, negative_slope * x otherwise."""
    _check_tensor("leaky_relu", "x", x)
    return x.where(x > 0, x * negative_slope)


def dropout2d(x, p=0.5, training=True):
    """Zero each whole channel x[n, c] with probability p and scale the rest by 1/(1-p), for x
    (N, C, H, W); identity when not training. The mask is a constant, so the gradient is
    g * mask / (1 - p)."""
    _check_tensor("dropout2d", "x", x, ndim=4)
    if not 0 <= p < 1:
        raise ValueError(f"dropout2d: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    xp = backend.get_array_module(x.array)
    keep = backend.rng(xp).random(x.shape[:2] + (1, 1)) >= p
    return x * Tensor((keep / (1 - p)).astype(x.dtype))


def adaptive_avg_pool2d(x, output_size):
    """(N, C, H, W) -> (N, C, oh, ow): output cell (i, j) is the mean of the input rows
    floor(i H / oh) .. ceil((i + 1) H / oh) - 1 and the columns likewise (PyTorch's windows,
    which overlap when H is not a multiple of oh). ``output_size`` is an int, a pair, or a
    pair with None for "keep that dimension"."""
    _check_tensor("adaptive_avg_pool2d", "x", x, ndim=4)
    size = (output_size, output_size) if isinstance(output_size, numbers.Integral) or output_size is None \
        else tuple(output_size)
    if len(size) != 2:
        raise ValueError(f"adaptive_avg_pool2d: output_size must be an int or a pair, got {output_size!r}")
    oh, ow = (x.shape[2 + i] if s is None else s for i, s in enumerate(size))
    oh, ow = pair((oh, ow), "output_size", "adaptive_avg_pool2d", minimum=1)
    h, w = x.shape[2:]
    if h % oh == 0 and w % ow == 0:  # equal windows: one reshape and a mean
        return x.reshape(x.shape[0], x.shape[1], oh, h // oh, ow, w // ow).mean(dim=(3, 5))

    def windows(n, out):
        return [(i * n // out, -(-(i + 1) * n // out)) for i in range(out)]
    rows = [stack([x[:, :, r0:r1, c0:c1].mean(dim=(2, 3)) for c0, c1 in windows(w, ow)], dim=-1)
            for r0, r1 in windows(h, oh)]
    return stack(rows, dim=-2)


def interpolate(x, size=None, scale_factor=None, mode="nearest", align_corners=None):
    """Resize the spatial dimensions of x (N, C, H, W) to ``size`` (an int or (oh, ow)) or by
    ``scale_factor`` (oh = floor(H * s)), as PyTorch's ``F.interpolate``.

    * ``nearest``: out[i] = in[floor(i * H / oh)] (with a scale factor: floor(i / s)).
    * ``bilinear``: out[i] = (1 - l) in[i0] + l in[i0 + 1] along each axis, from the source
      coordinate src = (i + 0.5) * H / oh - 0.5 clamped at 0 (``align_corners=True``:
      src = i * (H - 1) / (oh - 1)), i0 = floor(src), l = src - i0.

    Both are gathers with constant weights, so the gradient scatters g back through them.
    """
    _check_tensor("interpolate", "x", x, ndim=4)
    if mode not in ("nearest", "bilinear"):
        raise ValueError(f"interpolate: mode must be 'nearest' or 'bilinear', got {mode!r}")
    if mode == "nearest" and align_corners is not None:
        raise ValueError("interpolate: align_corners applies only to mode='bilinear'")
    if (size is None) == (scale_factor is None):
        raise ValueError("interpolate: give exactly one of size and scale_factor")
    h, w = x.shape[2:]
    if size is not None:
        out = pair(size, "size", "interpolate", minimum=1)
        scales = (h / out[0], w / out[1])
    else:
        sf = (scale_factor, scale_factor) if isinstance(scale_factor, numbers.Real) else tuple(scale_factor)
        if len(sf) != 2 or not all(isinstance(s, numbers.Real) and s > 0 for s in sf):
            raise ValueError(f"interpolate: scale_factor must be a positive number or a pair, got {scale_factor!r}")
        out = (int(h * sf[0]), int(w * sf[1]))
        if min(out) < 1:
            raise ValueError(f"interpolate: scale_factor {scale_factor!r} gives an empty output from {(h, w)}")
        scales = (1 / sf[0], 1 / sf[1])
    xp = backend.get_array_module(x.array)
    if mode == "nearest":
        iy = xp.minimum(xp.floor(xp.arange(out[0]) * scales[0]).astype(xp.int64), h - 1)
        ix = xp.minimum(xp.floor(xp.arange(out[1]) * scales[1]).astype(xp.int64), w - 1)
        return x[:, :, iy[:, None], ix[None, :]]

    def axis(n_in, n_out, scale):
        i = xp.arange(n_out, dtype=xp.float64)
        if align_corners:
            src = i * ((n_in - 1) / (n_out - 1) if n_out > 1 else 0.0)
        else:
            src = xp.maximum((i + 0.5) * scale - 0.5, 0.0)
        i0 = xp.minimum(xp.floor(src).astype(xp.int64), n_in - 1)
        i1 = xp.minimum(i0 + 1, n_in - 1)
        return i0, i1, (src - i0).astype(x.dtype)
    y0, y1, ly = axis(h, out[0], scales[0])
    x0, x1, lx = axis(w, out[1], scales[1])
    rows = x[:, :, y0, :] * Tensor((1 - ly)[:, None]) + x[:, :, y1, :] * Tensor(ly[:, None])
    return rows[:, :, :, x0] * Tensor(1 - lx) + rows[:, :, :, x1] * Tensor(lx)
