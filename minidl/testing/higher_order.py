"""Second derivatives: :func:`gradgradcheck`, and :func:`hvp` and :func:`hessian` (PyTorch's
``torch.autograd.gradgradcheck`` and ``torch.autograd.functional.hvp``/``hessian``).

For a function f of tensors x_1..x_k and a cotangent u shaped like its output, the first
derivative is the vector-Jacobian product G(x, u) = J(x)^T u (one backward pass). With
``create_graph=True`` G is itself a graph, and its derivatives are what
:func:`gradgradcheck` checks: for random v shaped like G, the scalar s(x, u) = <v, G(x, u)>
has the gradient (H v, J v) with respect to (x, u), H the Hessian of <u, f>. Along random
tangents w of each input (and of u) the directional derivative <grad s, w> is compared with the
central difference of s computed with the first-order backward pass,

    (s(x + h w) - s(x - h w)) / (2 h),

exact up to O(h^2), in float64 (float32 inputs are promoted). Checking the derivative with
respect to u as well catches a ``backward_graph`` that treats the upstream gradient as a
constant; checking G's values against the first-order backward's catches one that computes
another function.
"""
import numpy

from .. import backend
from ..autograd import grad
from ..tensor import Tensor
from .gradcheck import GradcheckError

F64 = numpy.dtype(numpy.float64)


def _promoted(inputs):
    """float64 leaf copies of the Tensor inputs (requires_grad kept); other arguments as they are."""
    out = []
    for x in inputs:
        if isinstance(x, Tensor) and x.dtype.kind == "f":
            out.append(Tensor(x.array.astype(F64), requires_grad=x.requires_grad))
        elif isinstance(x, Tensor):
            out.append(Tensor(x.array))
        else:
            out.append(x)
    return out


def _zeros_for(grads, tensors):
    return [g if g is not None else Tensor(backend.get_array_module(x.array).zeros(x.shape, x.dtype))
            for g, x in zip(grads, tensors)]


def gradgradcheck(fn, *inputs, grad_output=None, eps=1e-6, atol=1e-5, rtol=1e-4, n_directions=3, seed=0):
    """Check the second derivatives of ``fn(*inputs)`` (a Tensor) against finite differences of
    its first derivatives, with respect to every Tensor input that requires grad and to the
    cotangent ``grad_output`` (random by default), along ``n_directions`` random tangents
    each. Returns True or raises :class:`GradcheckError`."""
    checked = _promoted(inputs)
    wrt = [i for i, x in enumerate(checked) if isinstance(x, Tensor) and x.requires_grad]
    if not wrt:
        raise ValueError("gradgradcheck: inputs: expected at least one Tensor with requires_grad=True, got none")
    xs = [checked[i] for i in wrt]
    out = fn(*checked)
    if not isinstance(out, Tensor):
        raise TypeError(f"gradgradcheck: fn must return a Tensor, got {type(out).__name__}")
    xp = backend.get_array_module(out.array)
    rng = numpy.random.default_rng(seed)
    u0 = (rng.standard_normal(out.shape) if grad_output is None else
          backend.to_numpy(grad_output.array if isinstance(grad_output, Tensor) else grad_output))
    u0 = xp.asarray(numpy.asarray(u0, dtype=F64))
    v = [xp.asarray(rng.standard_normal(x.shape)) for x in xs]

    def s_first_order(arrays, u):
        """<v, G> with the first-order backward pass, at inputs ``arrays`` and cotangent u."""
        trial = list(checked)
        for i, a in zip(wrt, arrays):
            trial[i] = Tensor(xp.asarray(a), requires_grad=True)
        y = fn(*trial)
        gs = grad(y, [trial[i] for i in wrt], grad_outputs=u, allow_unused=True)
        return sum(float((g.array * vi).sum()) for g, vi in zip(gs, v) if g is not None)

    # G with a graph, and its values against the first-order backward pass
    u = Tensor(u0.copy(), requires_grad=True)
    gs = grad(out, xs, grad_outputs=u, create_graph=True, allow_unused=True)
    first = grad(fn(*checked), xs, grad_outputs=u0, allow_unused=True)
    for k, (g, g1) in enumerate(zip(gs, first)):
        if (g is None) != (g1 is None) or (g is not None and not numpy.allclose(
                backend.to_numpy(g.array), backend.to_numpy(g1.array), rtol=1e-10, atol=1e-12)):
            raise GradcheckError(f"gradgradcheck: the gradient of input {wrt[k]} built with create_graph=True "
                                 "differs from the first-order backward pass's", input_index=wrt[k])
    terms = [(g * Tensor(vi)).sum() for g, vi in zip(gs, v) if g is not None and g.requires_grad]
    if not terms:
        return True  # the first derivative is constant: every second derivative is 0
    s = terms[0]
    for t in terms[1:]:
        s = s + t
    analytic = _zeros_for(grad(s, xs + [u], allow_unused=True), xs + [u])
    base = [x.array for x in xs]
    for k in range(len(xs) + 1):  # each input, then the cotangent u
        for _ in range(n_directions):
            w = xp.asarray(rng.standard_normal(base[k].shape if k < len(xs) else u0.shape))
            along = float((analytic[k].array * w).sum())
            shifted = []
            for sign in (1.0, -1.0):
                arrays = [a + sign * eps * w if j == k else a for j, a in enumerate(base)]
                shifted.append(s_first_order(arrays, xp.asarray(u0 + sign * eps * w) if k == len(xs) else u0))
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            if abs(along - numeric) > atol + rtol * abs(numeric):
                what = f"input {wrt[k]}" if k < len(xs) else "the cotangent (grad_output)"
                raise GradcheckError(
                    f"gradgradcheck: second derivative with respect to {what} along a random direction: "
                    f"analytic {along!r}, numeric {numeric!r}", input_index=wrt[k] if k < len(xs) else None,
                    analytic=along, numeric=numeric)
    return True


def _as_tuple(inputs):
    return (tuple(inputs), True) if isinstance(inputs, (tuple, list)) else ((inputs,), False)


def hvp(func, inputs, v):
    """(func(inputs), H v): the Hessian of the scalar ``func`` at ``inputs`` (a Tensor or a tuple)
    times ``v`` (shaped like ``inputs``), by differentiating <grad func, v> once more (two
    backward passes, no Hessian formed). Both results are detached; v may be a Tensor or array."""
    xs, many = _as_tuple(inputs)
    vs, _ = _as_tuple(v)
    if len(vs) != len(xs):
        raise ValueError(f"hvp: v has {len(vs)} parts for {len(xs)} inputs")
    leaves = [Tensor(x.array, requires_grad=True) for x in xs]
    y = func(*leaves)
    if not isinstance(y, Tensor) or y.size != 1:
        raise ValueError(f"hvp: func must return a one-element Tensor, got {getattr(y, 'shape', type(y).__name__)}")
    gs = grad(y, leaves, create_graph=True, allow_unused=True)
    terms = []
    for g, x, vi in zip(gs, leaves, vs):
        vi = vi.array if isinstance(vi, Tensor) else vi
        if tuple(vi.shape) != x.shape:
            raise ValueError(f"hvp: v has shape {tuple(vi.shape)}, expected {x.shape}")
        if g is not None and g.requires_grad:
            terms.append((g * Tensor(backend.to_device(vi, x.device).astype(x.dtype))).sum())
    if terms:
        s = terms[0]
        for t in terms[1:]:
            s = s + t
        out = _zeros_for(grad(s, leaves, allow_unused=True), leaves)
    else:
        out = _zeros_for([None] * len(leaves), leaves)
    return y.detach(), (tuple(out) if many else out[0])


def hessian(func, inputs, max_entries=4096):
    """The Hessian of the scalar ``func`` at ``inputs``: for one Tensor x an array-valued Tensor of
    shape x.shape + x.shape; for a tuple, H[i][j] of shape x_i.shape + x_j.shape. One backward
    pass per entry of the inputs (small inputs only: at most ``max_entries`` in all)."""
    xs, many = _as_tuple(inputs)
    total = sum(x.size for x in xs)
    if total > max_entries:
        raise ValueError(f"hessian: the inputs have {total} entries, more than max_entries={max_entries}; "
                         "use hvp for large inputs")
    leaves = [Tensor(x.array, requires_grad=True) for x in xs]
    y = func(*leaves)
    if not isinstance(y, Tensor) or y.size != 1:
        raise ValueError(f"hessian: func must return a one-element Tensor, got {getattr(y, 'shape', type(y).__name__)}")
    gs = _zeros_for(grad(y, leaves, create_graph=True, allow_unused=True), leaves)
    blocks = []
    for gi, xi in zip(gs, leaves):
        rows = [[] for _ in leaves]
        flat = gi.reshape(-1)
        for e in range(xi.size):
            if flat.requires_grad:
                row = _zeros_for(grad(flat[e], leaves, allow_unused=True), leaves)
            else:
                row = _zeros_for([None] * len(leaves), leaves)
            for j, r in enumerate(row):
                rows[j].append(r.array)
        xp = backend.get_array_module(xi.array)
        blocks.append(tuple(Tensor(xp.stack(r).reshape(xi.shape + xj.shape)) for r, xj in zip(rows, leaves)))
    return tuple(blocks) if many else blocks[0][0]
