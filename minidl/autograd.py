"""Reverse-mode automatic differentiation.

A :class:`Function` is one differentiable op. Its ``forward`` maps input arrays to an
output array and keeps whatever ``backward`` needs; its ``backward`` maps the gradient of
the loss with respect to the output, ``dL/dy``, to the gradients ``dL/dx_i`` of each input
(the vector-Jacobian product). Both sit side by side in each op's class, so the chain rule
for that op can be read in one place.

Calling ``SomeFunction.apply(*tensors, **params)`` runs ``forward`` and, when any input
requires a gradient and gradients are enabled, records the Function as the ``_ctx`` of the
output Tensor. ``Tensor.backward`` then walks that graph from the output to the leaves in
reverse topological order (:func:`run_backward`), without recursion, so chains of any
length work.
"""
import contextlib

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


class Function:
    """Base class of differentiable ops.

    Subclasses take their non-tensor parameters in ``__init__`` and implement

    * ``forward(self, *arrays) -> array``
    * ``backward(self, grad_output) -> tuple`` with one entry per input: an array of the
      input's shape, or ``None`` where no gradient is needed (``self.needs_grad[i]`` is
      False) or none exists.
    """

    name = None  # used in error messages; defaults to the class name

    def forward(self, *arrays):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params):
        from .tensor import Tensor, as_tensor

        fn = cls(**params)
        tensors = [x for x in inputs if isinstance(x, Tensor)]
        if not tensors:
            raise TypeError(f"{fn.op_name}: expected at least one Tensor argument")
        device = tensors[0].device
        for t in tensors[1:]:
            if t.device != device:
                raise RuntimeError(
                    f"{fn.op_name}: all tensors must be on the same device, got {device!r} and {t.device!r} "
                    f"(move them with .to({device!r}))")
        dtype = next((t.dtype for t in tensors if t.dtype.kind == "f"), tensors[0].dtype)
        # Python numbers take the tensors' dtype (x * 2.5 stays float32), except that a float
        # constant must not be truncated to an integer tensor's dtype (int tensor + 0.5).
        inputs = [x if isinstance(x, Tensor) else
                  as_tensor(x, dtype=None if dtype.kind != "f" and isinstance(x, float) else dtype, device=device)
                  for x in inputs]
        fn.needs_grad = tuple(x.requires_grad for x in inputs)
        arrays = [x.data for x in inputs]
        out_data = fn.forward(*arrays)
        if not backend.is_array(out_data):  # NumPy reductions return scalars, not 0-d arrays
            out_data = backend.get_array_module(*arrays).asarray(out_data)
        requires_grad = _grad_enabled and any(fn.needs_grad)
        out = Tensor(out_data, requires_grad=requires_grad)
        if requires_grad:
            fn.inputs = inputs
            fn.input_versions = [version_counter.stamp(x.data) for x in inputs]
            out._ctx = fn
        return out

    @property
    def op_name(self):
        return self.name or type(self).__name__


def _topological_order(root):
    """Tensors reachable from ``root`` that need gradients, each after all its inputs."""
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            for parent in node._ctx.inputs:
                if parent.requires_grad and id(parent) not in visited:
                    stack.append((parent, False))
    return order


def run_backward(root, grad):
    """Propagate ``grad`` (array shaped like ``root``) back to every leaf that requires grad.

    Leaves accumulate into ``.grad`` (summing over calls, as in PyTorch, until zeroed).
    """
    from .tensor import Tensor

    grads = {id(root): grad}
    for node in reversed(_topological_order(root)):
        g = grads.pop(id(node), None)
        if g is None:
            continue
        if not backend.is_array(g):  # NumPy ops on 0-d arrays give scalars, not arrays
            g = backend.get_array_module(g).asarray(g)
        fn = node._ctx
        if fn is None:  # a leaf: store the gradient
            if node.grad is None:
                node.grad = Tensor(g.astype(node.dtype, copy=True))
            else:
                node.grad.data = backend.get_array_module(g).asarray(node.grad.data + g)
            continue
        for i, x in enumerate(fn.inputs):
            if version_counter.changed(fn.input_versions[i]):
                raise RuntimeError(f"backward: input {i} of {fn.op_name} (shape {x.shape}) was changed by an "
                                   "in-place operation after it was used; its gradient would be wrong "
                                   "(use an out-of-place op, or run the forward pass again)")
        input_grads = fn.backward(g)
        if len(input_grads) != len(fn.inputs):
            raise RuntimeError(f"{fn.op_name}.backward returned {len(input_grads)} gradients "
                               f"for {len(fn.inputs)} inputs")
        for parent, pg in zip(fn.inputs, input_grads):
            if pg is None or not parent.requires_grad:
                continue
            if pg.shape != parent.shape:
                raise RuntimeError(f"{fn.op_name}.backward produced a gradient of shape {pg.shape} "
                                   f"for an input of shape {parent.shape}")
            key = id(parent)
            grads[key] = pg if key not in grads else grads[key] + pg
