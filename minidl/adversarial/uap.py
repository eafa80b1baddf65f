"""Universal adversarial perturbations (UAPs): one perturbation v that fools a model on many inputs.

Reproduces the analysis of Bhat and Tsipras, "Probing the Structure of Deep Neural Networks
with Universal Adversarial Perturbations" (MIT PRIMES 2019): stack the per-image adversarial
perturbations (or loss gradients) of a data set as the rows of a matrix M (N x D, D the number
of pixels); the directions that many images share are its top right singular vectors, and the
spread of its singular values tells how much structure is shared (one dominant value: one
universal direction; a flat spectrum: none).

Building blocks, all on host NumPy arrays of flattened images (row i = image i):

* :func:`per_example_perturbations` - rows x_adv - x from PGD (L2 by default);
* :func:`per_example_gradients`     - rows d loss / dx (unit-normalised by default);
* :func:`by_class`                  - split the rows by label;
* :func:`singular_spectrum`         - singular values of M (optionally mean-centred rows);
* :func:`uap_average`               - the mean row, scaled to L2 norm eps;
* :func:`uap_svd`                   - the top-k right singular vectors, scaled to eps, with the
  loss-increasing sign; returns a :class:`SVDUAP`;
* :func:`iterative_uap`             - the iterative algorithm of Moosavi-Dezfooli et al. (2017),
  a baseline; returns an :class:`IterativeUAP`;
* :func:`fooling_rate`, :func:`random_direction` - evaluation and the random baseline.

Conventions. Perturbations are applied as clip(x + v, 0, 1). The fooling rate is the fraction
of inputs whose prediction changes, pred(clip(x + v)) != pred(x) (the definition of
Moosavi-Dezfooli et al.), independent of the labels; the accuracy under v uses the labels.
Vectors are returned flat (D,) or (k, D); reshape with ``images.shape[1:]`` (``fooling_rate``
accepts either form).

Typical use::

    P = per_example_perturbations(model, images, labels, eps=2.0, alpha=0.25, steps=20)
    svd = uap_svd(P, k=5, eps=2.0, model=model, images=images, labels=labels)
    fooling_rate(model, test_images, test_labels, svd.vectors[0])["fooling_rate"]
    fooling_rate(model, test_images, test_labels, random_direction(images.shape[1:], 2.0, 0))
"""
import dataclasses
import numbers

import numpy
from tqdm.auto import tqdm

from .. import backend
from ..backend import as_generator as _rng
from ..autograd import enable_grad, no_grad
from ..tensor import Tensor, to_host as _host
from ..validation import check_finite_array, check_number
from .attacks import (attack_loss, attack_mode, input_gradient, model_device, pgd, pgd_alpha,
                      prepare_inputs)
from .norms import project_perturbation, resolve_norm

__all__ = ["per_example_perturbations", "per_example_gradients", "by_class", "singular_spectrum", "uap_average",
           "uap_svd", "SVDUAP", "fooling_rate", "random_direction", "iterative_uap", "IterativeUAP",
           "project_perturbation", "deepfool"]


# --- helpers ------------------------------------------------------------------------------------


def _images_labels(images, labels, op):
    x = _host(images)
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: images must be floating point in [0, 1], got dtype {x.dtype}")
    if x.ndim < 2:
        raise ValueError(f"{op}: images must have a batch axis, got shape {x.shape}")
    check_finite_array(f"{op}: images", x)
    if labels is None:
        return x, None
    y = _host(labels)
    if y.shape != (len(x),):
        raise ValueError(f"{op}: labels must have shape ({len(x)},) to match images {x.shape}, got {y.shape}")
    return x, y


def _matrix(matrix, op):
    m = _host(matrix)
    if m.ndim != 2:
        raise ValueError(f"{op}: expected a 2-d matrix (N rows of flattened images), got shape {m.shape}")
    if m.shape[0] == 0 or m.shape[1] == 0:
        raise ValueError(f"{op}: the matrix is empty (shape {m.shape})")
    if not numpy.all(numpy.isfinite(m)):
        raise ValueError(f"{op}: the matrix holds NaN or infinite values")
    return m.astype(numpy.float64)




def _as_perturbation(v, image_shape, op):
    """``v`` (flat (D,) or image-shaped) as a float32 host array of ``image_shape``."""
    v = numpy.asarray(_host(v), dtype=numpy.float32)
    size = int(numpy.prod(image_shape))
    if v.size != size:
        raise ValueError(f"{op}: the perturbation has {v.size} entries, the images have {size} "
                         f"(shape {tuple(image_shape)})")
    return v.reshape(image_shape)


def _predict_batches(model, images, batch_size, perturbation=None):
    """Host predictions of ``model`` on clip(images + perturbation) (model in eval mode)."""
    device = model_device(model)
    v = None if perturbation is None else backend.to_device(perturbation, device)
    out = []
    with attack_mode(model), no_grad():
        for i in range(0, len(images), batch_size):
            x = backend.to_device(images[i:i + batch_size], device)
            if v is not None:
                x = backend.get_array_module(x).clip(x + v, 0, 1)
            out.append(backend.to_numpy(model(Tensor(x)).array.argmax(axis=1)))
    return numpy.concatenate(out) if out else numpy.zeros(0, dtype=numpy.int64)


def _mean_loss(model, images, labels, perturbation, batch_size, loss="ce"):
    """Mean attack loss of ``model`` on clip(images + perturbation)."""
    device = model_device(model)
    v = backend.to_device(perturbation, device)
    total = 0.0
    with attack_mode(model), no_grad():
        for i in range(0, len(images), batch_size):
            x = backend.to_device(images[i:i + batch_size], device)
            x = backend.get_array_module(x).clip(x + v, 0, 1)
            y = Tensor(backend.to_device(labels[i:i + batch_size], device).astype(numpy.int64))
            total += float(attack_loss(model(Tensor(x)), y, loss).array.astype(numpy.float64).sum())
    return total / len(images)


# --- per-example matrices -------------------------------------------------------------------------
def per_example_perturbations(model, images, labels, eps, alpha=None, steps=20, norm="2", batch_size=200,
                              progress=True, random_start=False, restarts=1, loss="ce", return_labels=False):
    """The matrix (N, D) of per-image adversarial perturbations x_adv - x, one row per image
    (flattened), from :func:`minidl.adversarial.pgd` (L2 by default, as in Bhat and Tsipras).

    ``alpha`` defaults to 2.5 eps / steps (Madry et al.). ``random_start`` is off by default so
    that the rows carry the model's gradient structure and not the noise of the random start.
    Returns a float32 host array; reshape rows with ``images.shape[1:]``. With
    ``return_labels``, returns (matrix, adversarial labels): the (N,) int64 classes the model
    predicts at each x_adv (the class the attack reached; the true one where it failed).
    """
    op = "per_example_perturbations"
    check_number(f"{op}: eps", eps, minimum=0, strict=True)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    check_number(f"{op}: batch_size", batch_size, minimum=1, integer=True)
    alpha = pgd_alpha(eps, steps) if alpha is None else alpha
    x, y = _images_labels(images, labels, op)
    out = numpy.empty((len(x), x[0].size), dtype=numpy.float32)
    reached = numpy.empty(len(x), dtype=numpy.int64)
    bar = tqdm(total=len(x), desc="pgd perturbations", leave=False, disable=not progress)
    for i in range(0, len(x), batch_size):
        xb, yb = x[i:i + batch_size], y[i:i + batch_size]
        adv = pgd(model, xb, yb, eps, alpha, steps, norm=norm, random_start=random_start, restarts=restarts,
                  loss=loss).numpy()
        out[i:i + len(xb)] = (adv.astype(numpy.float32) - xb.astype(numpy.float32)).reshape(len(xb), -1)
        if return_labels:
            reached[i:i + len(xb)] = _predict_batches(model, adv.astype(numpy.float32), batch_size)
        bar.update(len(xb))
    bar.close()
    return (out, reached) if return_labels else out


def per_example_gradients(model, images, labels, normalize=True, batch_size=200, loss="ce", progress=False):
    """The matrix (N, D) of loss gradients d loss(model(x_i), y_i) / dx_i, one flattened row per
    image; with ``normalize`` each row is divided by its L2 norm (rows that vanish stay zero).
    Returns a float32 host array."""
    op = "per_example_gradients"
    check_number(f"{op}: batch_size", batch_size, minimum=1, integer=True)
    x, y = _images_labels(images, labels, op)
    out = numpy.empty((len(x), x[0].size), dtype=numpy.float32)
    bar = tqdm(total=len(x), desc="gradients", leave=False, disable=not progress)
    with attack_mode(model):
        for i in range(0, len(x), batch_size):
            xb, yb = prepare_inputs(model, x[i:i + batch_size], y[i:i + batch_size], op)
            g, _, _ = input_gradient(model, xb, yb, loss)
            out[i:i + len(yb)] = backend.to_numpy(g).reshape(len(yb), -1)
            bar.update(len(yb))
    bar.close()
    if normalize:
        n = numpy.sqrt((out.astype(numpy.float64) ** 2).sum(axis=1, keepdims=True))
        out = (out / numpy.where(n > 0, n, 1)).astype(numpy.float32)
    return out


def by_class(matrix, labels):
    """{class: the rows of ``matrix`` whose label is that class}, classes in increasing order."""
    m, y = _host(matrix), _host(labels)
    if y.shape != (len(m),):
        raise ValueError(f"by_class: labels must have shape ({len(m)},), got {y.shape}")
    return {int(c): m[y == c] for c in numpy.unique(y)}


# --- spectrum and SVD / averaging UAPs ------------------------------------------------------------
def singular_spectrum(matrix, center=False):
    """All singular values of ``matrix`` (N, D), descending and non-negative (min(N, D) of
    them); with ``center`` the rows are mean-centred first (the spectrum of the covariance)."""
    m = _matrix(matrix, "singular_spectrum")
    if center:
        m = m - m.mean(axis=0)
    s = numpy.linalg.svd(m, compute_uv=False)
    return numpy.sort(numpy.clip(s, 0, None))[::-1]


def uap_average(matrix, eps, normalize_rows=False):
    """The averaging UAP: the mean row of ``matrix`` rescaled to L2 norm ``eps`` (flat, float32).
    With ``normalize_rows`` every row is first scaled to unit norm (each image votes equally)."""
    check_number("uap_average: eps", eps, minimum=0)
    m = _matrix(matrix, "uap_average")
    if normalize_rows:
        n = numpy.sqrt((m ** 2).sum(axis=1, keepdims=True))
        m = m / numpy.where(n > 0, n, 1)
    mean = m.mean(axis=0)
    n = numpy.sqrt((mean ** 2).sum())
    if not n > 0:
        raise ValueError("uap_average: the mean row is zero, so it has no direction")
    return (mean * (eps / n)).astype(numpy.float32)


@dataclasses.dataclass
class SVDUAP:
    """Result of :func:`uap_svd`. Also readable as a dict (``result["vectors"]``).

    vectors          (k, D) float32: the top-k right singular vectors, each of L2 norm eps,
                     signed to increase the loss (see ``sign_method``)
    singular_values  (min(N, D),) the full spectrum, descending, non-negative
    centered         whether the rows were mean-centred before the SVD
    mean             (D,) the mean row of the (uncentred) matrix
    eps              the L2 norm of each vector
    sign_method      "loss" (chosen by the mean loss on images) or "mean" (positive inner
                     product with the mean row)
    sign_losses      (k, 2) mean loss with +v and with -v when sign_method == "loss", else None
    """
    vectors: numpy.ndarray
    singular_values: numpy.ndarray
    centered: bool
    mean: numpy.ndarray
    eps: float
    sign_method: str
    sign_losses: numpy.ndarray = None

    @property
    def k(self):
        return len(self.vectors)

    @property
    def explained_variance_ratio(self):
        """s_i^2 / sum_j s_j^2 over the whole spectrum."""
        s2 = self.singular_values.astype(numpy.float64) ** 2
        return s2 / s2.sum() if s2.sum() > 0 else s2

    def images(self, image_shape):
        """The vectors reshaped to (k, *image_shape)."""
        return self.vectors.reshape((self.k,) + tuple(image_shape))

    def __getitem__(self, key):
        return getattr(self, key)

    def as_dict(self):
        return dataclasses.asdict(self)


def _sign_by_mean(direction, mean):
    dot = float(direction @ mean)
    if abs(dot) > 1e-12 * max(1.0, float(numpy.abs(mean).sum())):
        return 1.0 if dot > 0 else -1.0
    # no mean to agree with: a deterministic convention, largest entry positive
    return 1.0 if direction[numpy.argmax(numpy.abs(direction))] >= 0 else -1.0


def uap_svd(matrix, k=1, eps=1.0, center=False, model=None, images=None, labels=None, batch_size=200,
            loss="ce"):
    """The SVD UAP (Bhat and Tsipras): the top-``k`` right singular vectors of ``matrix``
    (rows of Vt), each scaled to L2 norm ``eps``.

    A singular vector's sign is arbitrary, so each is signed to increase the loss: when
    ``model``, ``images`` and ``labels`` are given, both clip(x + v) and clip(x - v) are
    evaluated on them and the sign with the higher mean loss is kept; otherwise the sign that
    gives a positive inner product with the mean row of the (uncentred) matrix. ``center``
    mean-centres the rows first (principal components instead of the uncentred SVD; the
    mean direction itself is then removed). Returns an :class:`SVDUAP`.
    """
    op = "uap_svd"
    check_number(f"{op}: k", k, minimum=1, integer=True)
    check_number(f"{op}: eps", eps, minimum=0)
    m = _matrix(matrix, op)
    mean = m.mean(axis=0)
    a = m - mean if center else m
    if k > min(a.shape):
        raise ValueError(f"{op}: k={k} exceeds the number of singular vectors min(N, D) = {min(a.shape)}")
    _, s, vt = numpy.linalg.svd(a, full_matrices=False)
    order = numpy.argsort(-s, kind="stable")
    s, vt = numpy.clip(s[order], 0, None), vt[order]
    directions = vt[:k] / numpy.linalg.norm(vt[:k], axis=1, keepdims=True)

    use_loss = model is not None
    if use_loss:
        if images is None or labels is None:
            raise ValueError(f"{op}: choosing the sign by the loss needs both images and labels with the model")
        x, y = _images_labels(images, labels, op)
        if x[0].size != m.shape[1]:
            raise ValueError(f"{op}: images have {x[0].size} pixels, the matrix rows {m.shape[1]}")
        prepare_inputs(model, x[:1], y[:1], op)  # range/dtype checks
        losses = numpy.zeros((k, 2))
        signs = numpy.ones(k)
        for i, d in enumerate(directions):
            v = (d * eps).astype(numpy.float32).reshape(x.shape[1:])
            losses[i] = (_mean_loss(model, x, y, v, batch_size, loss), _mean_loss(model, x, y, -v, batch_size, loss))
            signs[i] = 1.0 if losses[i, 0] >= losses[i, 1] else -1.0
        sign_losses = losses
    else:
        signs = numpy.array([_sign_by_mean(d, mean) for d in directions])
        sign_losses = None
    vectors = (directions * signs[:, None] * eps).astype(numpy.float32)
    return SVDUAP(vectors=vectors, singular_values=s, centered=bool(center), mean=mean.astype(numpy.float32),
                  eps=float(eps), sign_method="loss" if use_loss else "mean", sign_losses=sign_losses)


# --- evaluation -----------------------------------------------------------------------------------
def random_direction(shape, eps, rng=None, norm="2"):
    """A random perturbation of the same size as a UAP, the baseline: a uniformly random
    direction (normalised Gaussian) of L2 norm ``eps``; with norm='inf', a random vertex of the
    L-inf cube (entries +-eps). ``shape`` is an int (flat) or an image shape; ``rng`` None
    (the library's generator), a seed, or a numpy Generator. Returns float32."""
    norm = resolve_norm(norm, "random_direction")
    check_number("random_direction: eps", eps, minimum=0)
    shape = (shape,) if isinstance(shape, numbers.Integral) else tuple(shape)
    gen = _rng(rng)
    if norm == "inf":
        return (eps * gen.choice(numpy.array([-1.0, 1.0]), size=shape)).astype(numpy.float32)
    g = gen.standard_normal(shape)
    return (g * (eps / numpy.sqrt((g ** 2).sum()))).astype(numpy.float32)


def fooling_rate(model, images, labels, perturbation, batch_size=200, clean_predictions=None):
    """How well one perturbation fools ``model`` on ``images``: every image becomes
    clip(x + v, 0, 1). ``perturbation`` is flat (D,) or image-shaped. ``clean_predictions``
    (N,): the model's classes on the clean images when already known (many perturbations judged
    on the same images), which saves the clean pass.

    Returns a dict: fooling_rate (fraction whose prediction differs from the clean prediction),
    accuracy (under the perturbation), clean_accuracy, n, l2 and linf (norms of v), the
    per-image boolean arrays fooled and correct (correct under the perturbation), and the
    per-image classes clean_predictions and predictions (under the perturbation). With
    ``labels=None`` only the fooling rate is measured (accuracy, clean_accuracy and correct are
    None).
    """
    op = "fooling_rate"
    check_number(f"{op}: batch_size", batch_size, minimum=1, integer=True)
    x, y = _images_labels(images, labels, op)
    if len(x) == 0:
        raise ValueError(f"{op}: no images")
    prepare_inputs(model, x[:1], numpy.zeros(1, dtype=numpy.int64) if y is None else y[:1], op)
    v = _as_perturbation(perturbation, x.shape[1:], op)
    if clean_predictions is None:
        clean = _predict_batches(model, x, batch_size)
    else:
        clean = numpy.asarray(_host(clean_predictions))
        if clean.shape != (len(x),):
            raise ValueError(f"{op}: clean_predictions must have shape ({len(x)},) to match images, got {clean.shape}")
    adv = _predict_batches(model, x, batch_size, v)
    fooled = adv != clean
    correct = None if y is None else adv == y
    return {"fooling_rate": float(fooled.mean()),
            "accuracy": None if y is None else float(correct.mean()),
            "clean_accuracy": None if y is None else float((clean == y).mean()), "n": int(len(x)),
            "l2": float(numpy.sqrt((v.astype(numpy.float64) ** 2).sum())), "linf": float(numpy.abs(v).max()),
            "fooled": fooled, "correct": correct, "clean_predictions": clean, "predictions": adv}


# --- the iterative UAP of Moosavi-Dezfooli et al. (2017) --------------------------------------------
def deepfool(model, x, classes, norm="2", overshoot=0.02, max_iter=10, num_candidates=10):
    """Batched DeepFool (Moosavi-Dezfooli et al. 2016): a small perturbation r per example that
    moves clip(x + r) out of class ``classes`` (usually the current prediction), by
    linearising the model around the current point: among the ``num_candidates`` - 1 other
    classes with the largest logits k, step to the nearest linearised boundary
    f_k = z_k - z_c (L2: r = |f_k| / ||w_k||^2 w_k; L-inf: r = |f_k| / ||w_k||_1 sign(w_k)),
    and repeat; the total is scaled by 1 + overshoot.

    ``x`` is a device array (N, ...) in [0, 1], ``classes`` (N,) integers. Returns
    (r, converged): r = clip(x + (1 + overshoot) r_tot) - x as an array like x, and a boolean
    host array telling where the class changed within ``max_iter`` steps.
    """
    norm = resolve_norm(norm, "deepfool")
    xp = backend.get_array_module(x)
    n = len(x)
    classes = backend.to_device(_host(classes), backend.device_of(x)).astype(numpy.int64)
    rows = xp.arange(n)
    r_tot = xp.zeros_like(x)
    active = xp.ones(n, dtype=bool)
    flat = lambda a: a.reshape(a.shape[0], -1)
    with attack_mode(model):
        with no_grad():
            z0 = model(Tensor(x)).array
        c = z0.shape[1]
        kk = max(1, min(num_candidates, c) - 1)
        masked = z0.astype(xp.float64).copy()
        masked[rows, classes] = -xp.inf
        others = xp.argsort(-masked, axis=1)[:, :kk]  # the most likely other classes
        for it in range(max_iter + 1):
            idx = xp.nonzero(active)[0]
            if len(idx) == 0:
                break
            cur = xp.clip(x[idx] + (1 + overshoot) * r_tot[idx], 0, 1)
            xg = Tensor(cur, requires_grad=True)
            with enable_grad():
                logits = model(xg)
            z = logits.array
            m = len(idx)
            sub = xp.arange(m)
            flipped = z.argmax(axis=1) != classes[idx]
            active[idx[flipped]] = False
            if it == max_iter or bool(flipped.all()):
                break
            best = xp.full(m, xp.inf)
            best_w = xp.zeros((m, cur[0].size), dtype=xp.float64)
            best_f = xp.zeros(m)
            for j in range(kk):
                kj = others[idx, j]
                seed = xp.zeros(z.shape, dtype=z.dtype)
                seed[sub, kj] = 1
                seed[sub, classes[idx]] = -1
                xg.grad = None
                logits.backward(seed)
                w = flat(xg.grad.array).astype(xp.float64)
                f = (z[sub, kj] - z[sub, classes[idx]]).astype(xp.float64)
                wn = xp.abs(w).sum(axis=1) if norm == "inf" else xp.sqrt((w ** 2).sum(axis=1))
                dist = xp.where(wn > 0, xp.abs(f) / xp.where(wn > 0, wn, 1), xp.inf)
                better = dist < best
                best = xp.where(better, dist, best)
                best_w = xp.where(better[:, None], w, best_w)
                best_f = xp.where(better, f, best_f)
            if norm == "inf":
                wn = xp.abs(best_w).sum(axis=1)
                r = ((xp.abs(best_f) + 1e-4) / xp.where(wn > 0, wn, 1))[:, None] * xp.sign(best_w)
            else:
                wn = (best_w ** 2).sum(axis=1)
                r = ((xp.abs(best_f) + 1e-4) / xp.where(wn > 0, wn, 1))[:, None] * best_w
            r = xp.where(xp.isfinite(best)[:, None], r, 0)
            still = ~flipped
            upd = idx[still]
            r_tot[upd] = r_tot[upd] + r[still].reshape((-1,) + x.shape[1:]).astype(x.dtype)
    converged = ~backend.to_numpy(active)
    r = xp.clip(x + (1 + overshoot) * r_tot, 0, 1) - x
    return r, converged


@dataclasses.dataclass
class IterativeUAP:
    """Result of :func:`iterative_uap`; also readable as a dict.

    perturbation  image-shaped float32, inside the eps-ball of ``norm`` (the best pass's v when
                  keep_best, else the last pass's)
    fooling_rate  of ``perturbation`` on the images it was computed from
    history       fooling rate after each pass
    passes        passes made
    reached       whether fooling_rate >= target_fooling
    best_pass     index (from 0) of the pass whose v is returned
    """
    perturbation: numpy.ndarray
    fooling_rate: float
    history: list
    passes: int
    reached: bool
    eps: float
    norm: str
    best_pass: int = -1

    def __getitem__(self, key):
        return getattr(self, key)

    def as_dict(self):
        return dataclasses.asdict(self)


def iterative_uap(model, images, labels=None, eps=1.0, norm="2", max_passes=5, target_fooling=0.8, batch_size=32,
                  overshoot=0.02, deepfool_steps=10, num_candidates=10, aggregate="sequential", shuffle=True,
                  rng=None, progress=True, keep_best=True):
    """The universal perturbation algorithm of Moosavi-Dezfooli et al. (2017), a baseline.

    Start from v = 0 and pass over the images (in a random order when ``shuffle``). For each
    image x that v does not yet fool, pred(clip(x + v)) == pred(x), DeepFool (:func:`deepfool`,
    ``deepfool_steps`` iterations, ``overshoot``) finds a minimal extra perturbation r that
    changes the prediction at x + v; if it succeeds, v <- P(v + r), the projection onto the
    eps-ball of ``norm`` ('2' or 'inf'). Stop once the fooling rate on all images reaches
    ``target_fooling`` or after ``max_passes`` passes.

    Batching (the deviation from the per-image original): images are taken ``batch_size`` at a
    time, and the r of all not-yet-fooled images of a mini-batch are computed in parallel at the
    same v. With aggregate='sequential' (default) they are then added one after another, each
    followed by the projection, as in the original; the only difference is that an r was
    computed at the v of the start of its mini-batch, not at the v updated by the images before
    it. ``batch_size=1`` is exactly the original algorithm. With aggregate='mean', v <- P(v +
    mean r) once per mini-batch (smoother, slower to grow).

    The fooling rate need not grow from pass to pass (each projection can undo earlier
    progress); with ``keep_best`` (default) the v of the pass with the highest fooling rate is
    returned, otherwise the last one. ``labels`` are not needed (fooling is relative to the
    clean prediction). Returns an :class:`IterativeUAP`.
    """
    op = "iterative_uap"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: max_passes", max_passes, minimum=1, integer=True)
    check_number(f"{op}: batch_size", batch_size, minimum=1, integer=True)
    check_number(f"{op}: deepfool_steps", deepfool_steps, minimum=1, integer=True)
    check_number(f"{op}: num_candidates", num_candidates, minimum=2, integer=True)
    check_number(f"{op}: overshoot", overshoot, minimum=0)
    check_number(f"{op}: target_fooling", target_fooling, minimum=0, maximum=1)
    if aggregate not in ("sequential", "mean"):
        raise ValueError(f"{op}: aggregate must be 'sequential' or 'mean', got {aggregate!r}")
    x, _ = _images_labels(images, labels, op)
    if len(x) == 0:
        raise ValueError(f"{op}: no images")
    prepare_inputs(model, x[:1], numpy.zeros(1, dtype=numpy.int64), op)
    x = x.astype(numpy.float32)
    gen = _rng(rng)
    device = model_device(model)
    xp = backend.xp_for(device)
    clean = _predict_batches(model, x, 256)
    v = xp.zeros(x.shape[1:], dtype=numpy.float32)
    history, best_rate, best_v, best_pass = [], -1.0, v, -1
    bar = tqdm(total=max_passes * len(x), desc="iterative uap", leave=False, disable=not progress)
    for _ in range(max_passes):
        order = gen.permutation(len(x)) if shuffle else numpy.arange(len(x))
        for i in range(0, len(x), batch_size):
            idx = order[i:i + batch_size]
            xb = backend.to_device(x[idx], device)
            xv = xp.clip(xb + v, 0, 1)
            with attack_mode(model), no_grad():
                pred = backend.to_numpy(model(Tensor(xv)).array.argmax(axis=1))
            todo = numpy.nonzero(pred == clean[idx])[0]
            bar.update(len(idx))
            if len(todo) == 0:
                continue
            sel = backend.to_device(todo, device)
            r, ok = deepfool(model, xv[sel], clean[idx][todo], norm, overshoot, deepfool_steps, num_candidates)
            r = r[backend.to_device(numpy.nonzero(ok)[0], device)]
            if len(r) == 0:
                continue
            if aggregate == "mean":
                v = project_perturbation(v + r.mean(axis=0), eps, norm).astype(numpy.float32)
            else:
                for ri in r:
                    v = project_perturbation(v + ri, eps, norm).astype(numpy.float32)
        rate = float((_predict_batches(model, x, 256, v) != clean).mean())
        history.append(rate)
        if rate > best_rate or not keep_best:
            best_rate, best_v, best_pass = rate, v.copy(), len(history) - 1
        bar.set_postfix(fooling=f"{rate:.3f}")
        if rate >= target_fooling:
            break
    bar.close()
    return IterativeUAP(perturbation=backend.to_numpy(best_v).astype(numpy.float32), fooling_rate=best_rate,
                        history=history, passes=len(history), reached=best_rate >= target_fooling, eps=float(eps),
                        norm=norm, best_pass=best_pass)
