"""Auto-PGD (Croce and Hein, ICML 2020): PGD with momentum and a step size that adapts itself.

One run of ``steps`` iterations on a batch, loss f to ascend, projection P onto the eps-ball
and [0, 1], momentum alpha = 0.75, step size eta starting at 2 eps:

    z(k+1) = P(x(k) + eta * s(grad f(x(k))))          s = sign (L-inf) or g / ||g||_2 (L2)
    x(k+1) = P(x(k) + alpha (z(k+1) - x(k)) + (1 - alpha) (x(k) - x(k-1)))   (alpha = 1 at k = 0)

At the checkpoints w_j = ceil(p_j * steps), p_0 = 0, p_1 = 0.22,
p_(j+1) = p_j + max(p_j - p_(j-1) - 0.03, 0.06), eta is halved, and the iterate restarts from
the best point found so far, wherever either condition holds (per example):

1. the loss went up in fewer than rho = 0.75 of the steps since the last checkpoint:
   sum_{i = w_(j-1)}^{w_j - 1} [f(x(i+1)) > f(x(i))] < rho (w_j - w_(j-1));
2. eta was not halved at the last checkpoint and the best loss has not improved since.

Losses: cross-entropy or DLR (``dlr_loss``); the targeted variant runs once per target, the
classes ranked 2 to n_target_classes + 1 by the clean logits, ascending the targeted DLR (or
minus the cross-entropy of the target). Success is always untargeted (the true class is no
longer predicted): the attack serves robust accuracy. Each example keeps a point where the
attack succeeded, else its highest-loss point; examples the model already misclassifies are
returned unchanged. On a deterministic model an example that succeeds leaves the batch (the
others' runs are unchanged); on a randomized one (eot_samples > 1) it runs on, keeping its
misclassified iterate of highest mean loss.
"""
import dataclasses

import numpy
from tqdm.auto import tqdm

from .. import backend
from ..autograd import no_grad
from ..functional import cross_entropy
from ..tensor import Tensor
from ..validation import check_number
from .attacks import attack_mode, attack_rng, dlr_loss_targeted, input_gradient, prepare_inputs
from .norms import project, random_start_point, resolve_norm, step_direction

MOMENTUM, RHO = 0.75, 0.75


def checkpoints(steps):
    """The iterations (1-based counts of steps done) at which APGD may halve its step size."""
    marks, p_prev, p = [], 0.0, 0.22
    while True:
        w = int(numpy.ceil(p * steps - 1e-9))  # 0.41 * 100 is 41.000000000000004
        if w > steps:
            return marks
        if not marks or w > marks[-1]:
            marks.append(w)
        p_prev, p = p, p + max(p - p_prev - 0.03, 0.06)


def halves_step(ups, period, halved_before, best, best_before):
    """Per example, whether APGD halves its step size at a checkpoint: the loss rose in fewer
    than rho * period of the ``period`` steps since the last one (``ups`` counts them), or the
    step was not halved last time (``halved_before``) and the best loss has not improved."""
    return (ups < RHO * period) | (~halved_before & (best <= best_before))


def mean_logits(model, x, eot_samples=1):
    """Logits of ``model`` on x (an array), averaged over ``eot_samples`` passes, no graph."""
    with no_grad():
        total = None
        for _ in range(eot_samples):
            z = model(Tensor(x)).array
            total = z if total is None else total + z
    return total / eot_samples


@dataclasses.dataclass
class APGDState:
    """The examples of one APGD run still being attacked, one row each (device arrays): their
    rows ``idx`` in the batch, clean inputs ``x0`` and labels ``y``; the iterate ``cur`` and
    the one before, ``prev``; the gradient ``g`` and loss ``f`` at ``cur``; the best point so
    far ``best_x`` with its loss ``best_f`` (float64) and gradient ``best_g``; the step size
    ``eta``; ``ups``, the steps since the last checkpoint that raised the loss; and what the
    last checkpoint saw: the best loss ``best_at_mark`` and whether it halved eta
    (``halved_at_mark``)."""
    idx: object
    x0: object
    y: object
    cur: object
    prev: object
    g: object
    f: object
    best_x: object
    best_f: object
    best_g: object
    eta: object
    ups: object
    best_at_mark: object
    halved_at_mark: object

    @classmethod
    def start(cls, x0, y, cur, g, f, eps):
        """The state at the random start ``cur`` (gradient g, loss f) of every example of the
        batch: eta = 2 eps, the start is the best point, and the first checkpoint compares
        with the start's loss as if eta had been halved (so only condition 1 applies)."""
        xp = backend.get_array_module(x0)
        n = len(y)
        return cls(idx=xp.arange(n), x0=x0, y=y, cur=cur, prev=cur.copy(), g=g, f=f, best_x=cur.copy(),
                   best_f=f.astype(numpy.float64), best_g=g.copy(), eta=xp.full(n, 2.0 * eps, dtype=x0.dtype),
                   ups=xp.zeros(n, dtype=numpy.int64), best_at_mark=f.astype(numpy.float64),
                   halved_at_mark=xp.ones(n, dtype=bool))

    def select(self, mask):
        """The state of the examples where ``mask`` (a boolean array over the rows) is true."""
        return APGDState(**{field.name: getattr(self, field.name)[mask] for field in dataclasses.fields(self)})


def _run(model, x0, y, eps, norm, steps, loss_fn, eot_samples, generator, bar):
    """One APGD run on the batch (x0, y) (arrays); returns (points, succeeded)."""
    xp = backend.get_array_module(x0)
    n = len(y)
    shape = (-1,) + (1,) * (x0.ndim - 1)
    out = x0.copy()
    won = xp.zeros(n, dtype=bool)
    marks = set(checkpoints(steps))

    cur = random_start_point(x0, eps, norm, generator=generator)
    g, z, f = input_gradient(model, Tensor(cur), Tensor(y), loss_fn, eot_samples)
    st = APGDState.start(x0, y, cur, g, f, eps)
    last_mark = 0

    won_f = xp.full(n, -xp.inf)

    def retire(st, z, f):
        """Record the examples the model now misclassifies. A deterministic model's are done and
        leave the batch. A randomized model's keep going and keep their misclassified iterate of
        highest (mean) loss: the one deepest past the boundary, which a fresh noisy pass is
        least likely to classify correctly."""
        hit = z.argmax(axis=1) != st.y
        if hit.any():
            rows = st.idx[hit]
            deeper = f[hit] > won_f[rows]
            out[rows[deeper]], won_f[rows[deeper]] = st.cur[hit][deeper], f[hit][deeper]
            won[rows] = True
            if eot_samples == 1:
                st = st.select(~hit)
        return st

    st = retire(st, z, f)
    for k in range(steps):
        if len(st.idx) == 0:
            break
        a = 1.0 if k == 0 else MOMENTUM
        cur, prev, eta = st.cur, st.prev, st.eta.reshape(shape)
        zk = project(cur + eta * step_direction(st.g, norm).astype(cur.dtype), st.x0, eps, norm)
        nxt = project(cur + a * (zk - cur) + (1 - a) * (cur - prev), st.x0, eps, norm)
        st.prev, st.cur = cur, nxt
        g, z, f = input_gradient(model, Tensor(nxt), Tensor(st.y), _rows(loss_fn, st.idx), eot_samples)
        st.ups += f > st.f
        st.g, st.f = g, f
        better = f > st.best_f
        st.best_x[better], st.best_g[better], st.best_f[better] = nxt[better], g[better], f[better]
        if k + 1 in marks:
            halve = halves_step(st.ups, k + 1 - last_mark, st.halved_at_mark, st.best_f, st.best_at_mark)
            st.eta[halve] /= 2
            st.cur[halve], st.g[halve], st.f[halve] = st.best_x[halve], st.best_g[halve], \
                st.best_f[halve].astype(st.f.dtype)
            st.halved_at_mark, st.best_at_mark = halve, st.best_f.copy()
            st.ups[:] = 0
            last_mark = k + 1
        st = retire(st, z, f)
        if bar is not None:
            bar.update(1)
    lost = ~won[st.idx]
    out[st.idx[lost]] = st.best_x[lost]
    return out, won


def _rows(loss_fn, idx):
    """``loss_fn`` restricted to the rows ``idx`` of the batch (targets are per row)."""
    return loss_fn if not hasattr(loss_fn, "rows") else loss_fn.rows(idx)


class _Targeted:
    """A targeted loss with one target per example, restrictable to a subset of rows."""

    def __init__(self, loss, target):
        self.loss, self.target = loss, target

    def rows(self, idx):
        return _Targeted(self.loss, self.target[idx])

    def __call__(self, logits, y):
        if self.loss == "dlr":
            return dlr_loss_targeted(logits, y, self.target)
        return -cross_entropy(logits, Tensor(self.target), reduction="none")


def apgd(model, x, y, eps, norm="inf", steps=100, restarts=1, loss="ce", targeted=False, n_target_classes=9,
         eot_samples=1, seed=None, progress=False):
    """Auto-PGD, L-inf or L2, untargeted ('ce' or 'dlr') or targeted over the top
    ``n_target_classes`` other classes (APGD-T; 'dlr' or 'ce'); see the module docstring.
    ``eot_samples`` > 1 averages each gradient and loss over that many forward passes, for
    randomized models. ``seed`` fixes the random starts (None: the library's generator).
    Returns a detached Tensor of adversarial inputs on the model's device."""
    op = "apgd"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    check_number(f"{op}: restarts", restarts, minimum=1, integer=True)
    check_number(f"{op}: n_target_classes", n_target_classes, minimum=1, integer=True)
    check_number(f"{op}: eot_samples", eot_samples, minimum=1, integer=True)
    if loss not in ("ce", "dlr"):
        raise ValueError(f"{op}: loss must be 'ce' or 'dlr', got {loss!r}")
    if not isinstance(targeted, bool):
        raise TypeError(f"{op}: targeted must be True or False, got {targeted!r}")
    if seed is not None:
        check_number(f"{op}: seed", seed, minimum=0, integer=True)
    x, y = prepare_inputs(model, x, y, op)
    xp = backend.get_array_module(x.array)
    generator = attack_rng(xp, seed)
    best = x.array.copy()
    with attack_mode(model):
        z = mean_logits(model, x.array, eot_samples)
        if targeted and n_target_classes > z.shape[1] - 1:
            raise ValueError(f"{op}: n_target_classes must be <= {z.shape[1] - 1} (classes - 1), got {n_target_classes}")
        robust = z.argmax(axis=1) == y.array
        ranked = xp.argsort(-z, axis=1, kind="stable")
        runs = [(t, r) for t in range(n_target_classes) for r in range(restarts)] if targeted else \
            [(None, r) for r in range(restarts)]
        bar = tqdm(total=len(runs) * steps, desc=f"apgd-{'t' if targeted else loss}", leave=False,
                   disable=not progress)
        for t, _ in runs:
            rows = xp.nonzero(robust)[0]
            if len(rows) == 0:
                break
            loss_fn = _Targeted(loss, ranked[rows, t + 1]) if targeted else loss
            points, won = _run(model, x.array[rows], y.array[rows], eps, norm, steps, loss_fn, eot_samples,
                               generator, bar if progress else None)
            best[rows] = points  # a later run's point replaces an earlier one only on still-robust rows
            robust[rows[won]] = False
        bar.close()
    return Tensor(best)
