"""Compare analytic gradients with float64 central finite differences.

For a function f of tensors x_1..x_k returning a tensor y, take a fixed random cotangent
u (same shape as y) and the scalar s = <u, f(x)>. Its gradient with respect to each x_i is
what ``backward(u)`` computes (a vector-Jacobian product), and each entry can be checked
against the central difference

    ds/dx_i[j] ~ (s(x_i + h e_j) - s(x_i - h e_j)) / (2 h),

which is exact up to O(h^2) in float64. For small inputs every entry is checked (the full
Jacobian-vector products); for inputs with more than ``max_entries`` elements, random
directions v are checked instead: <grad, v> against (s(x + h v) - s(x - h v)) / (2 h).
"""
import numpy

from .. import backend
from ..tensor import Tensor


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree; the message shows where."""


def _scalar(fn, inputs, u):
    out = fn(*inputs)
    return float((backend.to_numpy(out.data).astype(numpy.float64) * u).sum())


def numerical_gradient(fn, inputs, index, u, eps):
    """Central-difference gradient of <u, fn(inputs)> with respect to ``inputs[index]``."""
    x = inputs[index]
    flat = x.data.reshape(-1)
    grad = numpy.zeros(x.size)
    for j in range(x.size):
        old = flat[j].item()
        flat[j] = old + eps
        plus = _scalar(fn, inputs, u)
        flat[j] = old - eps
        minus = _scalar(fn, inputs, u)
        flat[j] = old
        grad[j] = (plus - minus) / (2 * eps)
    return grad.reshape(x.shape)


def gradcheck(fn, *inputs, eps=1e-6, atol=1e-5, rtol=1e-4, max_entries=400, n_directions=8, seed=0):
    """Check the gradients of ``fn(*inputs)`` with respect to every input that requires grad.

    ``inputs`` should be float64 Tensors (the comparison is meaningless in float32).
    Returns True, or raises :class:`GradcheckError` naming the input, the worst entry, the
    analytic and numerical values.
    """
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    for i, x in enumerate(tensors):
        if x.requires_grad and x.dtype != numpy.float64:
            raise TypeError(f"gradcheck: input {i} has dtype {x.dtype}; use float64 inputs "
                            "(finite differences in float32 are too coarse)")
    rng = numpy.random.default_rng(seed)
    out = fn(*inputs)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradcheck: fn must return a Tensor, got {type(out).__name__}")
    u = rng.standard_normal(out.shape)
    for x in tensors:
        x.grad = None
    out.backward(backend.to_device(u.astype(out.dtype), out.device))
    for i, x in enumerate(inputs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            continue
        analytic = numpy.zeros(x.shape) if x.grad is None else x.grad.numpy().astype(numpy.float64)
        if x.size <= max_entries:
            numeric = numerical_gradient(fn, inputs, i, u, eps)
            bad = ~numpy.isclose(analytic, numeric, atol=atol, rtol=rtol)
            if bad.any():
                j = numpy.unravel_index(numpy.argmax(numpy.abs(analytic - numeric) * bad), x.shape)
                raise GradcheckError(
                    f"gradcheck: gradient of input {i} (shape {x.shape}) is wrong at {bad.sum()} of {x.size} "
                    f"entries; worst at index {tuple(int(k) for k in j)}: analytic {analytic[j]:.8g}, "
                    f"numerical {numeric[j]:.8g}")
        else:
            xp = backend.get_array_module(x.data)
            original = x.data.copy()
            for d in range(n_directions):
                v = rng.standard_normal(x.shape)
                x.data = original + eps * xp.asarray(v)
                plus = _scalar(fn, inputs, u)
                x.data = original - eps * xp.asarray(v)
                minus = _scalar(fn, inputs, u)
                x.data = original
                numeric = (plus - minus) / (2 * eps)
                predicted = float((analytic * v).sum())
                if not numpy.isclose(predicted, numeric, atol=atol * numpy.sqrt(x.size), rtol=rtol):
                    raise GradcheckError(
                        f"gradcheck: gradient of input {i} (shape {x.shape}) is wrong along random direction "
                        f"{d}: analytic directional derivative {predicted:.8g}, numerical {numeric:.8g}")
    return True
