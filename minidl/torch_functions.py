"""``md.*`` functions with PyTorch's names: tensor factories, and function forms of Tensor
methods (``md.clamp(x, 0, 1)`` is ``x.clamp(0, 1)``), so that ``torch.`` can be renamed ``md.``.

Floating-point factories default to float32 and integer ones (``arange`` of ints) to int64,
as in PyTorch.
"""
import numbers

import numpy

from . import backend
from . import functional
from .tensor import Tensor, as_tensor, concatenate, float32, tensor, where  # noqa: F401


def cat(tensors, dim=0):
    """Concatenate along an existing dimension (``torch.cat``)."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    return concatenate(tensors, dim=dim)


def clamp(x, min=None, max=None):
    return x.clamp(min, max)


clip = clamp


def sign(x):
    return x.sign()


def abs(x):
    return x.abs()


def exp(x):
    return x.exp()


def log(x):
    return x.log()


def sqrt(x):
    return x.sqrt()


def flatten(x, start_dim=0, end_dim=-1):
    return x.flatten(start_dim, end_dim)


def sum(x, dim=None, keepdim=False):
    return x.sum(dim, keepdim)


def mean(x, dim=None, keepdim=False):
    return x.mean(dim, keepdim)


def norm(x, p=2, dim=None, keepdim=False):
    return x.norm(p, dim, keepdim)


def max(x, dim=None, keepdim=False):
    """``md.max(x)``, ``md.max(x, dim)`` -> (values, indices), or ``md.max(a, b)`` elementwise."""
    if isinstance(dim, Tensor):
        return x.maximum(dim)
    return x.max(dim, keepdim)


def min(x, dim=None, keepdim=False):
    if isinstance(dim, Tensor):
        return x.minimum(dim)
    return x.min(dim, keepdim)


def maximum(a, b):
    return as_tensor(a).maximum(b) if isinstance(a, Tensor) else as_tensor(b).maximum(a)


def minimum(a, b):
    return as_tensor(a).minimum(b) if isinstance(a, Tensor) else as_tensor(b).minimum(a)


def argmax(x, dim=None, keepdim=False):
    return x.argmax(dim, keepdim)


def argmin(x, dim=None, keepdim=False):
    return x.argmin(dim, keepdim)


def permute(x, dims):
    return x.permute(dims)


def unsqueeze(x, dim):
    return x.unsqueeze(dim)


def squeeze(x, dim=None):
    return x.squeeze(dim)


def numel(x):
    return x.numel()


def topk(x, k, dim=-1, largest=True, sorted=True):
    return x.topk(k, dim, largest, sorted)


def sort(x, dim=-1, descending=False, stable=True):
    return x.sort(dim, descending)


def argsort(x, dim=-1, descending=False, stable=True):
    return x.argsort(dim, descending)


def std(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return x.std(dim, unbiased, keepdim, correction=correction)


def var(x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return x.var(dim, unbiased, keepdim, correction=correction)


def nonzero(x, as_tuple=False):
    return x.nonzero(as_tuple)


def softmax(x, dim):
    return functional.softmax(x, dim)


def log_softmax(x, dim):
    return functional.log_softmax(x, dim)


def sigmoid(x):
    return functional.sigmoid(x)


def tanh(x):
    return functional.tanh(x)


def relu(x):
    return functional.relu(x)


def matmul(a, b):
    return a @ b


mm = matmul


def pow(x, exponent):
    return x.pow(exponent)


def add(input, other, alpha=1):
    """input + alpha * other (``input`` a Tensor, as PyTorch requires)."""
    return input.add(other, alpha)


def sub(input, other, alpha=1):
    return input.sub(other, alpha)


def chunk(x, chunks, dim=0):
    return x.chunk(chunks, dim)


def split(x, split_size, dim=0):
    return x.split(split_size, dim)


def mul(input, other):
    return input.mul(other)


def div(input, other):
    return input.div(other)


def is_tensor(obj):
    return isinstance(obj, Tensor)


def allclose(a, b, rtol=1e-5, atol=1e-8):
    """|a - b| <= atol + rtol |b| everywhere (a Python bool)."""
    return bool(numpy.allclose(backend.to_numpy(a.array), backend.to_numpy(b.array), rtol=rtol, atol=atol))


def equal(a, b):
    """Same shape and the same values (a Python bool)."""
    return a.shape == b.shape and bool((backend.to_numpy(a.array) == backend.to_numpy(b.array)).all())


def from_numpy(array):
    """A Tensor sharing ``array``'s memory (no copy), keeping its dtype."""
    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    return Tensor(array)


# --- factories ------------------------------------------------------------------------------
def _like(t, dtype, device):
    return (backend.resolve_dtype(dtype) or t.dtype), (t.device if device is None else backend.normalize_device(device))


def ones_like(t, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return Tensor(backend.xp_for(device).ones(t.shape, dtype=dtype), requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    return Tensor(backend.xp_for(device).full(t.shape, fill_value, dtype=dtype), requires_grad=requires_grad)


def rand_like(t, dtype=None, device=None, requires_grad=False):
    """U[0, 1) samples shaped like ``t``, from the library generator."""
    dtype, device = _like(t, dtype, device)
    xp = backend.xp_for(device)
    return Tensor(backend.rng(xp).random(t.shape).astype(dtype), requires_grad=requires_grad)


def randn_like(t, dtype=None, device=None, requires_grad=False):
    dtype, device = _like(t, dtype, device)
    xp = backend.xp_for(device)
    return Tensor(backend.rng(xp).standard_normal(t.shape).astype(dtype), requires_grad=requires_grad)


def full(size, fill_value, dtype=None, device="cpu", requires_grad=False):
    size = (size,) if isinstance(size, numbers.Integral) else tuple(size)
    if dtype is None:
        dtype = numpy.int64 if isinstance(fill_value, numbers.Integral) and not isinstance(fill_value, bool) \
            else (numpy.bool_ if isinstance(fill_value, bool) else float32)
    xp = backend.xp_for(device)
    return Tensor(xp.full(size, fill_value, dtype=backend.resolve_dtype(dtype)), requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, device="cpu", requires_grad=False):
    """[start, end) in steps of ``step`` (``arange(n)`` is 0..n-1): int64 when all are ints."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be nonzero")
    ints = all(isinstance(v, numbers.Integral) for v in (start, end, step))
    dtype = backend.resolve_dtype(dtype) or numpy.dtype(numpy.int64 if ints else float32)
    xp = backend.xp_for(device)
    return Tensor(xp.arange(start, end, step).astype(dtype), requires_grad=requires_grad)


def linspace(start, end, steps, dtype=None, device="cpu", requires_grad=False):
    """``steps`` evenly spaced values from start to end inclusive."""
    if not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"linspace: steps must be an int >= 0, got {steps!r}")
    xp = backend.xp_for(device)
    return Tensor(xp.linspace(start, end, steps).astype(backend.resolve_dtype(dtype) or float32),
                  requires_grad=requires_grad)


def empty(*size, dtype=None, device="cpu", requires_grad=False):
    """As ``zeros`` (minidl never hands out uninitialised memory)."""
    size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else size
    return full(size, 0.0, dtype=dtype or float32, device=device, requires_grad=requires_grad)


def randint(low, high=None, size=None, dtype=None, device="cpu"):
    """Integers uniform in [low, high) (``randint(high, size)`` starts at 0), int64 by default,
    from the library generator."""
    if high is None or size is None and isinstance(high, (tuple, list)):
        low, high, size = 0, low, high
    if size is None:
        raise TypeError("randint: size is required")
    xp = backend.xp_for(device)
    out = backend.rng(xp).integers(low, high, size=tuple(size))
    return Tensor(out.astype(backend.resolve_dtype(dtype) or numpy.int64))


def randperm(n, dtype=None, device="cpu"):
    """A random permutation of 0..n-1 (int64), from the library generator."""
    xp = backend.xp_for(device)
    return Tensor(backend.rng(xp).permutation(n).astype(backend.resolve_dtype(dtype) or numpy.int64))


def eye(n, m=None, dtype=None, device="cpu", requires_grad=False):
    xp = backend.xp_for(device)
    return Tensor(xp.eye(n, m, dtype=backend.resolve_dtype(dtype) or float32), requires_grad=requires_grad)
