"""The Tensor: an array (NumPy or CuPy) plus what autograd needs to differentiate through it."""
import numbers

import numpy

from . import backend
from . import version_counter
from .autograd import Variable, is_grad_enabled, run_backward
from .ops import activation, arithmetic, matmul, reduce, select, shape, unary
from .ops.conversion import Cast, Transfer

float32, float64, int32, int64, bool_ = numpy.float32, numpy.float64, numpy.int32, numpy.int64, numpy.bool_


class Tensor(Variable):
    """An n-dimensional array that can record the ops applied to it.

    ``Tensor(data, requires_grad=False)`` wraps a NumPy or CuPy array without copying.
    ``data`` is that array, ``grad`` the accumulated gradient (a Tensor) of a leaf after
    ``backward``, and ``_ctx`` the Function that produced it (None for leaves); these come
    from :class:`minidl.autograd.Variable`, the graph node. Tensor adds the array API.
    """

    __array_priority__ = 1000  # so that ``ndarray + Tensor`` defers to Tensor.__radd__

    def _new(self, data, requires_grad=False):
        return Tensor(data, requires_grad=requires_grad)

    # --- basic properties (shape, dtype and device come from Variable) -----------------------
    ndim = property(lambda self: self.array.ndim)
    is_leaf = property(lambda self: self._ctx is None)

    def __len__(self):
        return len(self.array)

    def __repr__(self):
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = ", device='cuda'" if self.device == "cuda" else ""
        body = numpy.array2string(self.numpy(), precision=4, separator=", ", prefix="tensor(")
        return f"tensor({body}{dev}{grad})"

    # --- autograd -----------------------------------------------------------------------
    def backward(self, gradient=None, retain_graph=None, create_graph=False):
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad`` (PyTorch's signature).

        ``gradient`` is dL/d(self) (a Tensor or array); it may be omitted only for a one-element
        tensor (then 1). ``create_graph=True``: the accumulated gradients are Tensors with a
        graph, differentiable again (``minidl.autograd.grad``). ``retain_graph`` is accepted for
        PyTorch's signature; a minidl graph can always be walked again.
        """
        if not self.requires_grad:
            raise RuntimeError("backward(): this tensor does not require grad and has no graph "
                               "(did you create it under no_grad, or forget requires_grad=True?)")
        run_backward(self, gradient, create_graph=create_graph)

    def detach(self):
        """The same data, cut from the graph."""
        return Tensor(self.array)

    def zero_grad(self):
        self.grad = None

    # --- conversion ---------------------------------------------------------------------
    def numpy(self):
        """A host NumPy array (copied from the GPU when needed)."""
        return backend.to_numpy(self.array)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def item(self):
        if self.size != 1:
            raise ValueError(f"item(): only one-element tensors can be converted, this one has shape {self.shape}")
        return self.array.reshape(()).item()

    def tolist(self):
        return self.numpy().tolist()

    def to(self, device):
        """This tensor on ``device`` ('cpu' or 'cuda'); itself when already there."""
        device = backend.normalize_device(device)
        if device == self.device:
            return self
        return Transfer.apply(self, device=device)

    def cpu(self):
        return self.to("cpu")

    def cuda(self):
        return self.to("cuda")

    def astype(self, dtype):
        return Cast.apply(self, dtype=numpy.dtype(dtype))

    def float(self):
        return self.astype(float32)

    def double(self):
        return self.astype(float64)

    # --- arithmetic ---------------------------------------------------------------------
    def __add__(self, other):
        return arithmetic.Add.apply(self, other)

    def __radd__(self, other):
        return arithmetic.Add.apply(other, self)

    def __sub__(self, other):
        return arithmetic.Sub.apply(self, other)

    def __rsub__(self, other):
        return arithmetic.Sub.apply(other, self)

    def __mul__(self, other):
        return arithmetic.Mul.apply(self, other)

    def __rmul__(self, other):
        return arithmetic.Mul.apply(other, self)

    def __truediv__(self, other):
        return arithmetic.Div.apply(self, other)

    def __rtruediv__(self, other):
        return arithmetic.Div.apply(other, self)

    def __neg__(self):
        return arithmetic.Neg.apply(self)

    def __pow__(self, exponent):
        if not isinstance(exponent, numbers.Real):
            raise TypeError(f"**: the exponent must be a Python number, got {type(exponent).__name__}")
        return arithmetic.Pow.apply(self, exponent=exponent)

    def __matmul__(self, other):
        return matmul.MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return matmul.MatMul.apply(other, self)

    # Comparisons give boolean tensors outside the graph (they have no gradient).
    def _compare(self, other, op):
        other = other.array if isinstance(other, Tensor) else other
        return Tensor(backend.get_array_module(self.array).asarray(op(self.array, other)))

    __eq__ = lambda self, o: self._compare(o, lambda a, b: a == b)
    __ne__ = lambda self, o: self._compare(o, lambda a, b: a != b)
    __lt__ = lambda self, o: self._compare(o, lambda a, b: a < b)
    __le__ = lambda self, o: self._compare(o, lambda a, b: a <= b)
    __gt__ = lambda self, o: self._compare(o, lambda a, b: a > b)
    __ge__ = lambda self, o: self._compare(o, lambda a, b: a >= b)
    __hash__ = object.__hash__

    def __getitem__(self, index):
        index = _unwrap_index(index)
        return shape.GetItem.apply(self, index=index)

    # --- math ---------------------------------------------------------------------------
    def exp(self):
        return unary.Exp.apply(self)

    def log(self):
        return unary.Log.apply(self)

    def sqrt(self):
        return unary.Sqrt.apply(self)

    def abs(self):
        return unary.Abs.apply(self)

    def clip(self, min=None, max=None):
        return unary.Clip.apply(self, lo=min, hi=max)

    def maximum(self, other):
        return arithmetic.Maximum.apply(self, other)

    def relu(self):
        return activation.ReLU.apply(self)

    def sigmoid(self):
        return activation.Sigmoid.apply(self)

    def tanh(self):
        return activation.Tanh.apply(self)

    # --- shape --------------------------------------------------------------------------
    def reshape(self, *shape_):
        new = tuple(shape_[0]) if len(shape_) == 1 and isinstance(shape_[0], (tuple, list)) else shape_
        return shape.Reshape.apply(self, shape=new)

    def transpose(self, *axes):
        """``transpose()`` reverses the axes; ``transpose(i, j)`` swaps axes i and j (PyTorch style,
        for any ndim); ``transpose(perm)`` or ``transpose(*perm)`` permutes them (NumPy style)."""
        packed = len(axes) == 1 and isinstance(axes[0], (tuple, list))
        if packed:
            axes = tuple(axes[0])
        if len(axes) == 2 and (self.ndim != 2 or not packed):  # PyTorch style: swap two axes
            perm = list(range(self.ndim))
            perm[axes[0]], perm[axes[1]] = perm[axes[1]], perm[axes[0]]
            axes = tuple(perm)
        return shape.Transpose.apply(self, axes=axes or None)

    @property
    def T(self):
        return self.transpose()

    def flatten(self, start_dim=0, end_dim=-1):
        """Merge axes start_dim..end_dim into one (``flatten(1)`` keeps the batch axis)."""
        nd = self.ndim
        s, e = start_dim % max(nd, 1), end_dim % max(nd, 1)
        merged = 1
        for n in self.shape[s:e + 1]:
            merged *= n
        return self.reshape(self.shape[:s] + (merged,) + self.shape[e + 1:])

    # --- PyTorch-familiar API ---------------------------------------------------------------
    # ``dim``/``keepdim`` (PyTorch) and ``axis``/``keepdims`` (NumPy) are both accepted.
    # Deliberate difference: ``x.size`` without a call is the element count (NumPy), ``x.size()``
    # the shape and ``x.size(d)`` one dimension (PyTorch).

    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, flag):
        flag = bool(flag)
        if flag and self.array.dtype.kind != "f":
            raise TypeError(f"requires_grad: only floating-point tensors can require gradients, "
                            f"got dtype {self.array.dtype}")
        if not flag and self._ctx is not None:
            raise RuntimeError("requires_grad: only a leaf can stop requiring grad; use .detach() "
                               "for a non-leaf")
        self._requires_grad = flag

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def size(self):
        return _Size(self.array.shape)

    def numel(self):
        return self.array.size

    def dim(self):
        return self.array.ndim

    @property
    def _version(self):
        return version_counter.stamp(self.array)[1]

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
        if isinstance(dim, Tensor):  # x.max(other): elementwise, as torch.max(x, other)
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
            return Tensor(xp.asarray(out, dtype=int64).reshape((1,) * self.ndim if keep else ()))
        d = _single_dim(d, self.ndim, kind)
        out = getattr(self.array, kind)(axis=d)
        return Tensor(xp.asarray(out, dtype=int64) if not keep else xp.expand_dims(out, d).astype(int64))

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
        if isinstance(min, Tensor) or isinstance(max, Tensor):
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
        return Tensor(backend.get_array_module(self.array).sign(self.array))

    def where(self, condition, other):
        """self where ``condition`` else ``other`` (PyTorch's ``x.where(cond, y)``)."""
        return where(condition, self, other)

    def masked_fill(self, mask, value):
        """self with ``value`` where ``mask`` is True."""
        return where(mask, value, self)

    def gather(self, dim, index):
        """out[i][j] = self[i][index[i][j]] for dim 1 (index is an integer Tensor of self's ndim)."""
        idx = index.array if isinstance(index, Tensor) else backend.xp_for(self.device).asarray(index)
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
        return Tensor(backend.get_array_module(self.array).logical_not(self.array))

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
        return self * 1 if self.requires_grad else Tensor(self.array.copy())

    # dtypes: floating casts stay in the graph; integer and boolean ones leave it
    def long(self):
        return Tensor(self.array.astype(int64))

    def int(self):
        return Tensor(self.array.astype(int32))

    def bool(self):
        return Tensor(self.array.astype(bool_))

    def type_as(self, other):
        return self.astype(other.dtype) if other.dtype.kind == "f" else Tensor(self.array.astype(other.dtype))

    # in place (PyTorch's names). They change ``data`` itself, so views see the change, and bump
    # the version counter so that a backward pass that still needs the old values refuses to run.
    def _inplace(self, op, value):
        if self.requires_grad and is_grad_enabled():
            raise RuntimeError(f"{op}: in-place change of a tensor that requires grad; wrap it in "
                               "`with md.no_grad():` (for a leaf) or use the out-of-place form")
        xp = backend.get_array_module(self.array)
        value = value.array if isinstance(value, Tensor) else value
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
        src = src.array if isinstance(src, Tensor) else src
        xp = backend.get_array_module(self.array)
        return self._inplace("copy_", xp.broadcast_to(backend.to_device(xp.asarray(src), self.device)
                                                      if backend.is_array(src) else xp.asarray(src), self.shape))

    def clamp_(self, min=None, max=None):
        xp = backend.get_array_module(self.array)
        return self._inplace("clamp_", xp.clip(self.array, min, max))

    def add_(self, other, alpha=1):
        other = other.array if isinstance(other, Tensor) else other
        return self._inplace("add_", self.array + (other * alpha if alpha != 1 else other))

    def sub_(self, other, alpha=1):
        other = other.array if isinstance(other, Tensor) else other
        return self._inplace("sub_", self.array - (other * alpha if alpha != 1 else other))

    def mul_(self, other):
        other = other.array if isinstance(other, Tensor) else other
        return self._inplace("mul_", self.array * other)

    def div_(self, other):
        other = other.array if isinstance(other, Tensor) else other
        return self._inplace("div_", self.array / other)

    def sign_(self):
        return self._inplace("sign_", backend.get_array_module(self.array).sign(self.array))


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
    """(values, indices) of ``x.max(dim)`` / ``x.min(dim)``, also as ``.values``/``.indices``."""

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


def where(condition, x, y):
    """x where ``condition`` else y, broadcast; numbers take the dtype of the tensor argument."""
    cond = condition.array if isinstance(condition, Tensor) else condition
    ref = x if isinstance(x, Tensor) else y
    if not isinstance(ref, Tensor):
        raise TypeError("where: x or y must be a Tensor")
    xp = backend.get_array_module(ref.array)
    cond = backend.to_device(cond, ref.device) if backend.is_array(cond) else xp.asarray(cond)
    if cond.dtype != bool_:
        raise TypeError(f"where: condition must be a boolean tensor, got dtype {cond.dtype}")
    return select.Where.apply(x, y, cond=cond)


def to_host(a):
    """A host NumPy array for a Tensor or a NumPy/CuPy array."""
    return backend.to_numpy(a.array if isinstance(a, Tensor) else a)


def _unwrap_index(index):
    """Tensors used as indices become their arrays."""
    if isinstance(index, Tensor):
        return index.array
    if isinstance(index, tuple):
        return tuple(i.array if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, list):
        return numpy.asarray(index)
    return index


# --- construction ---------------------------------------------------------------------------
def tensor(data, dtype=None, device="cpu", requires_grad=False):
    """A new Tensor holding a copy of ``data`` (list, scalar, NumPy/CuPy array or Tensor).

    Python floats become float32 (the library default); NumPy arrays keep their dtype;
    Python ints become int64.
    """
    if isinstance(data, Tensor):
        data = data.array
    return Tensor(backend.new_array(data, dtype=dtype, device=device), requires_grad=requires_grad)


def as_tensor(data, dtype=None, device="cpu"):
    """``data`` as a constant Tensor, without copying when it is already an array there."""
    if isinstance(data, Tensor):
        return data
    return Tensor(backend.as_array(data, dtype=dtype, device=device))


def _factory(make, shape, dtype, device, requires_grad):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    dtype = backend.resolve_dtype(dtype) or numpy.dtype(float32)
    xp = backend.xp_for(device)
    return Tensor(make(xp, shape).astype(dtype, copy=False), requires_grad=requires_grad)


def zeros(*shape, dtype=None, device="cpu", requires_grad=False):
    return _factory(lambda xp, s: xp.zeros(s, dtype=dtype or float32), shape, dtype, device, requires_grad)


def ones(*shape, dtype=None, device="cpu", requires_grad=False):
    return _factory(lambda xp, s: xp.ones(s, dtype=dtype or float32), shape, dtype, device, requires_grad)


def randn(*shape, dtype=None, device="cpu", requires_grad=False):
    """Standard normal samples from the library generator (seeded by manual_seed)."""
    return _factory(lambda xp, s: backend.rng(xp).standard_normal(s), shape, dtype, device, requires_grad)


def rand(*shape, dtype=None, device="cpu", requires_grad=False):
    """Uniform [0, 1) samples from the library generator (seeded by manual_seed)."""
    return _factory(lambda xp, s: backend.rng(xp).random(s), shape, dtype, device, requires_grad)


def zeros_like(t, dtype=None, requires_grad=False):
    return Tensor(backend.get_array_module(t.array).zeros_like(t.array, dtype=backend.resolve_dtype(dtype)),
                  requires_grad=requires_grad)


def concatenate(tensors, axis=0, *, dim=None):
    return shape.Concatenate.apply(*tensors, axis=_dim(dim, None) if dim is not None else axis)


def stack(tensors, axis=0, *, dim=None):
    return shape.Stack.apply(*tensors, axis=_dim(dim, None) if dim is not None else axis)
