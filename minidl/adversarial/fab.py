"""Targeted FAB, the fast adaptive boundary attack (Croce and Hein, ICML 2020): a
minimum-norm attack that walks along linearised decision boundaries.

For a target class t, let g(x) = z_y(x) - z_t(x) (positive while y beats t). At the iterate
x(i) the boundary g = 0 is replaced by its linearisation, the hyperplane
pi = {v : g(x(i)) + grad g(x(i)) . (v - x(i)) = 0}. Let proj(v) be the point of pi nearest to v
in the Lp norm that stays in [0, 1]^d (``min_norm_to_hyperplane``), and

    d    = proj(x(i)) - x(i)          (a step that crosses the boundary from here)
    d0   = proj(x_orig) - x_orig      (the same hyperplane, reached from the original input)
    a    = min(||d|| / (||d|| + ||d0||), alpha_max)
    x(i+1) = clip01((1 - a) (x(i) + eta d) + a (x_orig + eta d0))

The overshoot eta = 1.05 lands beyond the boundary; the pull a toward x_orig keeps the point
close to the input. When x(i+1) is misclassified, it is kept if it is the nearest so far and
the iterate moves back toward the input, x(i+1) <- x_orig + beta (x(i+1) - x_orig), beta = 0.9,
so the next steps look for a closer crossing. Targets are the classes ranked 2 to
n_target_classes + 1 by the clean logits; each restart after the first starts at a random point
of the box of half the best distance found (or eps) around x_orig.
"""
import numpy
from tqdm.auto import tqdm

from .. import backend
from ..autograd import no_grad
from ..tensor import Tensor
from ..validation import check_number
from .attacks import attack_mode, attack_rng, input_gradient, onehot, prepare_inputs
from .norms import per_example_norm, random_start_point, resolve_norm
from .apgd import mean_logits

ALPHA_MAX, ETA, BETA = 0.1, 1.05, 0.9


def min_norm_to_hyperplane(x, w, b, norm):
    """The smallest step d (Lp norm, p = inf or 2) with w . (x + d) + b = 0 and x + d in
    [0, 1]^d, per example; where the box makes the hyperplane unreachable, the step that gets
    closest (every coordinate at its bound). x, w: (n, ...); b: (n,). float64.

    With c = -(w . x + b) the change needed, coordinate i moves in direction
    s_i = sign(c) sign(w_i), at most r_i (its distance to the box's bound that way):
    * L-inf: d_i = s_i min(t, r_i); progress sum_i |w_i| min(t, r_i);
    * L2 (the KKT conditions give d_i = clip(lambda w_i)): d_i = s_i |w_i| min(t, r_i / |w_i|);
      progress sum_i w_i^2 min(t, r_i / |w_i|).
    Both are sum_i a_i min(t, b_i), piecewise linear and nondecreasing in t: sorting the
    breakpoints b_i gives the smallest t with progress |c| exactly."""
    xp = backend.get_array_module(x)
    n = x.shape[0]
    xf, wf = x.reshape(n, -1).astype(numpy.float64), w.reshape(n, -1).astype(numpy.float64)
    c = -((wf * xf).sum(axis=1) + b.astype(numpy.float64))
    s = xp.sign(c)[:, None] * xp.sign(wf)
    room = xp.where(s > 0, 1 - xf, xp.where(s < 0, xf, 0))
    aw = xp.abs(wf)
    if norm == "inf":
        weight, bound = aw, room
    else:
        weight, bound = aw ** 2, xp.where(aw > 0, room / xp.where(aw > 0, aw, 1), 0)
    order = xp.argsort(bound, axis=1)
    bs, ws = xp.take_along_axis(bound, order, axis=1), xp.take_along_axis(weight, order, axis=1)
    cum_wb, cum_w = xp.cumsum(ws * bs, axis=1), xp.cumsum(ws, axis=1)
    total = cum_w[:, -1:]
    progress = cum_wb + bs * (total - cum_w)  # progress at t = each sorted breakpoint
    need = xp.abs(c)[:, None]
    k = (progress < need).sum(axis=1)
    feasible = k < bs.shape[1]
    kc = xp.minimum(k, bs.shape[1] - 1)[:, None]
    before_wb = xp.where(kc > 0, xp.take_along_axis(cum_wb, xp.maximum(kc - 1, 0), axis=1), 0)
    before_w = xp.where(kc > 0, xp.take_along_axis(cum_w, xp.maximum(kc - 1, 0), axis=1), 0)
    rest = total - before_w
    t = xp.where(rest > 0, (need - before_wb) / xp.where(rest > 0, rest, 1), 0)
    t = xp.where(feasible[:, None], t, bs[:, -1:])
    d = s * xp.minimum(t, bound) * (1 if norm == "inf" else aw)
    return d.reshape(x.shape)


def _lp(a, norm):
    xp = backend.get_array_module(a)
    flat = a.reshape(a.shape[0], -1)
    return xp.abs(flat).max(axis=1) if norm == "inf" else per_example_norm(a).reshape(-1)


class _Gap:
    """g = z_y - z_t per example, for one target per row."""

    def __init__(self, target):
        self.target = target

    def __call__(self, logits, y):
        return (logits * onehot(y.array, logits)).sum(axis=1) - (logits * onehot(self.target, logits)).sum(axis=1)


def _run(model, x0, y, target, start, steps, norm, bar):
    """One targeted FAB run; returns (nearest misclassified points, their distances; inf where none)."""
    xp = backend.get_array_module(x0)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    best = x0.copy()
    dist = xp.full(len(y), xp.inf)
    cur = start.copy()
    gap, yt = _Gap(target), Tensor(y)
    for _ in range(steps):
        g, _, f = input_gradient(model, Tensor(cur), yt, gap)
        g = g.astype(numpy.float64)
        b = f.astype(numpy.float64) - (g * cur).reshape(len(y), -1).sum(axis=1)  # pi: g . v + b = 0
        d = min_norm_to_hyperplane(cur, g, b, norm)
        d0 = min_norm_to_hyperplane(x0, g, b, norm)
        n1, n0 = _lp(d, norm), _lp(d0, norm)
        a = xp.minimum(n1 / xp.maximum(n1 + n0, 1e-12), ALPHA_MAX).reshape(shape)
        cur = xp.clip((1 - a) * (cur + ETA * d) + a * (x0 + ETA * d0), 0, 1).astype(x0.dtype)
        with no_grad():
            hit = mean_logits(model, cur).argmax(axis=1) != y
        if hit.any():
            r = _lp(cur - x0, norm)
            closer = hit & (r < dist)
            best[closer], dist[closer] = cur[closer], r[closer]
            cur[hit] = x0[hit] + BETA * (cur[hit] - x0[hit])
        if bar is not None:
            bar.update(1)
    return best, dist


def fab(model, x, y, eps=None, norm="inf", steps=100, n_target_classes=9, restarts=1, seed=None, progress=False):
    """Targeted FAB (module docstring), L-inf or L2. Each example gets its nearest misclassified
    point over all targets and restarts. With ``eps``, points farther than eps are replaced by x
    (the attack failed within the budget), and examples broken within eps are not attacked
    with further targets; without, every point FAB found is returned (x where none).
    Returns a detached Tensor."""
    op = "fab"
    norm = resolve_norm(norm, op)
    if eps is not None:
        check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    check_number(f"{op}: n_target_classes", n_target_classes, minimum=1, integer=True)
    check_number(f"{op}: restarts", restarts, minimum=1, integer=True)
    if seed is not None:
        check_number(f"{op}: seed", seed, minimum=0, integer=True)
    x, y = prepare_inputs(model, x, y, op)
    xp = backend.get_array_module(x.array)
    gen = attack_rng(xp, seed)
    best = x.array.copy()
    dist = xp.full(len(y), xp.inf)
    with attack_mode(model):
        z = mean_logits(model, x.array)
        if n_target_classes > z.shape[1] - 1:
            raise ValueError(f"{op}: n_target_classes must be <= {z.shape[1] - 1} (classes - 1), got {n_target_classes}")
        wrong = z.argmax(axis=1) != y.array
        dist[wrong] = 0
        ranked = xp.argsort(-z, axis=1, kind="stable")
        bar = tqdm(total=n_target_classes * restarts * steps, desc="fab-t", leave=False, disable=not progress)
        for t in range(n_target_classes):
            for r in range(restarts):
                todo = dist > (0 if eps is None else eps)
                rows = xp.nonzero(todo)[0]
                if len(rows) == 0:
                    break
                x0 = x.array[rows]
                if r == 0:
                    start = x0
                else:  # a random point of the box of half the best distance so far (eps if none)
                    radius = xp.minimum(dist[rows], xp.inf if eps is None else eps)
                    radius = xp.where(xp.isfinite(radius), radius, 0.0 if eps is None else eps)
                    unit = random_start_point(xp.zeros_like(x0), 1.0, "inf", clip=False, generator=gen)
                    start = xp.clip(x0 + 0.5 * radius.reshape((-1,) + (1,) * (x0.ndim - 1)).astype(x0.dtype) * unit,
                                    0, 1)
                points, d = _run(model, x0, y.array[rows], ranked[rows, t + 1], start, steps, norm,
                                 bar if progress else None)
                closer = d < dist[rows]
                best[rows[closer]], dist[rows[closer]] = points[closer], d[closer]
        bar.close()
    if eps is not None:
        far = dist > eps
        best[far] = x.array[far]
    return Tensor(best)
