"""Gradient attacks on classifiers with inputs in [0, 1]: FGSM and PGD, L-inf and L2.

Conventions. ``loss(z, y)`` measures how wrong logits z are for label y: cross-entropy, or the
Carlini-Wagner margin ``max_{j != y} z_j - z_y`` (positive exactly when y is not predicted).
An untargeted attack ascends it for the true label (s = +1); a targeted attack descends it
for the target label (s = -1), i.e. moves toward the target. Norms are per example.

* FGSM:        x' = clip01(x + s * eps * sign(g))          (L2: x + s * eps * g / ||g||)
* PGD L-inf:   x <- clip01(clip_{[x0-eps, x0+eps]}(x + s * alpha * sign(g)))
* PGD L2:      x <- clip01(x0 + proj_{||d|| <= eps}(x + s * alpha * g / ||g|| - x0))
* random start: uniform in the L-inf box; uniform in the L2 ball, i.e. radius eps * U^(1/d)
  along a uniform direction (not on the sphere's surface).

The norms, directions, projections and random starts live in :mod:`.norms`.
For a randomized model, the gradient, logits and loss are averaged over ``eot_samples``
forward passes (expectation over transformation, :func:`expected_pass`).

The model runs in eval mode during the attack (each sub-module's own mode is restored
afterwards), and its parameters are frozen so they receive no gradient.
"""
import contextlib

import numpy

from .. import backend
from ..autograd import enable_grad, no_grad
from ..functional import cross_entropy
from ..nn.module import Module
from ..tensor import Tensor
from ..validation import check_finite_array, check_number
from .norms import (NORMS, per_example_norm, pgd_step, project, random_start_point, resolve_norm,
                    step_direction, unit)

# NORMS and project are re-exported here, and the helpers under the names they had before
# norms.py, for code written against attacks.py; new code imports them from norms.
_norm, _per_example_norm, _unit, _step_direction = resolve_norm, per_example_norm, unit, step_direction

# PGD's default step size is alpha = 2.5 eps / steps (Madry et al. 2018): large enough that the
# attack can cross the whole ball and still turn back, whatever the number of steps.
PGD_ALPHA_FACTOR = 2.5


def pgd_alpha(eps, steps):
    """The default PGD step size for radius ``eps`` and ``steps`` steps (the rule above)."""
    return PGD_ALPHA_FACTOR * eps / steps


# --- argument checks ----------------------------------------------------------------------------
def model_device(model):
    """The device of ``model``'s parameters ("cpu" for a model without any)."""
    params = model.parameters() if hasattr(model, "parameters") else []
    return params[0].device if params else "cpu"


_model_device = model_device  # its name before it was shared


def prepare_inputs(model, x, y, op):
    """(x, y) as Tensors on the model's device, after checking range, dtype and shapes."""
    device = model_device(model)
    xd = x.array if isinstance(x, Tensor) else x
    if not backend.is_array(xd):
        xd = numpy.asarray(xd, dtype=numpy.float32)
    if xd.dtype.kind != "f":
        raise TypeError(f"{op}: x must be floating point in [0, 1], got dtype {xd.dtype}")
    if xd.ndim < 2:
        raise ValueError(f"{op}: x must have a batch axis, got shape {xd.shape}")
    check_finite_array(f"{op}: x", xd)  # NaN compares False with 0 and 1, so check it first
    lo, hi = float(xd.min()), float(xd.max())
    if not (lo >= 0 and hi <= 1):  # written so that NaN fails too
        raise ValueError(f"{op}: x must lie in [0, 1], got values in [{lo:.4g}, {hi:.4g}]")
    yd = y.array if isinstance(y, Tensor) else y
    if not backend.is_array(yd):
        yd = numpy.asarray(yd)
    if yd.dtype.kind not in "iu":
        raise TypeError(f"{op}: y must hold integer labels, got dtype {yd.dtype}")
    if yd.shape != (xd.shape[0],):
        raise ValueError(f"{op}: y must have shape ({xd.shape[0]},) to match x of shape {xd.shape}, got {yd.shape}")
    return Tensor(backend.to_device(xd, device)), Tensor(backend.to_device(yd, device).astype(numpy.int64))


def attack_mode(model):
    """Eval mode and frozen parameters for the duration of an attack; afterwards every
    sub-module and parameter is as it was (:meth:`minidl.nn.Module.mode`)."""
    if isinstance(model, Module):
        return model.mode(training=False, requires_grad=False)
    return contextlib.nullcontext()  # a plain function of x has no mode to keep


# --- losses and gradients -------------------------------------------------------------------
def check_labels(y, classes, op):
    """Refuse labels outside [0, classes): NumPy would read -1 as the last class, and 12 of 10
    fails deep inside an index."""
    y = y.array if isinstance(y, Tensor) else y
    if len(y) and not (int(y.min()) >= 0 and int(y.max()) < classes):
        raise ValueError(f"{op}: labels: expected class indices in [0, {classes}) (the model's {classes} outputs), "
                         f"got values in [{int(y.min())}, {int(y.max())}]")


def margin_loss(logits, y):
    """Carlini-Wagner margin per example: max_{j != y} z_j - z_y."""
    xp = backend.get_array_module(logits.array)
    n, c = logits.shape
    check_labels(y, c, "margin_loss")
    mask = xp.zeros((n, c), dtype=logits.dtype)
    mask[xp.arange(n), y.array] = -xp.inf
    onehot = (mask != 0).astype(logits.dtype)
    best_other = (logits + Tensor(mask)).max(axis=1)
    return best_other - (logits * Tensor(onehot)).sum(axis=1)


def onehot(index, logits):
    """A constant (n, c) Tensor with a 1 at column index[i] of row i."""
    xp = backend.get_array_module(logits.array)
    n, c = logits.shape
    out = xp.zeros((n, c), dtype=logits.dtype)
    out[xp.arange(n), index] = 1
    return Tensor(out)


def _sorted_logit(logits, rank):
    """z_{pi_rank} per example, pi sorting each row's logits in decreasing order (rank 1 = the
    largest). Differentiable: the gradient goes to the logit that holds that rank."""
    xp = backend.get_array_module(logits.array)
    index = xp.argsort(-logits.array, axis=1, kind="stable")[:, rank - 1]
    return (logits * onehot(index, logits)).sum(axis=1)


def dlr_loss(logits, y):
    """Difference of logits ratio (Croce and Hein 2020), per example, for logits z of shape
    (n, c >= 3) and labels y (n,):

        DLR(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3 + 1e-12)

    with z_pi1 >= z_pi2 >= ... the sorted logits. Positive exactly when y is not predicted;
    invariant to shifting and (positively) scaling z, unlike the margin, so a gradient attack
    cannot be stalled by logits scaled up or squashed. The attack ascends it."""
    if logits.shape[1] < 3:
        raise ValueError(f"dlr_loss: logits must have at least 3 classes, got shape {logits.shape}")
    y = y if isinstance(y, Tensor) else Tensor(y)
    return margin_loss(logits, y) / (_sorted_logit(logits, 1) - _sorted_logit(logits, 3) + 1e-12)


def dlr_loss_targeted(logits, y, target):
    """Targeted DLR (Croce and Hein 2020), per example, for logits (n, c >= 4):

        DLR_t(z, y, t) = -(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2 + 1e-12)

    Ascending it raises the target logit z_t above the true z_y."""
    if logits.shape[1] < 4:
        raise ValueError(f"dlr_loss_targeted: logits must have at least 4 classes, got shape {logits.shape}")
    y = y.array if isinstance(y, Tensor) else y
    target = target.array if isinstance(target, Tensor) else target
    diff = (logits * onehot(target, logits)).sum(axis=1) - (logits * onehot(y, logits)).sum(axis=1)
    return diff / (_sorted_logit(logits, 1) - 0.5 * (_sorted_logit(logits, 3) + _sorted_logit(logits, 4)) + 1e-12)


def attack_loss(logits, y, loss="ce"):
    """Per-example loss the attack ascends (untargeted) or descends (targeted): 'ce', 'margin',
    'dlr', or a callable ``loss(logits, y)`` returning a per-example Tensor."""
    if callable(loss):
        return loss(logits, y)
    if loss == "ce":
        return cross_entropy(logits, y, reduction="none")
    if loss == "margin":
        return margin_loss(logits, y)
    if loss == "dlr":
        return dlr_loss(logits, y)
    raise ValueError(f"loss must be 'ce', 'margin' or 'dlr', got {loss!r}")


def _one_pass(model, x, y, loss, gradient):
    """(d loss / dx or None, logits, per-example loss) arrays of one forward pass."""
    if not gradient:
        with no_grad():
            logits = model(x)
            return None, logits.array, attack_loss(logits, y, loss).array
    xg = Tensor(x.array, requires_grad=True)
    with enable_grad():
        logits = model(xg)
        losses = attack_loss(logits, y, loss)
        if losses.requires_grad:  # a model that cuts x from its graph (masked gradients) gives 0
            losses.sum().backward()
    g = xg.grad.array if xg.grad is not None else backend.get_array_module(x.array).zeros_like(x.array)
    return g, logits.array, losses.array


def expected_pass(model, x, y, loss="ce", eot_samples=1, gradient=True):
    """The mean over ``eot_samples`` forward passes of (gradient, logits, per-example loss):
    expectation over transformation (Athalye et al. 2018) for a randomized model, one plain
    pass for a deterministic one. With ``gradient`` False no graph is recorded and the
    gradient is None."""
    total = None
    for _ in range(eot_samples):
        sample = _one_pass(model, x, y, loss, gradient)
        total = sample if total is None else [None if t is None else t + a for t, a in zip(total, sample)]
    return tuple(None if t is None else t / eot_samples for t in total)


def input_gradient(model, x, y, loss="ce", eot_samples=1):
    """d loss(model(x), y) / dx per example (the sum over examples separates), averaged over
    ``eot_samples`` forward passes: the expectation-over-transformation gradient of a
    randomized model. Returns (gradient array, mean logits array, per-example loss array)."""
    return expected_pass(model, x, y, loss, eot_samples)


def attack_rng(xp, seed=None):
    """The random generator of an attack: the library's (seed None) or a fresh one from seed."""
    return backend.rng(xp) if seed is None else xp.random.default_rng(int(seed))


def _success(logits, y, targeted):
    pred = logits.argmax(axis=1)
    return pred == y if targeted else pred != y


# --- attacks --------------------------------------------------------------------------------
def fgsm(model, x, y, eps, norm="inf", targeted=False, loss="ce"):
    """Fast gradient sign method (Goodfellow et al. 2015); with norm='2', the fast gradient
    method x + s * eps * g / ||g||. Returns a detached Tensor of adversarial inputs."""
    norm = resolve_norm(norm, "fgsm")
    check_number("fgsm: eps", eps, minimum=0)
    x, y = prepare_inputs(model, x, y, "fgsm")
    s = -1 if targeted else 1
    with attack_mode(model):
        g, _, _ = input_gradient(model, x, y, loss)
        xp = backend.get_array_module(g)
        out = xp.clip(x.array + (s * eps) * step_direction(g, norm).astype(x.dtype), 0, 1)
    return Tensor(out)


def fgsm_random_start(model, x, y, eps, alpha=None, norm="inf"):
    """FGSM from a uniform random start, the adversary of fast adversarial training (Wong et al.
    2020): delta ~ U(-eps, eps); delta <- proj(delta + alpha * sign(grad at x + delta)); the
    result is clip01(x + delta). alpha defaults to 1.25 eps.

    As in Wong et al.'s code, the gradient is taken at the unclipped start x + delta. Clipping
    the start to [0, 1] first would zero half of the random offsets on every pixel at 0 or 1
    (most of an MNIST image), which brings back the zero-start FGSM whose training collapses
    ("catastrophic overfitting")."""
    norm = resolve_norm(norm, "fgsm_random_start")
    check_number("fgsm_random_start: eps", eps, minimum=0)
    if alpha is None:
        alpha = 1.25 * eps
    else:
        check_number("fgsm_random_start: alpha", alpha, minimum=0, strict=True)
    x, y = prepare_inputs(model, x, y, "fgsm_random_start")
    with attack_mode(model):
        start = Tensor(random_start_point(x.array, eps, norm, clip=False))
        g, _, _ = input_gradient(model, start, y)
        out = pgd_step(start.array, g, x.array, eps, alpha, norm)
    return Tensor(out)


def noisy_fgsm(model, x, y, eps, noise=None, alpha=None, norm="inf"):
    """N-FGSM, the adversary of de Jorge et al. (2022, "Make some noise"): a larger random
    offset and no projection back onto the eps-ball. With eta ~ U(ball of radius ``noise``),

        x_adv = clip01(x + eta + alpha * step_direction(grad_x L(x + eta, y)))

    noise defaults to 2 eps and alpha to eps, the paper's settings, so the perturbation may
    reach (noise + alpha) = 3 eps: the point of the method is that this wider, noisier
    neighbourhood keeps single-step training from overfitting to a masked gradient
    ("catastrophic overfitting") without the cost of extra gradients. As in
    :func:`fgsm_random_start`, the gradient is taken at the unclipped x + eta."""
    norm = resolve_norm(norm, "noisy_fgsm")
    check_number("noisy_fgsm: eps", eps, minimum=0)
    noise = 2.0 * eps if noise is None else check_number("noisy_fgsm: noise", noise, minimum=0)
    alpha = eps if alpha is None else check_number("noisy_fgsm: alpha", alpha, minimum=0)
    x, y = prepare_inputs(model, x, y, "noisy_fgsm")
    with attack_mode(model):
        start = Tensor(random_start_point(x.array, noise, norm, clip=False))
        g, _, _ = input_gradient(model, start, y)
        xp = backend.get_array_module(g)
        out = xp.clip(start.array + alpha * step_direction(g, norm).astype(x.dtype), 0, 1)
    return Tensor(out)


def pgd(model, x, y, eps, alpha, steps, norm="inf", random_start=True, restarts=1, targeted=False, loss="ce",
        eot_samples=1, result="worst"):
    """Projected gradient descent (Madry et al. 2018), L-inf or L2.

    Each of ``restarts`` runs starts at a random point of the eps-ball (or at x when
    random_start=False) and takes ``steps`` steps of size ``alpha``. Over all iterates of all
    restarts, each example keeps its worst case: a point where the attack succeeds (a
    misclassification; the target class when targeted), else the point of highest loss (lowest
    for targeted). Restarts after the first re-attack only the examples not yet broken.
    ``eot_samples`` > 1 averages each gradient over that many forward passes (for randomized
    models). Returns a detached Tensor of adversarial inputs on the model's device.

    result="last" returns the final iterate instead of the worst case (one restart only): the
    rule of torchattacks' PGD and of many scripts, weaker where a late step turns back.
    """
    op = "pgd"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: alpha", alpha, minimum=0, strict=True)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    check_number(f"{op}: restarts", restarts, minimum=1, integer=True)
    check_number(f"{op}: eot_samples", eot_samples, minimum=1, integer=True)
    if loss not in ("ce", "margin"):
        raise ValueError(f"{op}: loss must be 'ce' or 'margin', got {loss!r}")
    if result not in ("worst", "last"):
        raise ValueError(f"{op}: result must be 'worst' or 'last', got {result!r}")
    if result == "last" and restarts != 1:
        raise ValueError(f"{op}: result='last' needs restarts=1 (which restart's last iterate?), got {restarts}")
    x, y = prepare_inputs(model, x, y, op)
    xp = backend.get_array_module(x.array)
    s = -1 if targeted else 1
    best = x.array.copy()
    best_success = xp.zeros(len(y), dtype=bool)
    best_score = xp.full(len(y), -xp.inf, dtype=numpy.float64)  # s * loss: higher is worse for the model

    def keep(points, logits, losses, rows):
        """Update the worst case of examples ``rows`` with candidate ``points``."""
        succ = _success(logits, y.array[rows], targeted)
        score = s * losses.astype(numpy.float64)
        better = (succ & ~best_success[rows]) | ((succ == best_success[rows]) & (score > best_score[rows]))
        idx = rows[better]
        best[idx] = points[better]
        best_success[idx] = succ[better]
        best_score[idx] = score[better]

    with attack_mode(model):
        for restart in range(restarts):
            rows = xp.arange(len(y)) if restart == 0 else xp.nonzero(~best_success)[0]
            if len(rows) == 0:
                break
            x0, yr = x.array[rows], Tensor(y.array[rows])
            cur = random_start_point(x0, eps, norm) if random_start else x0.copy()
            for _ in range(steps):
                g, logits, losses = input_gradient(model, Tensor(cur), yr, loss, eot_samples)
                keep(cur, logits, losses, rows)
                cur = pgd_step(cur, g, x0, eps, s * alpha, norm)
            if result == "last":
                return Tensor(cur)
            _, logits, losses = expected_pass(model, Tensor(cur), yr, loss, eot_samples, gradient=False)
            keep(cur, logits, losses, rows)
    return Tensor(best)
