"""Compare analytic gradients with central finite differences.

For a function f of tensors x_1..x_k returning a tensor y (or several), take a fixed random
cotangent u shaped like y and the scalar s = <u, f(x)>. Its gradient with respect to each x_i
is what ``backward(u)`` computes (a vector-Jacobian product, vjp), and each entry can be
checked against the central difference

    ds/dx_i[j] ~ (s(x_i + h e_j) - s(x_i - h e_j)) / (2 h),

which is exact up to O(h^2). :func:`gradcheck` checks every entry of small inputs. For inputs
with more than ``max_entries`` elements, and in :func:`check_jvp_vjp` for functions with many
outputs, it checks the identity <u, J v> = <J^T u, v> instead: the Jacobian-vector product
(jvp) J v is a central difference along a random tangent v, the vjp J^T u one backward pass,
so r cotangents and t tangents cost r backward passes and 2 t forward passes, whatever the
sizes of the inputs and outputs.

Precision. float64 inputs are checked in float64 (h = 1e-6, atol = 1e-5, rtol = 1e-4).
float32 inputs are first re-run in float64 (every float32 tensor argument promoted), when the
function allows it (it accepts float64 tensors and returns float64): then the float64 check
above runs, and the float32 analytic gradient must agree with the float64 one within
|g32 - g64| <= 1024 eps32 (max(max|g64|, 1) + |g64|), eps32 = 1.19e-7: float32 rounding of
the O(1) values a backward pass computes with, accumulated over the small shapes of a test
(so a float32-only error below about 1e-4 of the gradient's scale goes unseen). Otherwise (or with ``promote=False``) the differences are taken in float32 itself
with h = 4e-3 and atol = rtol = 1e-2: a float32 difference quotient carries a rounding error of
about eps32 |f| / h ~ 3e-5 |f| and a truncation error of about h^2 |f'''| / 6 ~ 3e-6 |f'''|.
"""
import numpy

from .. import backend
from ..tensor import Tensor

F32, F64 = numpy.dtype(numpy.float32), numpy.dtype(numpy.float64)
DEFAULTS = {F64: dict(eps=1e-6, atol=1e-5, rtol=1e-4), F32: dict(eps=4e-3, atol=1e-2, rtol=1e-2)}
LOW_PRECISION_FACTOR = 1024


class GradcheckError(AssertionError):
    """Analytic and numerical gradients disagree (or a backward pass breaks its contract).

    The message shows where; the attributes hold the details for programs: ``input_index``,
    ``index`` (the worst entry, a tuple, or None), ``analytic``, ``numeric``, ``relative_error``
    and ``inputs`` (host copies of every Tensor argument, to reproduce the failure)."""

    def __init__(self, message, input_index=None, index=None, analytic=None, numeric=None,
                 relative_error=None, inputs=None):
        super().__init__(message)
        self.input_index, self.index = input_index, index
        self.analytic, self.numeric, self.relative_error = analytic, numeric, relative_error
        self.inputs = inputs


def relative_error(a, b):
    """|a - b| / max(|a|, |b|), 0 where both are 0."""
    a, b = numpy.asarray(a, dtype=numpy.float64), numpy.asarray(b, dtype=numpy.float64)
    den = numpy.maximum(numpy.abs(a), numpy.abs(b))
    return numpy.where(den > 0, numpy.abs(a - b) / numpy.where(den > 0, den, 1.0), 0.0)


def _show(array):
    return numpy.array2string(numpy.asarray(array), separator=", ", floatmode="unique", threshold=64)


def _outputs(fn, inputs):
    out = fn(*inputs)
    outs = list(out) if isinstance(out, (tuple, list)) else [out]
    for k, y in enumerate(outs):
        if not isinstance(y, Tensor):
            raise TypeError(f"gradcheck: fn must return a Tensor or a tuple of Tensors, got "
                            f"{type(y).__name__}" + (f" as output {k}" if len(outs) > 1 else ""))
    return outs


def _scalar(fn, inputs, cotangents):
    """s = sum_k <u_k, f_k(inputs)>, in float64 on the host."""
    return sum(float((backend.to_numpy(y.array).astype(numpy.float64) * u).sum())
               for y, u in zip(_outputs(fn, inputs), cotangents))


def _vjp(fn, inputs, cotangents):
    """J^T u for every Tensor input that requires grad: {position: float64 host array}."""
    tensors = [x for x in inputs if isinstance(x, Tensor)]
    for x in tensors:
        x.grad = None
    for y, u in zip(_outputs(fn, inputs), cotangents):
        if y.requires_grad:
            y.backward(backend.to_device(u.astype(y.dtype), y.device))
    return {i: (numpy.zeros(x.shape) if x.grad is None else x.grad.numpy().astype(numpy.float64))
            for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad}


def numerical_gradient(fn, inputs, index, u, eps):
    """Central-difference gradient of <u, fn(inputs)> with respect to ``inputs[index]``.

    ``u`` is an array shaped like the output (or a list of them, one per output). The step
    is the one the input's dtype actually took (x + h and x - h rounded to it), so float32
    inputs get no error from rounding the step itself."""
    cotangents = list(u) if isinstance(u, (tuple, list)) else [numpy.asarray(u)]
    x = inputs[index]
    flat = x.array.reshape(-1)
    grad = numpy.zeros(x.size)
    for j in range(x.size):
        old = flat[j].item()
        flat[j] = old + eps
        up = flat[j].item()
        plus = _scalar(fn, inputs, cotangents)
        flat[j] = old - eps
        down = flat[j].item()
        minus = _scalar(fn, inputs, cotangents)
        flat[j] = old
        grad[j] = (plus - minus) / (up - down)
    return grad.reshape(x.shape)


def _numerical_jvp(fn, inputs, tangents, eps):
    """(f(x + h v) - f(x - h v)) / (2 h) for every output, with v given per input position."""
    originals = {i: inputs[i].array for i in tangents}
    shifted = []
    for sign in (1.0, -1.0):
        for i, v in tangents.items():
            x = inputs[i]
            x.array = originals[i] + backend.to_device((sign * eps * v).astype(x.dtype), x.device)
        shifted.append([backend.to_numpy(y.array).astype(numpy.float64) for y in _outputs(fn, inputs)])
    for i, data in originals.items():
        inputs[i].array = data
    return [(p - m) / (2 * eps) for p, m in zip(*shifted)]


def _host_inputs(inputs):
    return [x.numpy().copy() if isinstance(x, Tensor) else x for x in inputs]


def _describe(inputs, i):
    x = inputs[i]
    return f"input {i} (shape {x.shape}, {x.dtype}, {x.device})"


def _check_inputs(name, inputs):
    differentiable = [i for i, x in enumerate(inputs) if isinstance(x, Tensor) and x.requires_grad]
    if not differentiable:
        raise ValueError(f"{name}: inputs: expected at least one Tensor with requires_grad=True, got none")
    for i in differentiable:
        if inputs[i].dtype not in (F32, F64):
            raise TypeError(f"{name}: input {i}: expected dtype float32 or float64, got {inputs[i].dtype}")
    return differentiable


def _promoted(fn, inputs):
    """Float64 copies of the float Tensor arguments and fn's outputs on them, or the reason
    why fn does not run in float64."""
    copies = [Tensor(x.array.astype(numpy.float64), requires_grad=x.requires_grad)
              if isinstance(x, Tensor) and x.dtype.kind == "f" else x for x in inputs]
    try:
        outs = _outputs(fn, copies)
    except Exception as e:  # the function refuses float64: check it in float32
        return None, f"fn raised {type(e).__name__} on float64 inputs ({e})"
    wrong = [str(y.dtype) for y in outs if y.dtype != F64]
    if wrong:
        return None, f"fn returned {', '.join(wrong)} on float64 inputs"
    return copies, None


def _prepare(name, fn, inputs, promote, tolerances):
    """The inputs to differentiate numerically, their tolerances, a label for messages, and the
    float32 inputs whose analytic gradient must then match the float64 one (or None)."""
    inputs = list(inputs)
    differentiable = _check_inputs(name, inputs)
    low = any(inputs[i].dtype == F32 for i in differentiable)
    if promote not in (None, True, False):
        raise ValueError(f"{name}: promote: expected None, True or False, got {promote!r}")
    if not low:
        return inputs, {**DEFAULTS[F64], **tolerances}, "in float64", None
    if promote is not False:
        copies, reason = _promoted(fn, inputs)
        if copies is not None:
            return copies, {**DEFAULTS[F64], **tolerances}, "in float64 (float32 inputs re-run in float64)", inputs
        if promote:
            raise TypeError(f"{name}: promote=True, but fn cannot be re-run in float64: {reason}")
    return inputs, {**DEFAULTS[F32], **tolerances}, "in float32 (differences taken in float32)", None


def _compare_low_precision(name, fn, inputs32, copies, cotangents):
    """The float32 analytic gradient against the float64 one, within float32 rounding."""
    g32 = _vjp(fn, inputs32, cotangents)
    g64 = _vjp(fn, copies, cotangents)
    tol = LOW_PRECISION_FACTOR * numpy.finfo(numpy.float32).eps
    for i, a in g32.items():
        b = g64[i]
        # at least 1: float32 rounds the O(1) intermediate values of a backward pass (1 - tanh^2
        # cancels to 5e-5 at x = 4.6 with an absolute error of ~1e-7), whatever the gradient's size
        scale = max(float(numpy.abs(b).max()) if b.size else 0.0, 1.0)
        bad = numpy.abs(a - b) > tol * (scale + numpy.abs(b))
        if bad.any():
            j = numpy.unravel_index(numpy.argmax(numpy.abs(a - b) * bad), a.shape)
            raise GradcheckError(
                f"{name}: the float32 gradient of {_describe(inputs32, i)} differs from the float64 one "
                f"(the same function re-run in float64) beyond float32 rounding at {int(bad.sum())} of {a.size} "
                f"entries; worst at index {tuple(int(k) for k in j)}: float32 {a[j]:.8g}, float64 {b[j]:.8g}, "
                f"relative error {float(relative_error(a[j], b[j])):.3g} (tolerance "
                f"{tol:.3g} * (max(max|g64|, 1) + |g64|)); input {i} was\n{_show(inputs32[i].numpy())}",
                i, tuple(int(k) for k in j), float(a[j]), float(b[j]), float(relative_error(a[j], b[j])),
                _host_inputs(inputs32))


def _cotangents(fn, inputs, grad_output, rng, round_to_float32):
    outs = _outputs(fn, inputs)
    if grad_output is None:
        us = [rng.standard_normal(y.shape) for y in outs]
    else:
        given = list(grad_output) if isinstance(grad_output, (tuple, list)) and len(outs) > 1 else [grad_output]
        us = [numpy.asarray(g.numpy() if isinstance(g, Tensor) else backend.to_numpy(g), dtype=numpy.float64)
              for g in given]
        if len(us) != len(outs) or any(u.shape != y.shape for u, y in zip(us, outs)):
            raise ValueError(f"gradcheck: grad_output: expected shapes {[y.shape for y in outs]}, "
                             f"got {[u.shape for u in us]}")
    # float32 paths see u rounded to float32: give every path exactly those values
    return [u.astype(numpy.float32).astype(numpy.float64) for u in us] if round_to_float32 else us


def gradcheck(fn, *inputs, eps=None, atol=None, rtol=None, grad_output=None, promote=None,
              max_entries=400, n_directions=8, seed=0):
    """Check the gradients of ``fn(*inputs)`` with respect to every Tensor input that requires grad.

    ``fn`` returns a Tensor or a tuple of Tensors; ``grad_output`` is the cotangent u (an
    array or Tensor shaped like the output, or one per output; random by default). Inputs
    with at most ``max_entries`` elements are checked entry by entry, |analytic - numeric| <=
    atol + rtol |numeric|; larger ones along ``n_directions`` random tangents (see
    :func:`check_jvp_vjp`). ``eps``, ``atol``, ``rtol`` default by dtype and ``promote``
    (None: re-run float32 in float64 when possible; True: require it; False: never) as the
    module docstring states.

    Returns True, or raises :class:`GradcheckError` naming the input, the worst entry (index,
    analytic, numeric, relative error) and the input's values.
    """
    tolerances = {k: v for k, v in dict(eps=eps, atol=atol, rtol=rtol).items() if v is not None}
    checked, tol, label, inputs32 = _prepare("gradcheck", fn, inputs, promote, tolerances)
    rng = numpy.random.default_rng(seed)
    cotangents = _cotangents(fn, checked, grad_output, rng, any(
        isinstance(x, Tensor) and x.dtype == F32 for x in inputs))
    analytic = _vjp(fn, checked, cotangents)
    for i, a in analytic.items():
        x = checked[i]
        if x.size <= max_entries:
            numeric = numerical_gradient(fn, checked, i, cotangents, tol["eps"])
            excess = numpy.abs(a - numeric) / (tol["atol"] + tol["rtol"] * numpy.abs(numeric))
            bad = excess > 1
            if bad.any():
                j = numpy.unravel_index(numpy.argmax(excess), x.shape)
                rel = float(relative_error(a[j], numeric[j]))
                raise GradcheckError(
                    f"gradcheck: gradient of {_describe(checked, i)} is wrong at {int(bad.sum())} of {x.size} "
                    f"entries, checked {label} with h={tol['eps']:g}, atol={tol['atol']:g}, rtol={tol['rtol']:g}; "
                    f"worst at index {tuple(int(k) for k in j)}: analytic {a[j]:.8g}, numerical {numeric[j]:.8g}, "
                    f"relative error {rel:.3g}; input {i} was\n{_show(x.numpy())}",
                    i, tuple(int(k) for k in j), float(a[j]), float(numeric[j]), rel, _host_inputs(checked))
        else:
            _jvp_vjp("gradcheck", fn, checked, [cotangents], [{i: a}], n_directions, tol, rng, label)
    if inputs32 is not None:
        _compare_low_precision("gradcheck", fn, list(inputs), checked, cotangents)
    return True


def _jvp_vjp(name, fn, inputs, cotangent_sets, vjps, n_tangents, tol, rng, label):
    """<u_r, J v_t> (numerical) against <J^T u_r, v_t> (backward) for each random tangent v_t
    and each cotangent set u_r; ``vjps[r]`` holds J^T u_r for the input positions perturbed."""
    positions = sorted(vjps[0])
    n = sum(inputs[i].size for i in positions)
    for t in range(n_tangents):
        tangent = {i: rng.standard_normal(inputs[i].shape) for i in positions}
        jv = _numerical_jvp(fn, inputs, tangent, tol["eps"])
        for r, (us, g) in enumerate(zip(cotangent_sets, vjps)):
            numeric = sum(float((u * d).sum()) for u, d in zip(us, jv))
            analytic = sum(float((g[i] * v).sum()) for i, v in tangent.items())
            if abs(analytic - numeric) > tol["atol"] * numpy.sqrt(n) + tol["rtol"] * abs(numeric):
                rel = float(relative_error(analytic, numeric))
                raise GradcheckError(
                    f"{name}: <J^T u, v> != <u, J v> for {', '.join(_describe(inputs, i) for i in positions)}, "
                    f"checked {label} with h={tol['eps']:g}, atol={tol['atol']:g} * sqrt({n}), rtol={tol['rtol']:g}, "
                    f"along random tangent {t} and cotangent {r}: analytic (backward) {analytic:.8g}, "
                    f"numerical (finite-difference jvp) {numeric:.8g}, relative error {rel:.3g}; inputs were\n"
                    + "\n".join(f"input {i}: {_show(inputs[i].numpy())}" for i in positions),
                    positions[0], None, analytic, numeric, rel, _host_inputs(inputs))


def check_jvp_vjp(fn, *inputs, n_tangents=4, n_cotangents=4, eps=None, atol=None, rtol=None, promote=None, seed=0):
    """The dot-product test <u, J v> = <J^T u, v> for ``n_cotangents`` random cotangents u
    (one backward pass each) and ``n_tangents`` random tangents v over all differentiable
    inputs at once (one central difference of the outputs each): cheap for functions with many
    inputs and many outputs, where checking every entry is not. Precision, tolerances and
    ``promote`` as in :func:`gradcheck` (``atol`` is scaled by sqrt(number of input entries)).
    Returns True or raises :class:`GradcheckError`."""
    tolerances = {k: v for k, v in dict(eps=eps, atol=atol, rtol=rtol).items() if v is not None}
    checked, tol, label, inputs32 = _prepare("check_jvp_vjp", fn, inputs, promote, tolerances)
    rng = numpy.random.default_rng(seed)
    low = any(isinstance(x, Tensor) and x.dtype == F32 for x in inputs)
    cotangent_sets = [_cotangents(fn, checked, None, rng, low) for _ in range(n_cotangents)]
    vjps = [_vjp(fn, checked, us) for us in cotangent_sets]
    _jvp_vjp("check_jvp_vjp", fn, checked, cotangent_sets, vjps, n_tangents, tol, rng, label)
    if inputs32 is not None:
        for us in cotangent_sets:
            _compare_low_precision("check_jvp_vjp", fn, list(inputs), checked, us)
    return True
