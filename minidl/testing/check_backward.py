"""``check_backward``: everything a new :class:`~minidl.autograd.Function` must get right, in one call.

The contract of a Function (see ``minidl/autograd.py``): ``forward(*arrays)`` returns an array
of the inputs' dtype on their device, and ``backward(g)`` returns one entry per input, an
array of that input's shape, dtype and device, or None where ``self.needs_grad[i]`` is False
(or no gradient exists). Neither may modify its arguments. ``check_backward`` checks, in order:

1. forward: the output is an array of the floating inputs' dtype, on their device;
2. backward, called directly with the upstream gradient: one entry per input, each a
   gradient of the input's shape, dtype and device (the graph walk would hide a wrong dtype:
   it casts what reaches a leaf);
3. forward and backward leave their inputs (and the upstream gradient) unchanged;
4. with only input i requiring grad (``needs_grad`` one-hot), backward gives input i the
   same gradient as with all of them;
5. what backward reads is declared: where the Function says ``reads_inputs = False`` (autograd
   then keeps no input alive and checks no input's version), and unless it says
   ``reads_output = True`` (autograd then checks its output's version), backward gives the same
   gradients after that memory (the inputs, resp. the output) was overwritten between forward
   and backward, with NaN, with the values negated and with the values plus one;
6. the gradients agree with finite differences (:func:`~minidl.testing.gradcheck`, float32
   re-run in float64 where the op allows it).
"""
import inspect

import numpy

from .. import backend
from ..autograd import Function
from ..tensor import Tensor
from .gradcheck import LOW_PRECISION_FACTOR, GradcheckError, gradcheck


def _snapshot(arrays):
    return [backend.to_numpy(a).copy() if backend.is_array(a) else None for a in arrays]


def _unchanged(before, arrays):
    return [i for i, (b, a) in enumerate(zip(before, arrays))
            if b is not None and not numpy.array_equal(b, backend.to_numpy(a), equal_nan=True)]


def _nan(a):
    """with NaN"""
    a.fill(numpy.nan)


def _negated(a):
    """with the values negated"""
    a *= -1


def _plus_one(a):
    """with the values plus one"""
    a += 1


_FILLS = (_nan, _negated, _plus_one)


def _grads_after_overwrite(op_class, inputs, params, g, what, fill):
    """Backward's gradients after forward on copies of ``inputs``, with the floating inputs
    (``what='inputs'``) or the output (``'output'``) overwritten by ``fill`` in between; None
    where the Function declares that its backward reads that memory (or the output is a
    read-only view, or shares memory with inputs backward reads)."""
    xp = backend.xp_for(next(x for x in inputs if isinstance(x, Tensor)).device)
    copies = [Tensor(x.array.copy(), requires_grad=x.requires_grad) if isinstance(x, Tensor) else
              Tensor(xp.array(x)) if backend.is_array(x) else x for x in inputs]
    y = op_class.apply(*copies, **params)
    fn = y._ctx
    floats = [c.array for c in copies if isinstance(c, Tensor) and c.dtype.kind == "f"]
    if what == "inputs":
        if fn.reads_inputs:
            return None
        targets = floats
    else:
        if fn.reads_output or not y.array.flags.writeable or (
                fn.reads_inputs and any(xp.may_share_memory(y.array, a) for a in floats)):
            return None
        targets = [y.array]
    for a in targets:
        fill(a)
    return fn.backward(g)


def check_backward(op_class, *inputs, params=None, grad_output=None, eps=None, atol=None, rtol=None,
                   promote=None, seed=0):
    """Check the Function subclass ``op_class`` on ``inputs`` (Tensors, arrays or numbers, as
    ``op_class.apply`` takes them); ``params`` are its keyword parameters and ``grad_output``
    the upstream gradient (random by default). The tolerances and ``promote`` go to
    :func:`~minidl.testing.gradcheck`. Returns True, or raises :class:`GradcheckError` saying
    which check failed, expected and got."""
    if not (inspect.isclass(op_class) and issubclass(op_class, Function)):
        raise TypeError(f"check_backward: op_class: expected a subclass of minidl.autograd.Function, "
                        f"got {op_class!r}")
    if params is not None and not isinstance(params, dict):
        raise TypeError(f"check_backward: params: expected a dict of keyword parameters, got {type(params).__name__}")
    params = params or {}
    name = f"check_backward({op_class.__name__})"
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    if not any(x.requires_grad for x in tensors):
        raise ValueError(f"{name}: inputs: expected at least one Tensor with requires_grad=True, got none")
    dtypes = {x.dtype for x in tensors if x.dtype.kind == "f"}
    expected_dtype = numpy.result_type(*dtypes) if dtypes else None
    device = tensors[0].device

    before = _snapshot([x.array for x in tensors])
    y = op_class.apply(*inputs, **params)
    if expected_dtype is not None and y.dtype != expected_dtype:
        raise GradcheckError(f"{name}: forward: expected an output of dtype {expected_dtype} (the inputs' dtype), "
                             f"got {y.dtype}")
    if y.device != device:
        raise GradcheckError(f"{name}: forward: expected an output on {device!r} (the inputs' device), got {y.device!r}")
    changed = _unchanged(before, [x.array for x in tensors])
    if changed:
        raise GradcheckError(f"{name}: forward modified its input(s) {changed} in place")

    fn = y._ctx
    xp = backend.xp_for(device)
    if grad_output is None:
        g = xp.asarray(numpy.random.default_rng(seed).standard_normal(y.shape).astype(y.dtype))
    else:
        g = grad_output.array if isinstance(grad_output, Tensor) else xp.asarray(grad_output)
        if g.shape != y.shape or g.dtype != y.dtype:
            raise ValueError(f"{name}: grad_output: expected shape {y.shape} and dtype {y.dtype}, "
                             f"got shape {g.shape} and dtype {g.dtype}")
    g_before = _snapshot([g])
    arrays_before = _snapshot([x.array if isinstance(x, Tensor) else x for x in inputs])
    grads = fn.backward(g)
    if not isinstance(grads, (tuple, list)) or len(grads) != len(inputs):
        got = f"{len(grads)} entries" if isinstance(grads, (tuple, list)) else type(grads).__name__
        raise GradcheckError(f"{name}: backward: expected a tuple of {len(inputs)} gradients "
                             f"(one per input), got {got}")
    for i, (x, gx) in enumerate(zip(inputs, grads)):
        if not fn.needs_grad[i] or gx is None:
            continue
        if isinstance(gx, numpy.generic) and x.ndim == 0:
            gx = numpy.asarray(gx)  # NumPy reductions to 0-d give scalars; the graph walk wraps them
        if not backend.is_array(gx):
            raise GradcheckError(f"{name}: backward: gradient {i}: expected an array, got {type(gx).__name__}")
        for what, want, got in (("shape", x.shape, gx.shape), ("dtype", x.dtype, gx.dtype),
                                ("device", x.device, backend.device_of(gx))):
            if want != got:
                raise GradcheckError(f"{name}: backward: gradient {i}: expected {what} {want} "
                                     f"(input {i}'s), got {got}")
    if _unchanged(g_before, [g]):
        raise GradcheckError(f"{name}: backward modified the upstream gradient in place")
    changed = _unchanged(arrays_before, [x.array if isinstance(x, Tensor) else x for x in inputs])
    if changed:
        raise GradcheckError(f"{name}: backward modified its input(s) {changed} in place")

    differentiable = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if len(differentiable) > 1:
        for i in differentiable:
            alone = [Tensor(x.array, requires_grad=(k == i)) if isinstance(x, Tensor) else x
                     for k, x in enumerate(inputs)]
            gi = op_class.apply(*alone, **params)._ctx.backward(g)[i]
            want = (numpy.zeros(inputs[i].shape) if grads[i] is None
                    else backend.to_numpy(grads[i]).astype(numpy.float64))
            got = numpy.zeros(want.shape) if gi is None else backend.to_numpy(gi).astype(numpy.float64)
            info = numpy.finfo(inputs[i].dtype)
            tol = LOW_PRECISION_FACTOR * info.eps * (numpy.abs(want).max(initial=0.0) + numpy.abs(want)) + info.tiny
            if got.shape != want.shape or (numpy.abs(got - want) > tol).any():
                raise GradcheckError(f"{name}: backward: with only input {i} requiring grad "
                                     f"(needs_grad={tuple(k == i for k in range(len(inputs)))}), gradient {i} "
                                     f"differs from the one computed with all inputs requiring grad")

    for what in ("inputs", "output"):
        for fill in _FILLS:
            got = _grads_after_overwrite(op_class, inputs, params, g, what, fill)
            if got is None:
                break  # the Function reads what this would overwrite: nothing to check
            for i, (want, gi) in enumerate(zip(grads, got)):
                if (want is None) != (gi is None) or want is not None and not numpy.array_equal(
                        backend.to_numpy(want), backend.to_numpy(gi), equal_nan=True):
                    declared = "reads_inputs is False" if what == "inputs" else "reads_output is not True"
                    raise GradcheckError(
                        f"{name}: {declared}, but gradient {i} changed when the {what} {'were' if what == 'inputs' else 'was'} "
                        f"overwritten "
                        f"({fill.__doc__}) after forward: backward reads them; declare it, or autograd "
                        f"frees or misses in-place changes of what backward still needs")

    try:
        return gradcheck(lambda *xs: op_class.apply(*xs, **params), *inputs, grad_output=g, eps=eps, atol=atol,
                         rtol=rtol, promote=promote, seed=seed)
    except GradcheckError as e:
        e.args = (f"{name}: {e.args[0]}",)
        raise
