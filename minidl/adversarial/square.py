"""Square Attack (Andriushchenko, Croce, Flammarion and Hein, ECCV 2020): a random search that
needs only the model's scores, never its gradient, so masked gradients cannot stop it.

Each query changes the perturbation inside one random square window of side s and keeps the
change only if the margin loss L(x) = max_{j != y} z_j - z_y went up; an example stops once
L > 0 (misclassified). The window side follows the fraction p of changed pixels,
s = round(sqrt(p * c h w / c)), and p is halved on the paper's schedule (iterations rescaled
to a 10,000-query budget): p_init until 10, /2 until 50, /4 until 200, /8 until 500, /16
until 1,000, /32 until 2,000, /64 until 4,000, /128 until 6,000, /256 until 8,000, then /512.

* L-inf: start with vertical stripes, x + eps * (+-1 per column and channel); a query sets the
  window (all channels) to x +- eps, one sign per channel, on the eps-box's vertices.
* L2: start with a grid of s x s "pseudo-Gaussian" bumps (weights 1/(r+1)^2 on concentric
  rectangles, upper half positive, lower half negative) of random signs, scaled to norm eps;
  a query moves the mass of a second window into the first one and adds a fresh bump there,
  keeping ||delta||_2 = eps (before clipping to [0, 1]).

Window positions are drawn per example for L-inf, per batch for L2 (the two windows then
slice the whole batch at once).
"""
import numpy
from tqdm.auto import tqdm

from .. import backend
from ..tensor import Tensor
from ..validation import check_number
from .attacks import attack_mode, attack_rng, margin_loss, prepare_inputs
from .norms import per_example_norm, resolve_norm
from .apgd import mean_logits

_SCHEDULE = ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32), (4000, 64), (6000, 128), (8000, 256))


def p_schedule(p_init, query, queries):
    """The fraction of pixels a query changes: p_init halved on the paper's schedule."""
    it = int(query / queries * 10000)
    for until, div in _SCHEDULE:
        if it <= until:
            return p_init / div
    return p_init / 512


def _margin(model, x, y):
    """max_{j != y} z_j - z_y per example (positive: misclassified), float64."""
    return margin_loss(Tensor(mean_logits(model, x)), Tensor(y)).array.astype(numpy.float64)


# NumPy's and CuPy's generators share random(), not choice() or integers()
def _signs(gen, shape, dtype):
    return (2 * (gen.random(shape) < 0.5) - 1).astype(dtype)


def _integers(gen, high, size):
    """Uniform integers in [0, high)."""
    r = gen.random(size)
    return backend.get_array_module(r).minimum((r * high).astype(numpy.int64), high - 1)


def _bump_rectangles(rows, cols, xp):
    """Concentric rectangles around the centre of a rows x cols patch, weights 1/(r+1)^2."""
    delta = numpy.zeros((rows, cols))
    if rows == 0 or cols == 0:
        return xp.asarray(delta)
    cr, cc = rows // 2, cols // 2
    for r in range(max(cr, cc) + 1):
        delta[max(cr - r, 0):min(cr + r + 1, rows), max(cc - r, 0):min(cc + r + 1, cols)] += 1.0 / (r + 1) ** 2
    return xp.asarray(delta / numpy.sqrt((delta ** 2).sum()))


def pseudo_gaussian(s, xp=numpy, flip=False):
    """The s x s L2 Square patch of unit norm: upper half +bump, lower half -bump (transposed
    when ``flip``)."""
    top = _bump_rectangles(s // 2, s, xp)
    bottom = _bump_rectangles(s - s // 2, s, xp)
    patch = xp.concatenate([top, -bottom], axis=0)
    patch = patch / xp.sqrt((patch ** 2).sum())
    return patch.T if flip else patch


def _linf_init(x0, eps, gen):
    n, c, h, w = x0.shape
    return backend.get_array_module(x0).clip(x0 + eps * _signs(gen, (n, c, 1, w), x0.dtype), 0, 1)


def _linf_query(x0, cur, eps, p, gen):
    xp = backend.get_array_module(x0)
    n, c, h, w = x0.shape
    s = min(max(int(round(numpy.sqrt(p * h * w))), 1), h - 1)
    vh, vw = _integers(gen, h - s + 1, n), _integers(gen, w - s + 1, n)
    inside_h = (xp.arange(h)[None, :] >= vh[:, None]) & (xp.arange(h)[None, :] < vh[:, None] + s)
    inside_w = (xp.arange(w)[None, :] >= vw[:, None]) & (xp.arange(w)[None, :] < vw[:, None] + s)
    window = inside_h[:, None, :, None] & inside_w[:, None, None, :]
    sign = _signs(gen, (n, c, 1, 1), x0.dtype)
    new = xp.clip(x0 + eps * sign, 0, 1)
    # a square that would leave the image as it is wastes the query: flip its signs
    same = (xp.abs(xp.where(window, new, cur) - cur) < 1e-7).reshape(n, -1).all(axis=1)
    sign[same] = -sign[same]
    return xp.where(window, xp.clip(x0 + eps * sign, 0, 1), cur)


def _l2_init(x0, eps, gen):
    xp = backend.get_array_module(x0)
    n, c, h, w = x0.shape
    s = max(h // 5, 1)
    start = max((h - s * 5) // 2, 0)
    delta = xp.zeros(x0.shape, dtype=numpy.float64)
    patch = pseudo_gaussian(s, xp)
    for i in range(start, h - s + 1, s):
        for j in range(start, w - s + 1, s):
            delta[:, :, i:i + s, j:j + s] += patch * _signs(gen, (n, c, 1, 1), numpy.float64)
    delta = delta / xp.maximum(per_example_norm(delta), 1e-12)
    return xp.clip(x0 + eps * delta.astype(x0.dtype), 0, 1)


def _l2_query(x0, cur, eps, p, gen):
    xp = backend.get_array_module(x0)
    n, c, h, w = x0.shape
    s = min(max(int(round(numpy.sqrt(p * h * w))), 3), h - 1)
    s += 1 - s % 2  # odd, so the bump has a centre
    s = min(s, h)
    delta = (cur - x0).astype(numpy.float64)
    vh, vw, vh2, vw2 = (int(v) for v in _integers(gen, h - s + 1, 4))
    win1 = (slice(None), slice(None), slice(vh, vh + s), slice(vw, vw + s))
    win2 = (slice(None), slice(None), slice(vh2, vh2 + s), slice(vw2, vw2 + s))

    def chan_norm(a):
        return xp.sqrt((a ** 2).sum(axis=(2, 3), keepdims=True))

    both = xp.zeros((1, 1, h, w), dtype=bool)
    both[win1] = True
    both[win2] = True
    image_norm = per_example_norm(delta)
    windows_norm = chan_norm(delta * both)
    old = delta[win1] / (chan_norm(delta[win1]) + 1e-12)
    new = pseudo_gaussian(s, xp, flip=bool(gen.random() > 0.5)) * _signs(gen, (n, c, 1, 1), numpy.float64) + old
    budget = xp.sqrt(xp.maximum(eps ** 2 - image_norm ** 2, 0) / c + windows_norm ** 2)
    new = new / (chan_norm(new) + 1e-12) * budget
    delta[win2] = 0
    delta[win1] = new
    delta = delta / xp.maximum(per_example_norm(delta), 1e-12) * eps
    return xp.clip(x0 + delta.astype(x0.dtype), 0, 1)


def square(model, x, y, eps, norm="inf", queries=5000, p_init=0.8, restarts=1, seed=None, progress=False):
    """Square Attack, L-inf or L2 (module docstring), untargeted, ``queries`` model evaluations
    per example and restart (the start counts as one). p_init = 0.8 is AutoAttack's setting.
    x must be images (n, c, h, w). Each example keeps its misclassified point, else its
    highest-margin one. Returns a detached Tensor of adversarial inputs."""
    op = "square"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: queries", queries, minimum=1, integer=True)
    check_number(f"{op}: p_init", p_init, minimum=0, strict=True)
    if p_init > 1:
        raise ValueError(f"{op}: p_init must be <= 1, got {p_init}")
    check_number(f"{op}: restarts", restarts, minimum=1, integer=True)
    if seed is not None:
        check_number(f"{op}: seed", seed, minimum=0, integer=True)
    x, y = prepare_inputs(model, x, y, op)
    if x.ndim != 4 or x.shape[2] < 2 or x.shape[3] < 2:
        raise ValueError(f"{op}: x must be images of shape (n, c, h >= 2, w >= 2), got {x.shape}")
    xp = backend.get_array_module(x.array)
    gen = attack_rng(xp, seed)
    init, query = (_linf_init, _linf_query) if norm == "inf" else (_l2_init, _l2_query)
    best = x.array.copy()
    with attack_mode(model):
        best_m = _margin(model, best, y.array)
        bar = tqdm(total=restarts * queries, desc="square", leave=False, disable=not progress)
        for _ in range(restarts):
            rows = xp.nonzero(best_m <= 0)[0]
            if len(rows) == 0:
                break
            x0, yr = x.array[rows], y.array[rows]
            cur = init(x0, eps, gen)
            m = _margin(model, cur, yr)
            act = xp.arange(len(rows))  # positions (in rows) of the examples not yet misclassified
            for q in range(1, queries):
                act = act[m[act] <= 0]
                if len(act) == 0:
                    break
                cand = query(x0[act], cur[act], eps, p_schedule(p_init, q, queries), gen)
                mc = _margin(model, cand, yr[act])
                up = mc > m[act]
                cur[act[up]], m[act[up]] = cand[up], mc[up]
                if progress:
                    bar.update(1)
            better = m > best_m[rows]
            best[rows[better]], best_m[rows[better]] = cur[better], m[better]
        bar.close()
    return Tensor(best)
