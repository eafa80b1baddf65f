"""The Tensor: an array (NumPy or CuPy) plus what autograd needs to differentiate through it."""
import numbers

import numpy

from . import backend
from . import version_counter
from .autograd import Variable, is_grad_enabled, run_backward
from .ops import activation, arithmetic, matmul, shape, unary
from .ops.conversion import Cast, Transfer
from .tensor_methods import TensorMethods, MinMax, where, _dim  # noqa: F401 (MinMax, where: re-exported)

float32, float64, int32, int64, bool_ = numpy.float32, numpy.float64, numpy.int32, numpy.int64, numpy.bool_


class Tensor(TensorMethods, Variable):
    """An n-dimensional array that can record the ops applied to it.

    ``Tensor(array, requires_grad=False)`` wraps a NumPy or CuPy array without copying.
    ``array`` is that array, ``grad`` the accumulated gradient (a Tensor) of a leaf after
    ``backward``, and ``_ctx`` the Function that produced it (None for leaves); these come
    from :class:`minidl.autograd.Variable`, the graph node. Tensor adds the array API; the
    PyTorch-named methods (``view``, ``permute``, ``uniform_`` ...) come from
    :class:`minidl.tensor_methods.TensorMethods`.
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

    def to(self, *args, device=None, dtype=None, copy=False, non_blocking=False):
        """This tensor on another device and/or with another dtype, as PyTorch's ``x.to``:
        ``x.to('cuda')``, ``x.to(md.float64)``, ``x.to('cpu', md.float64)``,
        ``x.to(device=..., dtype=...)`` or ``x.to(other)`` (other's device and dtype).
        Itself when nothing changes (unless ``copy``). Floating casts and moves stay in the
        graph; a cast to an integer or boolean dtype leaves it. ``non_blocking`` is accepted
        and has no effect (copies are synchronous)."""
        for arg in args:
            if isinstance(arg, Tensor):
                device, dtype = arg.device, arg.dtype
            elif isinstance(arg, str):  # 'cpu', 'cuda:0' or an md.device (a str)
                device = arg
            else:
                dtype = arg
        out = self
        if device is not None and backend.normalize_device(str(device)) != self.device:
            out = Transfer.apply(out, device=backend.normalize_device(str(device)))
        if dtype is not None:
            dtype = backend.resolve_dtype(dtype)
            if dtype != out.dtype:
                out = out.astype(dtype) if dtype.kind == "f" else Tensor(out.array.astype(dtype))
        if copy and out is self:
            out = self.clone()
        return out

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

    def __setitem__(self, index, value):
        """``x[index] = value``: writes into this tensor's memory (views see it) and bumps
        its version, so a backward pass that saved the old values refuses to run. When
        ``x`` or ``value`` is in a graph, ``x`` becomes the output of a SetItem op (as
        PyTorch's CopySlices): the gradient reaches ``value`` and the kept part of ``x``.
        A leaf that requires grad cannot be written while gradients are recorded."""
        index = _unwrap_index(index)
        recording = is_grad_enabled() and (self.requires_grad or isinstance(value, Tensor) and value.requires_grad)
        if recording and self.is_leaf and self.requires_grad:
            raise RuntimeError("x[index] = value: x is a leaf that requires grad; write it under "
                               "`with md.no_grad():` or through x.data")
        if isinstance(value, Tensor) and value.device != self.device:
            raise RuntimeError(f"x[index] = value: value is on {value.device!r}, x on {self.device!r}")
        out = shape.SetItem.apply(self, value, index=index) if recording else None
        xp = backend.get_array_module(self.array)
        v = value.array if isinstance(value, Tensor) else value
        self.array[index] = v if backend.is_array(v) else xp.asarray(v, dtype=self.dtype)
        version_counter.bump(self.array)
        if out is not None:  # self now stands for SetItem's output (same values, in this memory)
            self._ctx, self._requires_grad = out._ctx, True

    # --- math ---------------------------------------------------------------------------
    def exp(self):
        return unary.Exp.apply(self)

    def log(self):
        return unary.Log.apply(self)

    def sqrt(self):
        return unary.Sqrt.apply(self)

    def abs(self):
        return unary.Abs.apply(self)

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

    # --- autograd state -----------------------------------------------------------------
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
    def _version(self):
        return version_counter.stamp(self.array)[1]

    @property
    def grad_fn(self):
        """The Function that produced this tensor (its ``next_functions`` lead on through the
        graph), None for a leaf or a tensor outside the graph."""
        return self._ctx

    @property
    def data(self):
        """This tensor's values as a new Tensor outside the graph (requires_grad False) that
        shares the memory: ``x.data.add_(...)`` and ``x.data[mask] = v`` change ``x``.
        In-place writes through it bump the version as any other (PyTorch does not track
        them; minidl still refuses a backward pass that saved the old values)."""
        return Tensor(self.array)

    @data.setter
    def data(self, value):
        """``x.data = other`` makes ``x`` hold ``other``'s memory (shape, dtype and device
        may change, as in PyTorch); the graph and ``x.grad`` are kept as they are."""
        if isinstance(value, Tensor):
            value = value.array
        elif not backend.is_array(value):
            raise TypeError(f"x.data = value: value must be a Tensor (or a NumPy/CuPy array), "
                            f"got {type(value).__name__}; wrap it with minidl.tensor(...)")
        if self.requires_grad and value.dtype.kind != "f":
            raise TypeError(f"x.data = value: x requires grad, so value must be floating-point, "
                            f"got dtype {value.dtype}")
        self.array = value

    # --- Python scalars: 0-d (one-element) tensors in ``if``, ``range`` and indexing ------------
    def _scalar(self, what):
        if self.size != 1:
            raise RuntimeError(f"{what}: only a one-element tensor can be converted to a Python "
                               f"scalar, got shape {self.shape}")
        return self.array.reshape(()).item()

    def __bool__(self):
        return bool(self._scalar("bool(tensor)"))

    def __float__(self):
        return float(self._scalar("float(tensor)"))

    def __int__(self):
        return int(self._scalar("int(tensor)"))

    def __index__(self):
        if self.dtype.kind not in "iub":
            raise TypeError(f"only integer tensors of a single element can be used as an index, "
                            f"got dtype {self.dtype}")
        return int(self._scalar("index"))



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
