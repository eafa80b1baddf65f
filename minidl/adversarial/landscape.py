"""The loss landscape around inputs, seen by an attacker (Bhat and Tsipras 2019, section on
adversarial training smoothing the loss landscape).

Every measurement takes a batch: images (N, ...) in [0, 1] and integer labels (N,). Only the
picture of one image's path (:func:`trajectory_plane`, :func:`trajectory_coordinates`,
:func:`loss_grid`, :func:`plot_trajectory`) takes a single image without a batch axis (e.g.
``images[0]``) and a Python or NumPy integer label. Results are host NumPy arrays.

* PGD paths: :func:`pgd_paths` runs PGD from the images (no random start) and keeps every
  iterate x_0 = x, x_1, ..., x_T with the loss and its input gradient there.
  :func:`path_straightness` = ||x_T - x_0|| / sum_t ||x_{t+1} - x_t|| is 1 for a straight path
  and smaller the more the gradient direction turns; :func:`path_gradient_cosines` compares
  the gradients along the paths. One image's path can be drawn: :func:`trajectory_plane`
  spans its first step and final perturbation, :func:`loss_grid` evaluates the loss on that
  plane and :func:`plot_trajectory` draws the contours with the path on top.
* Gradient cosines: :func:`ball_gradient_cosines` takes the loss gradients at random points of
  balls of several radii around each image and returns their pairwise cosines and their
  cosines with the gradient at the image (all 1 for a model that is linear there).
* Curvature: :func:`random_to_adversarial` compares the loss increase along random directions
  on the ball's surface (:func:`surface_directions`) with PGD's, and gives the first-order
  Taylor remainder at PGD's strongest point.

:data:`MEASURES` names the numbers these give; :func:`landscape_measures` computes all of them
at several radii. For a loss that is linear in the ball every cosine and the straightness are 1
and the ratio and remainders 0; how far a model is from those values is how curved its loss is
there.
"""
import numbers

import numpy
from tqdm.auto import tqdm

from .. import backend
from ..backend import as_generator as _rng
from ..autograd import enable_grad, grad, no_grad
from ..tensor import Tensor, to_host as _host
from ..validation import check_number
from .attacks import attack_loss, attack_mode, input_gradient, model_device, pgd_alpha, prepare_inputs
from .norms import pgd_step, resolve_norm, step_direction, uniform_ball
from .plots import plot_loss_landscape

__all__ = ["pgd_paths", "path_straightness", "path_gradient_cosines", "trajectory_plane", "trajectory_coordinates",
           "loss_grid", "plot_trajectory", "ball_gradient_cosines", "surface_directions", "random_to_adversarial",
           "MEASURES", "landscape_measures"]


# --- helpers shared by the measurements -----------------------------------------------------------
def _losses_at(model, points, labels, loss, batch_size):
    """The per-example loss (float64) and predicted class at host ``points`` (M, ...) with
    integer ``labels`` (M,), forward passes only, in batches."""
    device = model_device(model)
    losses, preds = [], []
    with attack_mode(model), no_grad():
        for i in range(0, len(points), batch_size):
            p = Tensor(backend.to_device(points[i:i + batch_size], device))
            yy = Tensor(backend.to_device(numpy.asarray(labels[i:i + batch_size], dtype=numpy.int64), device))
            logits = model(p)
            losses.append(backend.to_numpy(attack_loss(logits, yy, loss).array))
            preds.append(backend.to_numpy(logits.array.argmax(axis=1)))
    return numpy.concatenate(losses).astype(numpy.float64), numpy.concatenate(preds)


def _flat(a, image_ndim):
    """``a`` (..., *image shape) as float64 (..., D), D the image size."""
    return a.reshape(a.shape[:a.ndim - image_ndim] + (-1,)).astype(numpy.float64)


def _row_cosines(a, b):
    """cos(a, b) along the last axis of two arrays of the same shape (..., D); NaN where a row
    of either is zero."""
    na, nb = numpy.linalg.norm(a, axis=-1), numpy.linalg.norm(b, axis=-1)
    with numpy.errstate(all="ignore"):
        c = (a * b).sum(axis=-1) / (na * nb)
    return numpy.where((na > 0) & (nb > 0), numpy.clip(c, -1, 1), numpy.nan)


def _nanmean(a, axis):
    """numpy.nanmean that gives NaN for an all-NaN slice without a warning."""
    with numpy.errstate(all="ignore"):
        count = numpy.isfinite(a).sum(axis=axis)
        total = numpy.where(numpy.isfinite(a), a, 0).sum(axis=axis)
        return numpy.where(count > 0, total / numpy.maximum(count, 1), numpy.nan)


def _check_radii(radii, op, strict=False):
    given = radii
    radii = list(radii) if isinstance(radii, (list, tuple, numpy.ndarray)) else []
    if not radii:
        raise ValueError(f"{op}: radii must be a non-empty list of numbers {'>' if strict else '>='} 0, got {given!r}")
    return [check_number(f"{op}: radii[{i}]", r, minimum=0, strict=strict) for i, r in enumerate(radii)]


# --- PGD paths ------------------------------------------------------------------------------------
def pgd_paths(model, images, labels, eps, alpha=None, steps=20, norm="2", loss="ce"):
    """PGD (same update and projection as :func:`minidl.adversarial.pgd`) started at the images
    themselves, with every iterate x_t, the loss L(x_t) and its input gradient g_t = dL/dx(x_t)
    for t = 0 .. T (T = ``steps``; plain iterates, not the best point found). ``alpha``
    defaults to :func:`~minidl.adversarial.attacks.pgd_alpha`. Returns a dict of host arrays:
    iterates (T + 1, N, ...) with iterates[0] the images, gradients (T + 1, N, D) float64 with
    D the size of one image, losses (T + 1, N) float64."""
    op = "pgd_paths"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    alpha = pgd_alpha(eps, steps) if alpha is None else alpha
    check_number(f"{op}: alpha", alpha, minimum=0, strict=True)
    x, y = prepare_inputs(model, images, labels, op)
    x0 = cur = x.array
    iterates, grads, losses = [backend.to_numpy(cur)], [], []
    with attack_mode(model):
        for t in range(steps + 1):
            g, _, value = input_gradient(model, Tensor(cur), y, loss)
            grads.append(backend.to_numpy(g).reshape(len(g), -1).astype(numpy.float64))
            losses.append(backend.to_numpy(value).astype(numpy.float64))
            if t < steps:
                cur = pgd_step(cur, g, x0, eps, alpha, norm)
                iterates.append(backend.to_numpy(cur))
    return {"iterates": numpy.stack(iterates), "gradients": numpy.stack(grads), "losses": numpy.stack(losses)}


def path_straightness(iterates):
    """||x_T - x_0|| / sum_t ||x_{t+1} - x_t|| of each path of ``iterates`` (T + 1, N, ...), as
    :func:`pgd_paths` returns them: (N,) float64, 1 for a straight path, in (0, 1] otherwise,
    NaN for a path that never moves."""
    t = _host(iterates)
    if t.ndim < 3 or len(t) < 2:
        raise ValueError(f"path_straightness: iterates must be (steps + 1 >= 2, N, ...), got shape {t.shape}")
    t = t.reshape(t.shape[:2] + (-1,)).astype(numpy.float64)
    length = numpy.sqrt((numpy.diff(t, axis=0) ** 2).sum(axis=2)).sum(axis=0)
    chord = numpy.sqrt(((t[-1] - t[0]) ** 2).sum(axis=1))
    with numpy.errstate(all="ignore"):
        return numpy.where(length > 0, numpy.minimum(1.0, chord / length), numpy.nan)


def path_gradient_cosines(gradients):
    """Gradient agreement along PGD paths, from the gradients (T + 1, N, D) of :func:`pgd_paths`:
    successive (T, N) = cos(g_t, g_{t+1}) for t = 0 .. T - 1 and initial (T, N) = cos(g_0, g_t)
    for t = 1 .. T (NaN where a gradient vanishes). Both are 1 for a linear loss; an L-inf
    iterate that has stopped at a corner of the box repeats its gradient, so successive counts
    it as aligned."""
    g = numpy.asarray(_host(gradients), dtype=numpy.float64)
    if g.ndim != 3 or len(g) < 2:
        raise ValueError(f"path_gradient_cosines: gradients must be (steps + 1 >= 2, N, D), got shape {g.shape}")
    return {"successive": _row_cosines(g[:-1], g[1:]), "initial": _row_cosines(g[:1], g[1:])}


# --- one image's path on a plane ------------------------------------------------------------------
def _single(image, label, op):
    """One example as a batch of one: (x of shape (1, ...), y of shape (1,)) host arrays."""
    x = _host(image)
    if x.ndim < 1:
        raise ValueError(f"{op}: image must be an array without a batch axis, got a scalar")
    y = numpy.asarray(_host(label)).reshape(-1)
    if y.shape != (1,):
        raise ValueError(f"{op}: label must be a single integer, got shape {numpy.shape(label)}")
    return x[None], y.astype(numpy.int64)


def _path_array(trajectory, op):
    """One path (a list of iterates or an array with time first) as float64 (T + 1, D)."""
    t = numpy.stack([_host(p) for p in trajectory]) if isinstance(trajectory, (list, tuple)) else _host(trajectory)
    if t.ndim < 2 or len(t) < 2:
        raise ValueError(f"{op}: a trajectory needs at least two iterates, got shape {t.shape}")
    return t.reshape(len(t), -1).astype(numpy.float64)


def trajectory_plane(trajectory, rng=0):
    """The plane of one image's PGD path ``trajectory`` ((T + 1, ...) such as
    ``pgd_paths(...)["iterates"][:, i]``, or a list of iterates): two orthonormal directions
    (u, v) shaped like the image, float64, u along the first step x_1 - x_0, v along the final
    perturbation x_T - x_0 with its u component removed. When the path is straight (nothing is
    left after removing u), v is a random direction orthogonal to u (from ``rng``); when the
    first step is zero, u follows the first step that is not."""
    t = _path_array(trajectory, "trajectory_plane")
    shape = _host(trajectory[0]).shape
    steps = numpy.diff(t, axis=0)
    moving = numpy.nonzero(numpy.sqrt((steps ** 2).sum(axis=1)) > 0)[0]
    if len(moving) == 0:
        raise ValueError("trajectory_plane: the trajectory never moves, so it spans no plane")
    u = steps[moving[0]]
    u = u / numpy.linalg.norm(u)
    final = t[-1] - t[0]
    w = final - (final @ u) * u
    if numpy.linalg.norm(w) <= 1e-6 * max(numpy.linalg.norm(final), 1e-12):
        gen = _rng(rng)
        w = gen.standard_normal(u.shape)
        w -= (w @ u) * u
    w = w / numpy.linalg.norm(w)
    w -= (w @ u) * u  # once more, for round-off
    w /= numpy.linalg.norm(w)
    return u.reshape(shape), w.reshape(shape)


def trajectory_coordinates(trajectory, u, v):
    """Coordinates (steps + 1, 2) of x_t - x_0 in the plane spanned by orthonormal u and v."""
    t = _path_array(trajectory, "trajectory_coordinates")
    d = t - t[0]
    return numpy.stack([d @ _host(u).reshape(-1), d @ _host(v).reshape(-1)], axis=1)


def loss_grid(model, image, label, u, v, extent, resolution=21, clip=False, loss="ce", batch_size=256):
    """The loss of ``model`` at image + a u + b v on a ``resolution`` x ``resolution`` grid.

    ``extent`` is e (a, b in [-e, e]) or (a_min, a_max, b_min, b_max). With ``clip`` the points
    are clipped to [0, 1] (what an attacker could feed); by default they are not, so the plane
    is the true affine plane. Returns a dict with a (resolution,), b (resolution,), loss
    (resolution, resolution) indexed [b, a] (ready for ``contourf(a, b, loss)``) and pred (the
    predicted classes, same layout).
    """
    op = "loss_grid"
    check_number(f"{op}: resolution", resolution, minimum=2, integer=True)
    x, y = _single(image, label, op)
    prepare_inputs(model, x, y, op)
    if isinstance(extent, numbers.Real):
        check_number(f"{op}: extent", extent, minimum=0, strict=True)
        extent = (-extent, extent, -extent, extent)
    if len(extent) != 4:
        raise ValueError(f"{op}: extent must be a number or (a_min, a_max, b_min, b_max), got {extent!r}")
    a = numpy.linspace(extent[0], extent[1], resolution)
    b = numpy.linspace(extent[2], extent[3], resolution)
    aa, bb = numpy.meshgrid(a, b)  # [b, a]
    u, v = _host(u).reshape(x.shape[1:]), _host(v).reshape(x.shape[1:])
    points = aa.reshape(-1, *([1] * u.ndim)) * u + bb.reshape(-1, *([1] * u.ndim)) * v + x[0]
    if clip:
        points = numpy.clip(points, 0, 1)
    losses, preds = _losses_at(model, points.astype(x.dtype), numpy.full(len(points), y[0]), loss, batch_size)
    shape = (resolution, resolution)
    return {"a": a, "b": b, "loss": losses.reshape(shape), "pred": preds.reshape(shape)}


def plot_trajectory(model, image, label, trajectory, path, extent=None, resolution=31, clip=False, loss="ce",
                    title=None):
    """Contours of the loss on :func:`trajectory_plane` with the PGD path ``trajectory`` of
    ``image`` (one path, (T + 1, ...)) drawn on top, saved as a PNG at ``path``. ``extent``
    defaults to the path's range plus a margin. Returns a dict with u, v, coords (the path in
    the plane), grid (:func:`loss_grid`) and straightness (:func:`path_straightness`)."""
    u, v = trajectory_plane(trajectory)
    coords = trajectory_coordinates(trajectory, u, v)
    if extent is None:
        span = max(float(numpy.abs(coords).max()), 1e-3)
        extent = 1.5 * span
    grid = loss_grid(model, image, label, u, v, extent, resolution, clip=clip, loss=loss)
    straight = float(path_straightness(_path_array(trajectory, "plot_trajectory")[:, None])[0])
    if title is None:
        title = f"PGD path (straightness {straight:.3f})"
    plot_loss_landscape(grid, path, coords=coords, title=title)
    return {"u": u, "v": v, "coords": coords, "grid": grid, "straightness": straight}


# --- gradient cosines in balls around the images --------------------------------------------------
def ball_gradient_cosines(model, images, labels, radii, norm="inf", n_points=16, loss="ce", rng=None, batch_size=256,
                          progress=False):
    """Gradient similarity in balls of several radii. For each radius r and image x: the loss
    gradients g_1 .. g_P at P = ``n_points`` uniform random points of the r-ball of ``norm``
    around x (clipped to [0, 1]) and g_0 = dL/dx(x) give

        ball_cosine   = mean_{i < j} cos(g_i, g_j)   (the talk's "similar gradients around an image")
        centre_cosine = mean_i cos(g_i, g_0)          (how well the gradient at x predicts them)

    Returns a dict of host arrays: radii (R,), pairwise (R, N, P (P - 1) / 2) the cosines of
    all pairs, ball_cosine (R, N) and centre_cosine (R, N), NaN-aware per-image means (a pair
    with a vanishing gradient is NaN)."""
    return _ball_cosines(model, images, labels, radii, norm, n_points, loss, rng, batch_size, progress,
                         "ball_gradient_cosines")


def _ball_cosines(model, images, labels, radii, norm, n_points, loss, rng, batch_size, progress, op):
    """:func:`ball_gradient_cosines`, its errors naming ``op``."""
    norm = resolve_norm(norm, op)
    radii = _check_radii(radii, op)
    check_number(f"{op}: n_points", n_points, minimum=2, integer=True)
    check_number(f"{op}: batch_size", batch_size, minimum=1, integer=True)
    x, y = _host(images), _host(labels)
    if y.shape != (len(x),):
        raise ValueError(f"{op}: labels must have shape ({len(x)},), got {y.shape}")
    gen = _rng(rng)
    per_chunk = max(1, batch_size // n_points)
    pairs = n_points * (n_points - 1) // 2
    pairwise = numpy.full((len(radii), len(x), pairs), numpy.nan)
    centre = numpy.full((len(radii), len(x)), numpy.nan)
    bar = tqdm(total=len(x), desc="gradient cosines", leave=False, disable=not progress)
    for i in range(0, len(x), per_chunk):
        xc, yc = x[i:i + per_chunk], y[i:i + per_chunk]
        with attack_mode(model):
            g0 = backend.to_numpy(input_gradient(model, *prepare_inputs(model, xc, yc, op), loss)[0])
        g0 = g0.reshape(len(xc), -1).astype(numpy.float64)
        for r, eps in enumerate(radii):
            g = _ball_gradients(model, xc, yc, eps, n_points, norm, loss, gen, batch_size)
            pairwise[r, i:i + len(xc)] = [_pairwise_cosines(gi) for gi in g]
            centre[r, i:i + len(xc)] = _nanmean(_row_cosines(g, g0[:, None]), axis=1)
        bar.update(len(xc))
    bar.close()
    return {"radii": numpy.array(radii, dtype=numpy.float64), "pairwise": pairwise,
            "ball_cosine": _nanmean(pairwise, axis=2), "centre_cosine": centre}


def _ball_points(x, eps, n_points, norm, gen):
    """n_points uniform samples of the eps-ball around each row of x (host), clipped to [0, 1]:
    (m * n_points, ...) with the n_points of row i contiguous."""
    m = len(x)
    delta = uniform_ball(gen, (m * n_points,) + x.shape[1:], eps, norm).reshape((m, n_points) + x.shape[1:])
    pts = numpy.clip(x[:, None] + delta, 0, 1).astype(x.dtype)
    return pts.reshape((m * n_points,) + x.shape[1:])


def _ball_gradients(model, x, y, eps, n_points, norm, loss, gen, batch_size):
    """Gradients (m, n_points, D) at random points of the eps-balls around the rows of x."""
    pts = _ball_points(x, eps, n_points, norm, gen)
    labels = numpy.repeat(y, n_points)
    out = numpy.empty((len(pts), x[0].size), dtype=numpy.float64)
    with attack_mode(model):
        for i in range(0, len(pts), batch_size):
            xb, yb = prepare_inputs(model, pts[i:i + batch_size], labels[i:i + batch_size], "gradient_cosine")
            g, _, _ = input_gradient(model, xb, yb, loss)
            out[i:i + len(yb)] = backend.to_numpy(g).reshape(len(yb), -1)
    return out.reshape(len(x), n_points, -1)


def _pairwise_cosines(g):
    """Upper-triangle cosine similarities of the rows of g (NaN where a row is zero)."""
    n = numpy.linalg.norm(g, axis=1)
    unit = g / numpy.where(n > 0, n, 1)[:, None]
    c = numpy.clip(unit @ unit.T, -1, 1)
    c[n == 0, :] = numpy.nan
    c[:, n == 0] = numpy.nan
    return c[numpy.triu_indices(len(g), k=1)]


# --- curvature: random against adversarial directions ---------------------------------------------
def surface_directions(gen, shape, n_directions, eps, norm):
    """2 ``n_directions`` perturbations (2 n, N, ...) on the surface of the eps-ball of ``norm``,
    in antithetic pairs: u_1 .. u_n then -u_1 .. -u_n, each u = eps * step_direction(z) for a
    Gaussian z, i.e. eps times random signs (L-inf: a random corner of the box, the kind of
    point PGD ends at) or a uniform direction of L2 norm eps. The pairs cancel the first-order
    term of the loss, so the mean increase along them is curvature alone."""
    z = gen.standard_normal((n_directions,) + tuple(shape))
    u = numpy.stack([eps * step_direction(zi, norm) for zi in z])
    return numpy.concatenate([u, -u])


def random_to_adversarial(model, images, labels, eps, norm="inf", n_directions=4, steps=20, loss="ce", rng=None,
                          batch_size=256, path=None):
    """Loss increase along random against adversarial directions at the same radius, and the
    first-order Taylor remainder. With L0 = L(x), g = dL/dx(x), x* the iterate of PGD (``steps``
    steps of :func:`pgd_paths`, or the given ``path``, a dict as it returns) with the largest loss and dL* = L(x*) - L0,
    and x_k = clip01(x + d_k) for the 2 ``n_directions`` perturbations d_k of
    :func:`surface_directions`, per image:

        random_increase      = mean_k L(x_k) - L0
        adversarial_increase = dL*
        ratio                = random_increase / dL*  (0 for a linear loss: the pairs cancel;
                               (1/2) d'Hd / (g.d* + (1/2) d*'Hd*) for a quadratic one)
        taylor_remainder     = |dL* - g . (x* - x)|   (0 for a linear loss; the local linearity
                               measure of Qin et al. 2019, at PGD's point)
        taylor_remainder_relative = taylor_remainder / dL*
        taylor_remainder_random   = mean_k |L(x_k) - L0 - g . (x_k - x)|

    The ratios are NaN where PGD did not raise the loss (dL* <= 0). Returns a dict of (N,)
    float64 host arrays with those names."""
    op = "random_to_adversarial"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0, strict=True)
    check_number(f"{op}: n_directions", n_directions, minimum=1, integer=True)
    x, y = _host(images), _host(labels)
    prepare_inputs(model, x, y, op)
    if path is None:
        path = pgd_paths(model, x, y, eps, None, steps, norm, loss)
    losses, g0 = path["losses"], path["gradients"][0]
    n, image_ndim = len(x), x.ndim - 1
    best = losses.argmax(axis=0)
    x_star = path["iterates"][best, numpy.arange(n)]
    adv = losses[best, numpy.arange(n)] - losses[0]
    remainder = numpy.abs(adv - (_flat(x_star - x, image_ndim) * g0).sum(axis=-1))
    d = surface_directions(_rng(rng), x.shape, n_directions, eps, norm)
    points = numpy.clip(x[None] + d, 0, 1).astype(x.dtype)
    k = len(points)
    values = _losses_at(model, points.reshape((k * n,) + x.shape[1:]), numpy.tile(y, k), loss, batch_size)[0]
    rise = values.reshape(k, n) - losses[0]
    random_remainder = numpy.abs(rise - (_flat(points - x[None], image_ndim) * g0).sum(axis=-1)).mean(axis=0)
    rand = rise.mean(axis=0)
    with numpy.errstate(all="ignore"):
        ratio = numpy.where(adv > 0, rand / adv, numpy.nan)
        relative = numpy.where(adv > 0, remainder / adv, numpy.nan)
    return {"random_increase": rand, "adversarial_increase": adv, "ratio": ratio, "taylor_remainder": remainder,
            "taylor_remainder_relative": relative, "taylor_remainder_random": random_remainder}


# --- named measures at several radii --------------------------------------------------------------
# name -> (the direction in which the loss is more nearly linear in the ball, i.e. smoother;
# the definition). A loss that is linear in the ball gives 1 for the first five and 0 for the
# last three.
MEASURES = {
    "ball_cosine": ("higher", "mean pairwise cosine of the loss gradients at random points of the ball"),
    "centre_cosine": ("higher", "mean cosine of those gradients with the gradient at the image"),
    "path_successive_cosine": ("higher", "mean cosine of the gradients at successive PGD iterates"),
    "path_initial_cosine": ("higher", "mean cosine of the gradient at each PGD iterate with the one at the image"),
    "straightness": ("higher", "|x_T - x_0| / length of the PGD path"),
    "random_to_adversarial": ("lower", "mean loss increase along random directions on the ball's surface "
                                       "(antithetic pairs) / the increase at PGD's strongest point"),
    "taylor_remainder": ("lower", "|L(x*) - L(x) - g(x) . (x* - x)| at PGD's strongest point x* (nats)"),
    "taylor_remainder_relative": ("lower", "the Taylor remainder / (L(x*) - L(x))"),
}


def landscape_measures(model, images, labels, radii, norm="inf", n_points=16, n_directions=4, steps=20, loss="ce",
                       rng=None, batch_size=256, progress=False):
    """Every measure of :data:`MEASURES` at each radius of ``radii`` in the balls of ``norm``,
    for each image: :func:`ball_gradient_cosines`, then per radius one PGD path (``steps``
    steps of size pgd_alpha(r, steps), from the image) shared by the path cosines
    (:func:`path_gradient_cosines`, averaged over the steps), the straightness
    (:func:`path_straightness`) and :func:`random_to_adversarial`. Deterministic for a given
    ``rng`` seed. Returns a dict of host arrays: radii (R,), one (R, N) array per measure
    name, pairwise (R, N, P (P - 1) / 2) the ball's cosines, and example_path (R, T + 1, ...)
    the PGD path of the first image at each radius."""
    op = "landscape_measures"
    norm = resolve_norm(norm, op)
    radii = _check_radii(radii, op, strict=True)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    check_number(f"{op}: n_directions", n_directions, minimum=1, integer=True)
    gen = _rng(rng)
    out = _ball_cosines(model, images, labels, radii, norm, n_points, loss, gen, batch_size, False, op)
    x, y = _host(images), _host(labels)
    per_radius = {name: [] for name in MEASURES if name not in out}
    paths = []
    for eps in tqdm(radii, desc=f"landscape L{norm}", leave=False, disable=not progress):
        path = pgd_paths(model, x, y, eps, None, steps, norm, loss)
        cos = path_gradient_cosines(path["gradients"])
        curv = random_to_adversarial(model, x, y, eps, norm, n_directions, steps, loss, gen, batch_size, path)
        per_radius["path_successive_cosine"].append(_nanmean(cos["successive"], axis=0))
        per_radius["path_initial_cosine"].append(_nanmean(cos["initial"], axis=0))
        per_radius["straightness"].append(path_straightness(path["iterates"]))
        per_radius["random_to_adversarial"].append(curv["ratio"])
        per_radius["taylor_remainder"].append(curv["taylor_remainder"])
        per_radius["taylor_remainder_relative"].append(curv["taylor_remainder_relative"])
        paths.append(path["iterates"][:, 0])
    out.update({name: numpy.stack(v) for name, v in per_radius.items()})
    out["example_path"] = numpy.stack(paths)
    return out


# --- curvature: the input Hessian's largest eigenvalues ---------------------------------------
def input_hessian_eigenvalues(model, images, labels, k=1, iters=20, loss="ce", rng=0, batch_size=128):
    """The ``k`` largest-magnitude eigenvalues (signed) of each image's input Hessian of the
    loss, H_n = d^2 loss(model(x_n), y_n) / dx_n^2: the curvature of the loss in input space
    (Moosavi-Dezfooli et al., CVPR 2019, "Robustness via curvature regularization, and vice
    versa"); a loss that is linear around x has 0, a smoother model smaller values.

    Power iteration on Hessian-vector products, batch-first: the loss is summed over a batch
    (the model in eval mode, so the examples do not interact and the batch's Hessian is block
    diagonal), its input gradient g is built once with ``create_graph=True``, and every iteration
    is one backward pass of <g, V> for a whole batch of vectors V (one per image). Eigenvalue j
    is found on the operator deflated by the first j - 1, H - sum_i lambda_i v_i v_i^T, and
    estimated by the Rayleigh quotient <v, H v> of the last iterate v (|v| = 1); ``iters``
    iterations per eigenvalue reduce the error by about |lambda_{j+1} / lambda_j| ** iters.

    ``images`` (N, C, H, W) in [0, 1], ``labels`` (N,); ``loss`` as in the attacks ('ce',
    'margin', 'dlr' or a callable); ``rng`` seeds the starting vectors. Returns a host array
    (N, k), each row in the order found (decreasing magnitude when power iteration converged).
    """
    op = "input_hessian_eigenvalues"
    check_number(f"{op}: k", k, minimum=1, integer=True)
    check_number(f"{op}: iters", iters, minimum=1, integer=True)
    check_number(f"{op}: batch_size", batch_size, minimum=1, integer=True)
    gen = _rng(rng)
    x_all, y_all = _host(images), _host(labels)
    if x_all.ndim < 2 or k > x_all[0].size:
        raise ValueError(f"{op}: images must be a batch (N, ...) of at least k = {k} values each, got shape "
                         f"{x_all.shape}")
    out = []
    with attack_mode(model):
        for start in range(0, len(x_all), batch_size):
            x, y = prepare_inputs(model, x_all[start:start + batch_size], y_all[start:start + batch_size], op)
            out.append(_top_hessian_eigenvalues(model, x, y, k, iters, loss, gen))
    return numpy.concatenate(out) if out else numpy.zeros((0, k))


def _top_hessian_eigenvalues(model, x, y, k, iters, loss, gen):
    """(n, k) host array: :func:`input_hessian_eigenvalues` for one batch of Tensors x, y."""
    xp = backend.get_array_module(x.array)
    n = x.shape[0]
    xg = Tensor(x.array, requires_grad=True)
    with enable_grad():
        losses = attack_loss(model(xg), y, loss)
        g, = grad(losses.sum(), xg, create_graph=True, allow_unused=True)

    def hvp(v):  # v (n, D) -> H v, row by row
        if g is None or not g.requires_grad:  # a loss linear in x: H = 0
            return xp.zeros_like(v)
        hv, = grad((g * Tensor(v.reshape(x.shape).astype(x.dtype))).sum(), xg, allow_unused=True)
        return xp.zeros_like(v) if hv is None else hv.array.reshape(n, -1).astype(v.dtype)

    def unit(v):
        norm = xp.sqrt((v * v).sum(axis=1, keepdims=True))
        return v / xp.where(norm > 0, norm, 1)

    found, values = [], numpy.zeros((n, k))
    for j in range(k):
        v = xp.asarray(gen.standard_normal((n, x[0].size)))
        for _, u in found:  # start orthogonal to the eigenvectors already found
            v = v - (u * v).sum(axis=1, keepdims=True) * u
        v = unit(v)
        for _ in range(iters):
            hv = hvp(v)
            for lam_i, u in found:  # deflation
                hv = hv - lam_i[:, None] * (u * v).sum(axis=1, keepdims=True) * u
            lam = (v * hv).sum(axis=1)
            v = unit(hv)
        found.append((lam, v))
        values[:, j] = backend.to_numpy(lam)
    return values


__all__ += ["input_hessian_eigenvalues"]
