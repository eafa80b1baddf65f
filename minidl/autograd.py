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

Higher-order gradients (``create_graph=True``, :func:`grad`). Each Function keeps its fast
``backward`` on arrays, which first-order training runs. When a graph of the gradient is
asked for, the walk calls ``backward_graph`` instead: the same vector-Jacobian product
computed with Functions on Tensors, so that the gradient is itself differentiable. The
Tensors it needs are rebuilt from the arrays the forward pass saved, each attached to the
graph node that produced it (:meth:`Function.input_tensor`: the input's parent Function or
the leaf itself; :meth:`Function.output_tensor`: this Function), so nothing of the forward
pass is kept as a Tensor. (One op keeps arrays for this alone: a convolution keeps references
to its input arrays, ``keeps_input_arrays``, which some of its kernels' caches hold only
transformed.) A linear op whose backward uses only operations that arrays and Tensors share
declares ``backward_graph = backward``.

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

    and, for ``create_graph=True``, ``backward_graph(self, grad_output) -> tuple``: the same
    gradients computed from the Tensor ``grad_output`` with differentiable Tensor operations
    (see the module docstring), so that they can be differentiated again.
    """

    name = None  # used in error messages; defaults to the class name
    # What ``backward`` reads besides the upstream gradient: the inputs' values (through the
    # arrays ``forward`` kept), its own output's, or neither. Autograd keeps those arrays'
    # versions and refuses to run ``backward`` once one was changed in place. Inputs are
    # assumed read unless an op says otherwise (the safe default for ops written by users).
    reads_inputs = True
    reads_output = False
    # True where ``backward_graph`` needs the input arrays although ``backward`` does not
    # (convolution, whose kernels keep transforms of them): ``apply`` then keeps references
    # to them in ``input_arrays``.
    keeps_input_arrays = False

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    def backward_graph(self, grad_output):
        raise RuntimeError(f"{self.op_name} has no differentiable backward (backward_graph), so "
                           "create_graph=True cannot differentiate through it")

    # --- for backward_graph: saved arrays as Tensors attached to the graph ------------------
    def input_tensor(self, i, array):
        """Input ``i`` (whose value the forward pass saved as ``array``) as a Tensor of the graph:
        the leaf itself, or a new Tensor whose node is the Function that produced the input,
        or a constant where the input needs no gradient."""
        parent = self.parents[i]
        if parent is None:
            return self.tensor_type(array)
        if not isinstance(parent, Function):
            return parent
        return _attached(self.tensor_type, array, parent)

    def output_tensor(self, array):
        """This Function's output (saved as ``array``) as a Tensor whose node is this Function."""
        return _attached(self.tensor_type, array, self)

    def intermediate_tensor(self, cls, array, inputs, **state):
        """A value ``array`` that the forward pass computed as ``cls`` of this Function's
        inputs at positions ``inputs`` (a softmax inside a loss), as a Tensor whose node is a
        ``cls`` Function rebuilt with ``state`` (the attributes its ``backward`` reads)."""
        fn = cls.__new__(cls)
        vars(fn).update(state)
        fn.parents = tuple(self.parents[i] for i in inputs)
        fn.needs_grad = tuple(p is not None for p in fn.parents)
        fn.input_shapes = tuple(self.input_shapes[i] for i in inputs)
        fn.saved_versions = []
        fn.tensor_type = self.tensor_type
        if not any(fn.needs_grad):
            return self.tensor_type(array)
        return fn.output_tensor(array)

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
            if fn.keeps_input_arrays:
                fn.input_arrays = arrays
                # versioned for the create_graph walk only: backward itself does not read them
                fn.kept_versions = [] if fn.reads_inputs else [
                    (f"input {i}", a.shape, version_counter.stamp(a)) for i, a in enumerate(arrays) if a is not None]
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


def _attached(tensor_type, array, fn):
    """A Tensor holding ``array`` whose graph node is the Function ``fn`` (its output)."""
    t = tensor_type(array, requires_grad=True)
    t._ctx = fn
    return t


def _topological_order(roots):
    """Graph nodes (Functions, leaf tensors) reachable from ``roots``, each after all its parents."""
    order, visited = [], set()
    stack = [(root, False) for root in roots]
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


def run_backward(root, gradient=None, create_graph=False):
    """Propagate ``gradient`` (dL/d root: an array or Tensor shaped like ``root``; None for a
    one-element root, meaning 1) back to every leaf that requires grad.

    Leaves accumulate into ``.grad`` (summing over calls, as in PyTorch, until zeroed); with
    ``create_graph`` the gradients are Tensors with a graph.
    """
    seed = _seed(root, gradient, create_graph, "backward(): gradient")
    with (enable_grad() if create_graph else contextlib.nullcontext()):
        _walk([root], [seed], create_graph)


def _walk(roots, seeds, create_graph, targets=None):
    """The backward pass from ``roots`` (gradients ``seeds``) in reverse topological order.

    ``targets`` None: accumulate into the ``.grad`` of every leaf that requires grad.
    Otherwise ``targets`` are graph nodes (leaves, or the Functions that produced non-leaf
    tensors): only the Functions on a path from a root to a target run, each asked only for
    the gradients that lead to a target (``needs_grad`` is narrowed for the walk), and the
    gradient reaching each target is returned as {id(node): gradient}.
    """
    starts = [r._ctx if r._ctx is not None else r for r in roots]
    grads = {}
    for node, g in zip(starts, seeds):
        grads[id(node)] = g if id(node) not in grads else grads[id(node)] + g
    order = _topological_order(starts)
    found, narrowed = {}, []
    if targets is not None:
        wanted = {id(t) for t in targets}
        needed = set()
        for node in order:  # parents first: a node is needed if a target is at or above it
            if id(node) in wanted or (isinstance(node, Function) and
                                      any(p is not None and id(p) in needed for p in node.parents)):
                needed.add(id(node))
    try:
        for node in reversed(order):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            if not create_graph and not backend.is_array(g):  # NumPy ops on 0-d arrays give scalars
                g = backend.get_array_module(g).asarray(g)
            if targets is not None:
                if id(node) not in needed:
                    continue
                if id(node) in wanted:
                    found[id(node)] = g
            if not isinstance(node, Function):  # a leaf: store the gradient
                if targets is None:
                    _accumulate(node, g, create_graph)
                continue
            fn = node
            if targets is not None:
                mask = tuple(n and p is not None and id(p) in needed for n, p in zip(fn.needs_grad, fn.parents))
                if not any(mask):
                    continue
                if mask != fn.needs_grad:
                    narrowed.append((fn, fn.needs_grad))
                    fn.needs_grad = mask
            _check_versions(fn, fn.saved_versions)
            if create_graph:
                _check_versions(fn, getattr(fn, "kept_versions", ()))
                fn.tensor_type = type(g)
                input_grads = fn.backward_graph(g)
            else:
                input_grads = fn.backward(g)
            if len(input_grads) != len(fn.parents):
                raise RuntimeError(f"{fn.op_name}.backward returned {len(input_grads)} gradients "
                                   f"for {len(fn.parents)} inputs")
            for parent, pg, shape, need in zip(fn.parents, input_grads, fn.input_shapes, fn.needs_grad):
                if pg is None or parent is None or not need:
                    continue
                if pg.shape != shape:
                    raise RuntimeError(f"{fn.op_name}.backward produced a gradient of shape {pg.shape} "
                                       f"for an input of shape {shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
    finally:
        for fn, needs in narrowed:
            fn.needs_grad = needs
    return found


def _check_versions(fn, stamps):
    for what, shape, stamped in stamps:
        if version_counter.changed(stamped):
            raise RuntimeError(f"backward: {what} of {fn.op_name} (shape {shape}) was changed by an "
                               "in-place operation after it was used; its gradient would be wrong "
                               "(use an out-of-place op, or run the forward pass again)")


def _accumulate(leaf, g, create_graph):
    """leaf.grad += g (a copy in the leaf's dtype; with ``create_graph`` a Tensor with a graph)."""
    if create_graph:
        g = g if g.dtype == leaf.dtype else g.astype(leaf.dtype)
        leaf.grad = g if leaf.grad is None else leaf.grad + g
    elif leaf.grad is None:
        leaf.grad = leaf._new(g.astype(leaf.dtype, copy=True))
    else:
        leaf.grad.array = backend.get_array_module(g).asarray(leaf.grad.array + g)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """The gradients of ``outputs`` with respect to ``inputs`` (PyTorch's ``torch.autograd.grad``).

    Returns a tuple with one entry per input: sum_k J_k^T grad_outputs[k], the vector-Jacobian
    product of the outputs, shaped like that input. ``outputs`` and ``inputs`` are Tensors or
    sequences of Tensors; ``grad_outputs`` (one per output, Tensors or arrays) may be omitted
    (or None per output) only for one-element outputs, which then get 1. Nothing is written
    into any ``.grad``, and only the part of the graph between the outputs and the inputs runs.

    ``create_graph=True``: the gradients are Tensors with a graph (built by each Function's
    ``backward_graph``), differentiable again, to any order. ``allow_unused``: an input that
    does not reach the outputs gets None instead of raising. ``retain_graph`` is accepted for
    PyTorch's signature; minidl keeps a graph until it is no longer referenced, so a graph can
    always be walked again.
    """
    outputs = _as_sequence(outputs, "outputs")
    inputs = _as_sequence(inputs, "inputs")
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            raise RuntimeError(f"grad(): inputs[{i}] (shape {x.shape}) does not require grad; set "
                               "requires_grad=True on it before the forward pass")
    if grad_outputs is None:
        grad_outputs = [None] * len(outputs)
    grad_outputs = list(grad_outputs) if isinstance(grad_outputs, (list, tuple)) else [grad_outputs]
    if len(grad_outputs) != len(outputs):
        raise ValueError(f"grad(): got {len(grad_outputs)} grad_outputs for {len(outputs)} outputs")
    roots, seeds = [], []
    for k, (y, g) in enumerate(zip(outputs, grad_outputs)):
        if not y.requires_grad:
            raise RuntimeError(f"grad(): outputs[{k}] does not require grad and has no graph (is it "
                               "computed from inputs that require grad, outside no_grad?)")
        roots.append(y)
        seeds.append(_seed(y, g, create_graph, f"grad_outputs[{k}]"))
    targets = [x._ctx if x._ctx is not None else x for x in inputs]
    with (enable_grad() if create_graph else no_grad()):
        found = _walk(roots, seeds, create_graph, targets)
    result = []
    for i, (x, node) in enumerate(zip(inputs, targets)):
        g = found.get(id(node))
        if g is None:
            if not allow_unused:
                raise RuntimeError(f"grad(): inputs[{i}] (shape {x.shape}) was not used in the graph of "
                                   "the outputs; pass allow_unused=True to get None for it")
            result.append(None)
            continue
        if create_graph:
            with enable_grad():
                result.append(g if g.dtype == x.dtype else g.astype(x.dtype))
        else:
            g = g if backend.is_array(g) else backend.get_array_module(g).asarray(g)
            # a copy: the walk may hand back a view of a seed or of another gradient
            result.append(x._new(g.astype(x.dtype, copy=True)))
    return tuple(result)


def _as_sequence(value, name):
    items = [value] if isinstance(value, Variable) else list(value) if isinstance(value, (list, tuple)) else None
    if not items or not all(isinstance(v, Variable) for v in items):
        raise TypeError(f"grad(): {name} must be a Tensor or a non-empty sequence of Tensors, got "
                        f"{type(value).__name__}")
    return items


def _seed(y, g, create_graph, name):
    """The gradient that starts the walk at output ``y``: an array, or (create_graph) a Tensor."""
    xp = backend.get_array_module(y.array)
    if g is None:
        size = 1
        for n in y.shape:
            size *= n
        if size != 1:
            raise RuntimeError(f"{name} must be given for an output of shape {y.shape} (it may be left "
                               "out only for a one-element output)")
        g = xp.ones(y.shape, dtype=y.dtype)
    if isinstance(g, Variable):
        if g.shape != y.shape:
            raise ValueError(f"{name} has shape {g.shape}, expected {y.shape} (the output's)")
        return g if create_graph else g.array
    g = xp.asarray(g, dtype=y.dtype)
    if g.shape != y.shape:
        raise ValueError(f"{name} has shape {g.shape}, expected {y.shape} (the output's)")
    return y._new(g) if create_graph else g
