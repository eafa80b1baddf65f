"""The PyTorch-named surface of the Tensor: ``x.view``, ``x.permute``, ``x.max(dim)``,
``x.size()``, the in-place ``x.uniform_()``/``x.add_()`` family and the rest, gathered in
:class:`TensorMethods`, a mixin that :class:`minidl.tensor.Tensor` inherits.

``tensor.py`` holds what autograd needs (the array, the graph, arithmetic, indexing,
reshaping); everything here is a name PyTorch users expect, written on top of those and the
ops, so the core can be read without it. ``dim``/``keepdim`` (PyTorch) and
``axis``/``keepdims`` (NumPy) are both accepted. Deliberate difference: ``x.size`` without a
call is the element count (NumPy), ``x.size()`` the shape and ``x.size(d)`` one dimension.

Results are made with ``self._new(array)`` (a Tensor), so this module never imports
``tensor.py``: it sits below it.
"""
import numbers

import numpy

from . import backend
from . import version_counter
from .autograd import Variable, is_grad_enabled
from .ops import activation, reduce, select, shape, unary

int32, int64, bool_ = numpy.int32, numpy.int64, numpy.bool_


class TensorMethods:
    """PyTorch's Tensor methods, for :class:`minidl.tensor.Tensor` (which inherits them)."""

    @property
    def size(self):
        return _Size(self.array.shape)

    def numel(self):
        return self.array.size

    def dim(self):
        return self.array.ndim

    # reductions
    def sum(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return reduce.Sum.apply(self, axis=_dim(dim, axis), keepdims=_keep(keepdim, keepdims))

    def mean(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return reduce.Mean.apply(self, axis=_dim(dim, axis), keepdims=_keep(keepdim, keepdims))

    def max(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """``x.max()``: the largest value. ``x.max(d)`` / ``x.max(dim=d)``: (values, indices) along d,
        as PyTorch (the gradient goes to the index). ``x.max(axis=...)``: values only, as NumPy."""
        return self._extreme("max", dim, keepdim, axis, keepdims)

    def min(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """As :meth:`max`, for the smallest values."""
        return self._extreme("min", dim, keepdim, axis, keepdims)

    def _extreme(self, kind, dim, keepdim, axis, keepdims):
        if isinstance(dim, Variable):  # x.max(other): elementwise, as torch.max(x, other)
            return self.maximum(dim) if kind == "max" else self.minimum(dim)
        keep = _keep(keepdim, keepdims)
        if dim is None:
            src = self if kind == "max" else -self
            out = reduce.Max.apply(src, axis=axis, keepdims=keep)
            return out if kind == "max" else -out
        d = _single_dim(dim, self.ndim, kind)
        index = self.argmax(d, keepdim=True) if kind == "max" else self.argmin(d, keepdim=True)
        values = self.gather(d, index)
        if not keep:
            values, index = values.squeeze(d), index.squeeze(d)
        return MinMax(values, index)

    def argmax(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmax", _dim(dim, axis), _keep(keepdim, keepdims))

    def argmin(self, dim=None, keepdim=False, *, axis=None, keepdims=None):
        return self._arg("argmin", _dim(dim, axis), _keep(keepdim, keepdims))

    def _arg(self, kind, d, keep):
        xp = backend.get_array_module(self.array)
        if d is None:
            out = getattr(self.array.reshape(-1), kind)()
            return self._new(xp.asarray(out, dtype=int64).reshape((1,) * self.ndim if keep else ()))
        d = _single_dim(d, self.ndim, kind)
        out = getattr(self.array, kind)(axis=d)
        return self._new(xp.asarray(out, dtype=int64) if not keep else xp.expand_dims(out, d).astype(int64))

    def norm(self, p=2, dim=None, keepdim=False, *, axis=None, keepdims=None):
        """(sum |x|^p)^(1/p) over ``dim`` (all elements by default); p may be ``float('inf')``."""
        if isinstance(p, str) and p == "fro":
            p = 2
        if not isinstance(p, numbers.Real) or isinstance(p, bool) or not p >= 1:
            raise ValueError(f"norm: p must be a number >= 1 or inf, got {p!r}")
        return select.Norm.apply(self, p=float(p), axis=_dim(dim, axis), keepdims=_keep(keepdim, keepdims))

    # elementwise
    def clamp(self, min=None, max=None):
        """min(max(x, min), max); the bounds may be numbers or Tensors."""
        if isinstance(min, Variable) or isinstance(max, Variable):
            out = self if min is None else self.maximum(min)
            return out if max is None else out.minimum(max)
        if min is None and max is None:
            raise ValueError("clamp: at least one of min and max must be given")
        return unary.Clip.apply(self, lo=min, hi=max)

    clip = clamp

    def minimum(self, other):
        return select.Minimum.apply(self, other)

    def sign(self):
        """-1, 0 or 1; a constant of the graph (its gradient is zero almost everywhere)."""
        return self._new(backend.get_array_module(self.array).sign(self.array))

    def where(self, condition, other):
        """self where ``condition`` else ``other`` (PyTorch's ``x.where(cond, y)``)."""
        return where(condition, self, other)

    def masked_fill(self, mask, value):
        """self with ``value`` where ``mask`` is True."""
        return where(mask, value, self)

    def gather(self, dim, index):
        """out[i][j] = self[i][index[i][j]] for dim 1 (index is an integer Tensor of self's ndim)."""
        idx = index.array if isinstance(index, Variable) else backend.xp_for(self.device).asarray(index)
        if idx.dtype.kind not in "iu" or idx.ndim != self.ndim:
            raise ValueError(f"gather: index must be an integer tensor with {self.ndim} dimensions, "
                             f"got dtype {idx.dtype} and shape {idx.shape}")
        return select.Gather.apply(self, axis=_single_dim(dim, self.ndim, "gather"), index=idx)

    # comparisons (boolean tensors outside the graph)
    def eq(self, other):
        return self == other

    def ne(self, other):
        return self != other

    def lt(self, other):
        return self < other

    def le(self, other):
        return self <= other

    def gt(self, other):
        return self > other

    def ge(self, other):
        return self >= other

    def logical_not(self):
        return self._new(backend.get_array_module(self.array).logical_not(self.array))

    # shape
    def view(self, *shape_):
        return self.reshape(*shape_)

    def view_as(self, other):
        return self.reshape(other.shape)

    def reshape_as(self, other):
        return self.reshape(other.shape)

    def permute(self, *dims):
        dims = tuple(dims[0]) if len(dims) == 1 and isinstance(dims[0], (tuple, list)) else dims
        if len(dims) != self.ndim:
            raise ValueError(f"permute: expected {self.ndim} dims for shape {self.shape}, got {dims}")
        return shape.Transpose.apply(self, axes=dims)

    def unsqueeze(self, dim):
        if not -self.ndim - 1 <= dim <= self.ndim:
            raise ValueError(f"unsqueeze: dim must be in [{-self.ndim - 1}, {self.ndim}], got {dim}")
        d = dim % (self.ndim + 1)
        return self.reshape(self.shape[:d] + (1,) + self.shape[d:])

    def squeeze(self, dim=None):
        if dim is None:
            return self.reshape(tuple(n for n in self.shape if n != 1))
        d = _single_dim(dim, self.ndim, "squeeze")
        if self.shape[d] != 1:
            return self
        return self.reshape(self.shape[:d] + self.shape[d + 1:])

    def expand(self, *sizes):
        """This tensor broadcast to ``sizes`` (-1 keeps a dimension), without copying."""
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        lead = len(sizes) - self.ndim
        if lead < 0:
            raise ValueError(f"expand: {len(sizes)} sizes for a tensor of shape {self.shape}")
        new = tuple(self.shape[i - lead] if n == -1 and i >= lead else n for i, n in enumerate(sizes))
        for i, n in enumerate(self.shape):
            if n != 1 and new[i + lead] != n:
                raise ValueError(f"expand: cannot expand shape {self.shape} to {sizes}")
        return select.Expand.apply(self, shape=new)

    def expand_as(self, other):
        return self.expand(other.shape)

    def contiguous(self):
        return self

    def clone(self):
        return self * 1 if self.requires_grad else self._new(self.array.copy())

    # dtypes: floating casts stay in the graph; integer and boolean ones leave it
    def long(self):
        return self._new(self.array.astype(int64))

    def int(self):
        return self._new(self.array.astype(int32))

    def bool(self):
        return self._new(self.array.astype(bool_))

    def type_as(self, other):
        return self.astype(other.dtype) if other.dtype.kind == "f" else self._new(self.array.astype(other.dtype))

    # in place (PyTorch's names). They change ``data`` itself, so views see the change, and bump
    # the version counter so that a backward pass that still needs the old values refuses to run.
    def _inplace(self, op, value):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(f"{op}: in-place change of a tensor that requires grad; wrap it in "
                               "`with md.no_grad():` (for a leaf) or use the out-of-place form")
        xp = backend.get_array_module(self.array)
        value = value.array if isinstance(value, Variable) else value
        self.array[...] = xp.asarray(value, dtype=self.dtype) if self.dtype.kind != "f" or backend.is_array(value) \
            else value
        version_counter.bump(self.array)
        return self

    def zero_(self):
        return self._inplace("zero_", 0)

    def fill_(self, value):
        return self._inplace("fill_", value)

    def uniform_(self, a=0.0, b=1.0):
        """Fill with U(a, b) samples from the library generator (seeded by manual_seed)."""
        xp = backend.get_array_module(self.array)
        return self._inplace("uniform_", backend.rng(xp).uniform(a, b, self.shape).astype(self.dtype))

    def normal_(self, mean=0.0, std=1.0):
        xp = backend.get_array_module(self.array)
        return self._inplace("normal_", (backend.rng(xp).standard_normal(self.shape) * std + mean).astype(self.dtype))

    def copy_(self, src):
        src = src.array if isinstance(src, Variable) else src
        xp = backend.get_array_module(self.array)
        return self._inplace("copy_", xp.broadcast_to(backend.to_device(xp.asarray(src), self.device)
                                                      if backend.is_array(src) else xp.asarray(src), self.shape))

    def clamp_(self, min=None, max=None):
        xp = backend.get_array_module(self.array)
        return self._inplace("clamp_", xp.clip(self.array, min, max))

    def add_(self, other, alpha=1):
        other = other.array if isinstance(other, Variable) else other
        return self._inplace("add_", self.array + (other * alpha if alpha != 1 else other))

    def sub_(self, other, alpha=1):
        other = other.array if isinstance(other, Variable) else other
        return self._inplace("sub_", self.array - (other * alpha if alpha != 1 else other))

    def mul_(self, other):
        other = other.array if isinstance(other, Variable) else other
        return self._inplace("mul_", self.array * other)

    def div_(self, other):
        other = other.array if isinstance(other, Variable) else other
        return self._inplace("div_", self.array / other)

    def sign_(self):
        return self._inplace("sign_", backend.get_array_module(self.array).sign(self.array))

    # --- more of PyTorch's short names ---------------------------------------------------------
    def t(self):
        """The transpose of a matrix (at most 2 dimensions)."""
        if self.ndim > 2:
            raise ValueError(f"t(): expects at most 2 dimensions, got shape {self.shape}")
        return self.transpose() if self.ndim == 2 else self

    def pow(self, exponent):
        return self ** exponent

    def add(self, other, alpha=1):
        """self + alpha * other."""
        return self + (other * alpha if alpha != 1 else other)

    def sub(self, other, alpha=1):
        return self - (other * alpha if alpha != 1 else other)

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def neg(self):
        return -self

    def square(self):
        return self * self

    def matmul(self, other):
        return self @ other

    mm = matmul

    def softmax(self, dim):
        return activation.Softmax.apply(self, axis=_single_dim(dim, self.ndim, "softmax"))

    def log_softmax(self, dim):
        return activation.LogSoftmax.apply(self, axis=_single_dim(dim, self.ndim, "log_softmax"))

    def any(self, dim=None, keepdim=False):
        """True where any element (along ``dim``) is nonzero; a boolean tensor outside the graph."""
        return self._new(backend.get_array_module(self.array).asarray(
            self.array.any(axis=_dim(dim, None), keepdims=keepdim)))

    def all(self, dim=None, keepdim=False):
        return self._new(backend.get_array_module(self.array).asarray(
            self.array.all(axis=_dim(dim, None), keepdims=keepdim)))

    def masked_fill_(self, mask, value):
        """In place: ``value`` where ``mask`` is True."""
        mask = mask.array if isinstance(mask, Variable) else mask
        return self._inplace("masked_fill_", backend.get_array_module(self.array).where(mask, value, self.array))

    # boolean logic (elementwise, outside the graph): &, |, ^, ~ as in PyTorch
    def _logic(self, other, op, name):
        other = other.array if isinstance(other, Variable) else other
        if self.dtype.kind not in "biu":
            raise TypeError(f"{name}: expected a boolean or integer tensor, got dtype {self.dtype}")
        return self._new(backend.get_array_module(self.array).asarray(op(self.array, other)))

    __and__ = lambda self, o: self._logic(o, lambda a, b: a & b, "&")
    __or__ = lambda self, o: self._logic(o, lambda a, b: a | b, "|")
    __xor__ = lambda self, o: self._logic(o, lambda a, b: a ^ b, "^")
    __invert__ = lambda self: self._logic(None, lambda a, b: ~a, "~")
    logical_and = __and__
    logical_or = __or__

    def repeat(self, *sizes):
        """Tile: ``x.repeat(2, 1)`` stacks two copies along dim 0 (PyTorch's repeat, NumPy's
        tile); in the graph as concatenations, so the gradient sums over the copies."""
        sizes = tuple(sizes[0]) if len(sizes) == 1 and isinstance(sizes[0], (tuple, list)) else sizes
        if len(sizes) < self.ndim:
            raise ValueError(f"repeat: expected at least {self.ndim} sizes for shape {self.shape}, got {sizes}")
        out = self.reshape((1,) * (len(sizes) - self.ndim) + self.shape)
        for d, n in enumerate(sizes):
            if n != 1:
                out = shape.Concatenate.apply(*([out] * int(n)), axis=d)
        return out

    def split(self, split_size, dim=0):
        """Pieces of ``split_size`` along ``dim`` (the last may be smaller), or of the sizes in
        a list; each a view in the graph."""
        d = _single_dim(dim, self.ndim, "split")
        n = self.shape[d]
        sizes = [split_size] * (n // split_size) + ([n % split_size] if n % split_size else []) \
            if isinstance(split_size, numbers.Integral) else list(split_size)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} do not add up to {n} along dim {d}")
        out, start = [], 0
        for k in sizes:
            out.append(self[(slice(None),) * d + (slice(start, start + k),)])
            start += k
        return tuple(out)

    def chunk(self, chunks, dim=0):
        """``chunks`` pieces of equal size ceil(n / chunks) along ``dim`` (the last may be smaller)."""
        n = self.shape[_single_dim(dim, self.ndim, "chunk")]
        return self.split(max(1, -(-n // chunks)), dim)

    @property
    def is_cuda(self):
        return self.device == "cuda"

    # --- selection, sorting, statistics (PyTorch's names) --------------------------------------
    def nonzero(self, as_tuple=False):
        """Indices of the nonzero elements: an (n, ndim) int64 tensor, or with ``as_tuple`` one
        1-D int64 tensor per dimension (what ``x[...]`` takes)."""
        xp = backend.get_array_module(self.array)
        found = xp.nonzero(self.array.reshape(1) if self.ndim == 0 else self.array)
        if as_tuple:
            return tuple(self._new(i.astype(int64)) for i in found)
        return self._new(xp.stack(found, axis=1).astype(int64) if found else xp.zeros((0, 0), dtype=int64))

    def sort(self, dim=-1, descending=False, stable=True):
        """(values, indices) along ``dim``; ties keep their order (a stable sort). The values
        are gathered from self, so the gradient goes back to the sorted positions."""
        d = _single_dim(dim, self.ndim, "sort")
        index = self.argsort(d, descending)
        return MinMax(self.gather(d, index), index)

    def argsort(self, dim=-1, descending=False, stable=True):
        """Indices that sort self along ``dim`` (int64, stable: ties keep their order)."""
        d = _single_dim(dim, self.ndim, "argsort")
        xp = backend.get_array_module(self.array)
        a = self.array
        if descending:  # a stable descending order: ascending on the negated values (bool: on not a)
            a = ~a if a.dtype == bool_ else -a
        return self._new(xp.argsort(a, axis=d, kind="stable").astype(int64))

    def topk(self, k, dim=-1, largest=True, sorted=True):
        """(values, indices) of the ``k`` largest (``largest=False``: smallest) along ``dim``,
        in sorted order; differentiable through the values."""
        d = _single_dim(dim, self.ndim, "topk")
        if not isinstance(k, numbers.Integral) or not 0 <= k <= self.shape[d]:
            raise ValueError(f"topk: k must be an int in [0, {self.shape[d]}], got {k!r}")
        index = self.argsort(d, descending=largest)[(slice(None),) * d + (slice(0, int(k)),)]
        return MinMax(self.gather(d, index), index)

    def var(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        """sum (x - mean)^2 / (n - correction) over ``dim`` (all elements by default);
        correction 1 (``unbiased=True``, the default, as PyTorch) or 0 (``unbiased=False``)."""
        if unbiased is not None and correction is not None:
            raise TypeError("var: give unbiased or correction, not both")
        if correction is None:
            correction = 0 if unbiased is False else 1
        axes = _dim(dim, None)
        centred = self - self.mean(axes, keepdim=True)
        kept = self.array.sum(axis=axes, keepdims=True) if axes is not None else None
        n = self.size if kept is None else self.size // kept.size
        return (centred * centred).sum(axes, keepdim) / max(n - correction, 0)

    def std(self, dim=None, unbiased=None, keepdim=False, *, correction=None):
        """sqrt of :meth:`var` (same arguments)."""
        return self.var(dim, unbiased, keepdim, correction=correction).sqrt()

    def scatter_(self, dim, index, src=None, *, value=None, reduce=None):
        """self[i][index[i][j]] = src[i][j] for dim 1 (PyTorch's scatter_), in place; ``src``
        may be a tensor shaped like index or a number (also as ``value=``). Positions that
        ``index`` names twice get one of the values. ``reduce`` is not supported."""
        if reduce is not None:
            raise ValueError(f"scatter_: reduce={reduce!r} is not supported")
        src = value if src is None else src
        if src is None:
            raise TypeError("scatter_: give src (a tensor or a number) or value")
        idx = index.array if isinstance(index, Variable) else backend.xp_for(self.device).asarray(index)
        if idx.dtype.kind not in "iu" or idx.ndim != self.ndim:
            raise ValueError(f"scatter_: index must be an integer tensor with {self.ndim} dimensions, "
                             f"got dtype {idx.dtype} and shape {idx.shape}")
        d = _single_dim(dim, self.ndim, "scatter_")
        grids = list(backend.get_array_module(idx).indices(idx.shape, sparse=True))
        grids[d] = idx
        out = self.array.copy()
        values = src.array[tuple(slice(0, n) for n in idx.shape)] if isinstance(src, Variable) else src
        out[tuple(grids)] = values
        return self._inplace("scatter_", out)

    def scatter(self, dim, index, src=None, *, value=None):
        """The out-of-place :meth:`scatter_` (outside the graph)."""
        return self._new(self.array.copy()).scatter_(dim, index, src, value=value)

    # --- new tensors like this one ------------------------------------------------------------
    def _new_like(self, make, size, dtype, device, requires_grad):
        size = tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)
        dtype = backend.resolve_dtype(dtype) or self.dtype
        xp = backend.xp_for(self.device if device is None else str(device))
        return self._new(make(xp, size, dtype), requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None, device=None, requires_grad=False):
        """Zeros of ``size`` with this tensor's dtype and device (unless given)."""
        return self._new_like(lambda xp, s, t: xp.zeros(s, dtype=t), size, dtype, device, requires_grad)

    def new_ones(self, *size, dtype=None, device=None, requires_grad=False):
        return self._new_like(lambda xp, s, t: xp.ones(s, dtype=t), size, dtype, device, requires_grad)

    def new_full(self, size, fill_value, dtype=None, device=None, requires_grad=False):
        return self._new_like(lambda xp, s, t: xp.full(s, fill_value, dtype=t), (size,), dtype, device,
                              requires_grad)

    def new_empty(self, *size, dtype=None, device=None, requires_grad=False):
        """As :meth:`new_zeros` (minidl never hands out uninitialised memory)."""
        return self.new_zeros(*size, dtype=dtype, device=device, requires_grad=requires_grad)

    def new_tensor(self, data, dtype=None, device=None, requires_grad=False):
        """A copy of ``data`` with this tensor's dtype and device (unless given)."""
        data = data.array if isinstance(data, Variable) else data
        arr = backend.new_array(data, dtype=backend.resolve_dtype(dtype) or self.dtype,
                                device=self.device if device is None else str(device))
        return self._new(arr, requires_grad=requires_grad)



class _Size(int):
    """``x.size``: the element count (an int, as NumPy's ``size``) that is also callable as
    PyTorch's ``x.size()`` (the shape) and ``x.size(d)`` (one dimension)."""

    def __new__(cls, shape_):
        n = 1
        for d in shape_:
            n *= d
        self = super().__new__(cls, n)
        self.shape = tuple(shape_)
        return self

    def __call__(self, dim=None):
        if dim is None:
            return self.shape
        return self.shape[_single_dim(dim, len(self.shape), "size")]


class MinMax(tuple):
    """(values, indices) of ``x.max(dim)``, ``x.min(dim)``, ``x.topk(k)`` and ``x.sort()``,
    also as ``.values``/``.indices``."""

    values = property(lambda self: self[0])
    indices = property(lambda self: self[1])

    def __new__(cls, values, indices):
        return super().__new__(cls, (values, indices))


def _dim(dim, axis):
    """One of ``dim`` (PyTorch) and ``axis`` (NumPy); lists become tuples."""
    if dim is not None and axis is not None:
        raise TypeError(f"give dim or axis, not both (got dim={dim!r}, axis={axis!r})")
    d = axis if dim is None else dim
    return tuple(d) if isinstance(d, list) else d


def _keep(keepdim, keepdims):
    return bool(keepdim if keepdims is None else keepdims)


def _single_dim(dim, ndim, op):
    if not isinstance(dim, numbers.Integral) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {dim!r}")
    if not -max(ndim, 1) <= dim < max(ndim, 1):
        raise ValueError(f"{op}: dim {dim} is out of range for a tensor with {ndim} dimensions")
    return int(dim) % max(ndim, 1)


def where(condition, x=None, y=None):
    """x where ``condition`` else y, broadcast; numbers take the dtype of the tensor argument.
    ``where(condition)`` alone is ``condition.nonzero(as_tuple=True)``, as in PyTorch."""
    if x is None and y is None:
        if not isinstance(condition, Variable):
            raise TypeError(f"where(condition): condition must be a Tensor, got {type(condition).__name__}")
        return condition.nonzero(as_tuple=True)
    cond = condition.array if isinstance(condition, Variable) else condition
    ref = x if isinstance(x, Variable) else y
    if not isinstance(ref, Variable):
        raise TypeError("where: x or y must be a Tensor")
    xp = backend.get_array_module(ref.array)
    cond = backend.to_device(cond, ref.device) if backend.is_array(cond) else xp.asarray(cond)
    if cond.dtype != bool_:
        raise TypeError(f"where: condition must be a boolean tensor, got dtype {cond.dtype}")
    return select.Where.apply(x, y, cond=cond)
