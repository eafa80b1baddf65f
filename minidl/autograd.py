"""Reverse-mode automatic differentiation.

A :class:`Function` is one differentiable op. Its ``forward`` maps input arrays to an
output array and keeps whatever ``backward`` needs; its ``backward`` maps the gradient of
the loss with respect to the output, ``dL/dy``, to the gradients ``dL/dx_i`` of each input
(the vector-Jacobian product). Both sit side by side in each op's class, so the chain rule
for that op can be read in one place.

Calling ``SomeFunction.apply(*tensors, **params)`` runs ``forward`` and, when any input
requires a gradient and gradients are enabled, records the Function as the ``_ctx`` of the
output Tensor. The graph's nodes are Functions and leaf tensors: a Function's ``parents``
are, per input, the Function that produced it or the leaf itself (as PyTorch's
``next_functions``). It holds no input tensor, so an intermediate result that no backward
pass reads (the input of a ReLU, which keeps its output instead) is freed as soon as the
forward pass is done with it. ``Tensor.backward`` then walks that graph from the output to
the leaves in reverse topological order (:func:`run_backward`), without recursion, so chains
of any length work.

This module sits below the ops and below ``tensor.py`` (which imports the ops), so it never
imports ``Tensor``: the graph is made of :class:`Variable` nodes, and ``Tensor`` is the
Variable subclass that adds the array API. A Function makes its result with
``first_input._new(array)``, which ``Tensor`` overrides to return a Tensor.
"""
import contextlib
import inspect

from . import backend, version_counter

_grad_enabled = True


def is_grad_enabled():
    return _grad_enabled


class no_grad(contextlib.ContextDecorator):
    """Context manager (and decorator) in which no graph is recorded."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = False
        return self

    def __exit__(self, *exc):
        global _grad_enabled
        _grad_enabled = self._previous
        return False


class enable_grad(no_grad):
    """Re-enable graph recording inside a ``no_grad`` block (attacks need input gradients)."""

    def __enter__(self):
        global _grad_enabled
        self._previous = _grad_enabled
        _grad_enabled = True
        return self


class Variable:
    """A node of the graph: an array and what the backward walk needs.

    ``data`` is the NumPy or CuPy array (used without copying), ``requires_grad`` whether
    gradients flow into it, ``grad`` the accumulated gradient of a leaf after ``backward``,
    and ``_ctx`` the Function that produced it (None for leaves).
    """

    def __init__(self, data, requires_grad=False):
        if not backend.is_array(data):
            raise TypeError(f"Tensor(data): expected a numpy or cupy array, got {type(data).__name__}; "
                            "use minidl.tensor(...) to convert other data")
        if requires_grad and data.dtype.kind != "f":
            raise TypeError(f"requires_grad: only floating-point tensors can require gradients, got dtype {data.dtype}")
        self._ctx = None  # first: Tensor's requires_grad setter asks whether this is a leaf
        self.array = data
        self.requires_grad = bool(requires_grad)
        self.grad = None

    shape = property(lambda self: self.array.shape)
    dtype = property(lambda self: self.array.dtype)
    device = property(lambda self: backend.device_of(self.array))

    def _new(self, data, requires_grad=False):
        """A new node of the user-facing kind for ``data`` (``Tensor`` overrides this)."""
        return Variable(data, requires_grad=requires_grad)


class Function:
    """Base class of differentiable ops.

    Subclasses take their non-tensor parameters in ``__init__`` and implement

    * ``forward(self, *arrays) -> array``
    * ``backward(self, grad_output) -> tuple`` with one entry per input: an array of the
      input's shape, or ``None`` where no gradient is needed (``self.needs_grad[i]`` is
      False) or none exists.
    """

    name = None  # used in error messages; defaults to the class name
    # What ``backward`` reads besides the upstream gradient: the inputs' values (through the
    # arrays ``forward`` kept), its own output's, or neither. Autograd keeps those arrays'
    # versions and refuses to run ``backward`` once one was changed in place. Inputs are
    # assumed read unless an op says otherwise (the safe default for ops written by users).
    reads_inputs = True
    reads_output = False

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        """Run ``forward`` on the inputs' arrays and record the graph edge.

        ``inputs`` are Tensors, Python numbers or arrays (made constants of the tensors'
        dtype), or None for an absent optional input such as a bias (it gets no gradient).
        """
        fn = cls(**params)
        variables = [x for x in inputs if isinstance(x, Variable)]
        if not variables:
            raise TypeError(f"{fn.op_name}: expected at least one Tensor argument")
        first = variables[0]
        device = first.device
        if any(v.device != device for v in variables[1:]):
            names = _input_names(fn, len(inputs))
            listing = ", ".join(f"{name} on {x.device!r}" for name, x in zip(names, inputs)
                                if isinstance(x, Variable))
            raise RuntimeError(f"{fn.op_name}: all tensors must be on the same device, got {listing} "
                               f"(move them with .to({device!r}))")
        dtype = next((v.dtype for v in variables if v.dtype.kind == "f"), first.dtype)
        # Python numbers take the tensors' dtype (x * 2.5 stays float32), except that a float
        # constant must not be truncated to an integer tensor's dtype (int tensor + 0.5).
        inputs = [x if x is None or isinstance(x, Variable) else
                  first._new(backend.as_array(x, dtype=None if dtype.kind != "f" and isinstance(x, float)
                                              else dtype, device=device))
                  for x in inputs]
        fn.needs_grad = tuple(x is not None and x.requires_grad for x in inputs)
        arrays = [None if x is None else x.array for x in inputs]
        out_data = fn.forward(*arrays)
        if not backend.is_array(out_data):  # NumPy reductions return scalars, not 0-d arrays
            out_data = backend.get_array_module(*arrays).asarray(out_data)
        requires_grad = _grad_enabled and any(fn.needs_grad)
        out = first._new(out_data, requires_grad=requires_grad)
        if requires_grad:
            # the graph edges (no input tensor is kept) and what the checks need
            fn.parents = tuple(x if x is not None and x._ctx is None and x.requires_grad else
                               x._ctx if x is not None and x.requires_grad else None for x in inputs)
            fn.input_shapes = tuple(None if x is None else x.shape for x in inputs)
            saved = [(f"input {i}", x.array) for i, x in enumerate(inputs) if x is not None] if fn.reads_inputs else []
            if fn.reads_output:
                saved.append(("the output", out_data))
            fn.saved_versions = [(what, a.shape, version_counter.stamp(a)) for what, a in saved]
            out._ctx = fn
        return out

    @property
    def op_name(self):
        return self.name or type(self).__name__

    @property
    def next_functions(self):
        """The graph one step towards the leaves, as PyTorch prints it: per input
        ``(node, 0)``, the node being the Function that produced the input, an
        :class:`AccumulateGrad` for a leaf that requires grad, or None for a constant."""
        return tuple((AccumulateGrad(p) if isinstance(p, Variable) else p, 0) for p in self.parents)


class AccumulateGrad:
    """The graph node of a leaf in ``next_functions``: backward accumulates into ``variable.grad``."""
    next_functions = ()

    def __init__(self, variable):
        self.variable = variable

    def __repr__(self):
        return f"<AccumulateGrad of a leaf of shape {self.variable.shape}>"


def _input_names(fn, count):
    """Names of ``fn.forward``'s array parameters (``x``, ``weight``, ...), for error messages."""
    params = list(inspect.signature(fn.forward).parameters.values())
    names = [p.name for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    rest = next((p.name for p in params if p.kind is p.VAR_POSITIONAL), "input")
    return [names[i] if i < len(names) else f"{rest}[{i - len(names)}]" for i in range(count)]


def _topological_order(root):
    """Graph nodes (Functions, leaf tensors) reachable from ``root``, each after all its parents."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, parents_done = stack.pop()
        if parents_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if isinstance(node, Function):
            for parent in node.parents:
                if parent is not None and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def run_backward(root, grad):
    """Propagate ``grad`` (array shaped like ``root``) back to every leaf that requires grad.

    Leaves accumulate into ``.grad`` (summing over calls, as in PyTorch, until zeroed).
    """
    start = root._ctx if root._ctx is not None else root
    grads = {id(start): grad}
    for node in reversed(_topological_order(start)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if not backend.is_array(g):  # NumPy ops on 0-d arrays give scalars, not arrays
            g = backend.get_array_module(g).asarray(g)
        if not isinstance(node, Function):  # a leaf: store the gradient
            if node.grad is None:
                node.grad = node._new(g.astype(node.dtype, copy=True))
            else:
                node.grad.array = backend.get_array_module(g).asarray(node.grad.array + g)
            continue
        fn = node
        for what, shape, stamped in fn.saved_versions:
            if version_counter.changed(stamped):
                raise RuntimeError(f"backward: {what} of {fn.op_name} (shape {shape}) was changed by an "
                                   "in-place operation after it was used; its gradient would be wrong "
                                   "(use an out-of-place op, or run the forward pass again)")
        input_grads = fn.backward(g)
        if len(input_grads) != len(fn.parents):
            raise RuntimeError(f"{fn.op_name}.backward returned {len(input_grads)} gradients "
                               f"for {len(fn.parents)} inputs")
        for parent, pg, shape in zip(fn.parents, input_grads, fn.input_shapes):
            if pg is None or parent is None:
                continue
            if pg.shape != shape:
                raise RuntimeError(f"{fn.op_name}.backward produced a gradient of shape {pg.shape} "
                                   f"for an input of shape {shape}")
            key = id(parent)
            grads[key] = pg if key not in grads else grads[key] + pg
