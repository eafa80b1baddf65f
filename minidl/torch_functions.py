"""``md.*`` functions with PyTorch's names: tensor factories, and function forms of Tensor
methods (``md.clamp(x, 0, 1)`` is ``x.clamp(0, 1)``), so that ``torch.`` can be renamed ``md.``.

Floating-point factories default to float32 and integer ones (``arange`` of ints) to int64,
as in PyTorch.
"""
import numbers

import numpy

from . import backend
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


def eye(n, m=None, dtype=None, device="cpu", requires_grad=False):
    xp = backend.xp_for(device)
    return Tensor(xp.eye(n, m, dtype=backend.resolve_dtype(dtype) or float32), requires_grad=requires_grad)
