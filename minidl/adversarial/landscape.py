"""The loss landscape around an input, seen by an attacker (Bhat and Tsipras 2019, section on
adversarial training smoothing the loss landscape).

Two measurements that separate naturally from adversarially trained models:

* PGD trajectories: the iterates x_0 = x, x_1, ..., x_T of PGD started at x (no random start).
  :func:`trajectory_straightness` = ||x_T - x_0|| / sum_t ||x_{t+1} - x_t|| is 1 for a straight
  path and smaller the more the gradient direction turns. :func:`trajectory_plane` spans the
  first step and the final perturbation; :func:`loss_grid` evaluates the loss on that plane and
  :func:`plot_trajectory` draws the contours with the path on top.
* Gradient similarity: the loss gradients at random points of the eps-ball around an image;
  :func:`gradient_cosine_similarities` returns their pairwise cosine similarities (all 1 for a
  model that is linear there), :func:`gradient_cosine_similarities_many` does it for many
  images, and :func:`plot_cosine_histograms` compares models.

Images are single examples without a batch axis (e.g. ``images[0]`` of shape (1, 28, 28)),
labels Python or NumPy integers; results are host NumPy arrays.
"""
import numbers

import numpy
from tqdm.auto import tqdm

from .. import backend
from ..backend import as_generator as _rng
from ..autograd import no_grad
from ..tensor import Tensor, to_host as _host
from ..validation import check_number
from .attacks import attack_loss, attack_mode, input_gradient, model_device, prepare_inputs
from .norms import pgd_step, resolve_norm, uniform_ball
from .plots import plot_cosine_histograms, plot_loss_landscape

__all__ = ["pgd_trajectories", "pgd_trajectory", "trajectory_straightness", "batch_straightness",
           "trajectory_plane", "trajectory_coordinates", "loss_grid", "plot_trajectory",
           "gradient_cosine_similarities", "gradient_cosine_similarities_many", "plot_cosine_histograms"]






def _single(image, label, op):
    """One example as a batch of one: (x of shape (1, ...), y of shape (1,)) host arrays."""
    x = _host(image)
    if x.ndim < 1:
        raise ValueError(f"{op}: image must be an array without a batch axis, got a scalar")
    y = numpy.asarray(_host(label)).reshape(-1)
    if y.shape != (1,):
        raise ValueError(f"{op}: label must be a single integer, got shape {numpy.shape(label)}")
    return x[None], y.astype(numpy.int64)


# --- PGD trajectories ---------------------------------------------------------------------------
def pgd_trajectories(model, images, labels, eps, alpha, steps, norm="2", loss="ce"):
    """Every iterate of PGD (same update and projection as :func:`minidl.adversarial.pgd`)
    started at the images themselves, for a batch. Returns a host array (steps + 1, N, ...):
    entry 0 is x, entry t the t-th iterate (plain iterates, not the best point found)."""
    op = "pgd_trajectories"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: alpha", alpha, minimum=0, strict=True)
    check_number(f"{op}: steps", steps, minimum=1, integer=True)
    x, y = prepare_inputs(model, images, labels, op)
    x0 = x.data
    cur = x0.copy()
    path = [backend.to_numpy(cur)]
    with attack_mode(model):
        for _ in range(steps):
            g, _, _ = input_gradient(model, Tensor(cur), y, loss)
            cur = pgd_step(cur, g, x0, eps, alpha, norm)
            path.append(backend.to_numpy(cur))
    return numpy.stack(path)


def pgd_trajectory(model, image, label, eps, alpha, steps, norm="2", loss="ce"):
    """The PGD path from one ``image`` (no batch axis): a list of steps + 1 host arrays shaped
    like the image, the first equal to the image (random_start=False)."""
    x, y = _single(image, label, "pgd_trajectory")
    traj = pgd_trajectories(model, x, y, eps, alpha, steps, norm, loss)
    return [t[0] for t in traj]


def _path_array(trajectory, op):
    t = numpy.stack([_host(p) for p in trajectory]) if isinstance(trajectory, (list, tuple)) else _host(trajectory)
    if t.ndim < 2 or len(t) < 2:
        raise ValueError(f"{op}: a trajectory needs at least two iterates, got shape {t.shape}")
    return t.reshape(len(t), -1).astype(numpy.float64)


def trajectory_straightness(trajectory):
    """||x_T - x_0|| / sum_t ||x_{t+1} - x_t|| for one path (a list of iterates or an array with
    time first): 1 for a straight path, in (0, 1] otherwise; NaN when the path never moves."""
    t = _path_array(trajectory, "trajectory_straightness")
    length = numpy.sqrt((numpy.diff(t, axis=0) ** 2).sum(axis=1)).sum()
    if not length > 0:
        return float("nan")
    return float(min(1.0, numpy.sqrt(((t[-1] - t[0]) ** 2).sum()) / length))


def batch_straightness(trajectories):
    """Straightness of each path of :func:`pgd_trajectories` output (steps + 1, N, ...) -> (N,)."""
    t = _host(trajectories)
    if t.ndim < 3:
        raise ValueError(f"batch_straightness: expected (steps + 1, N, ...), got shape {t.shape}")
    return numpy.array([trajectory_straightness(t[:, i]) for i in range(t.shape[1])])


def trajectory_plane(trajectory, rng=0):
    """Two orthonormal directions (u, v) shaped like the image, float64: u along the first step
    x_1 - x_0, v along the final perturbation x_T - x_0 with its u component removed. When the
    path is straight (nothing is left after removing u), v is a random direction orthogonal to
    u (from ``rng``); when the first step is zero, u follows the first step that is not."""
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
    device = model_device(model)
    points = aa.reshape(-1, *([1] * u.ndim)) * u + bb.reshape(-1, *([1] * u.ndim)) * v + x[0]
    if clip:
        points = numpy.clip(points, 0, 1)
    points = points.astype(x.dtype)
    losses, preds = [], []
    with attack_mode(model), no_grad():
        for i in range(0, len(points), batch_size):
            p = Tensor(backend.to_device(points[i:i + batch_size], device))
            yy = Tensor(backend.to_device(numpy.full(len(p), y[0], dtype=numpy.int64), device))
            logits = model(p)
            losses.append(backend.to_numpy(attack_loss(logits, yy, loss).data))
            preds.append(backend.to_numpy(logits.data.argmax(axis=1)))
    shape = (resolution, resolution)
    return {"a": a, "b": b, "loss": numpy.concatenate(losses).reshape(shape).astype(numpy.float64),
            "pred": numpy.concatenate(preds).reshape(shape)}


def plot_trajectory(model, image, label, trajectory, path, extent=None, resolution=31, clip=False, loss="ce",
                    title=None):
    """Contours of the loss on :func:`trajectory_plane` with the PGD path drawn on top, saved as
    a PNG at ``path``. ``extent`` defaults to the path's range plus a margin. Returns a dict
    with u, v, coords (the path in the plane), grid (:func:`loss_grid`) and straightness."""
    u, v = trajectory_plane(trajectory)
    coords = trajectory_coordinates(trajectory, u, v)
    if extent is None:
        span = max(float(numpy.abs(coords).max()), 1e-3)
        extent = 1.5 * span
    grid = loss_grid(model, image, label, u, v, extent, resolution, clip=clip, loss=loss)
    straight = trajectory_straightness(trajectory)
    if title is None:
        title = f"PGD path (straightness {straight:.3f})"
    plot_loss_landscape(grid, path, coords=coords, title=title)
    return {"u": u, "v": v, "coords": coords, "grid": grid, "straightness": straight}


# --- gradient similarity in the eps-ball ----------------------------------------------------------
def _ball_points(x, eps, n_points, norm, gen):
    """n_points uniform samples of the eps-ball around each row of x (host), clipped to [0, 1]:
    (m * n_points, ...) with the n_points of row i contiguous."""
    m = len(x)
    delta = uniform_ball(gen, (m * n_points,) + x.shape[1:], eps, norm).reshape((m, n_points) + x.shape[1:])
    pts = numpy.clip(x[:, None] + delta, 0, 1).astype(x.dtype)
    return pts.reshape((m * n_points,) + x.shape[1:])


def _pairwise_cosines(g):
    """Upper-triangle cosine similarities of the rows of g (NaN where a row is zero)."""
    n = numpy.linalg.norm(g, axis=1)
    unit = g / numpy.where(n > 0, n, 1)[:, None]
    c = numpy.clip(unit @ unit.T, -1, 1)
    c[n == 0, :] = numpy.nan
    c[:, n == 0] = numpy.nan
    return c[numpy.triu_indices(len(g), k=1)]


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


def gradient_cosine_similarities(model, image, label, eps, n_points=20, norm="inf", loss="ce", rng=None,
                                 batch_size=256):
    """Pairwise cosine similarities of the loss gradients at ``n_points`` uniform random points
    of the eps-ball (``norm`` 'inf' or '2') around one image (points clipped to [0, 1]).
    Returns the n_points (n_points - 1) / 2 values of the upper triangle (NaN for a pair with a
    vanishing gradient). Close to 1: the loss is nearly linear around the image."""
    op = "gradient_cosine_similarities"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: n_points", n_points, minimum=2, integer=True)
    x, y = _single(image, label, op)
    g = _ball_gradients(model, x, y, eps, n_points, norm, loss, _rng(rng), batch_size)[0]
    return _pairwise_cosines(g)


def gradient_cosine_similarities_many(model, images, labels, eps, n_points=20, norm="inf", loss="ce", rng=None,
                                      batch_size=256, progress=True):
    """:func:`gradient_cosine_similarities` for every image of a batch. Returns a dict:
    values (all pairs of all images, concatenated), per_image (N, n_points (n_points - 1) / 2)
    and per_image_mean (N,) (NaN-aware means)."""
    op = "gradient_cosine_similarities_many"
    norm = resolve_norm(norm, op)
    check_number(f"{op}: eps", eps, minimum=0)
    check_number(f"{op}: n_points", n_points, minimum=2, integer=True)
    x, y = _host(images), _host(labels)
    if y.shape != (len(x),):
        raise ValueError(f"{op}: labels must have shape ({len(x)},), got {y.shape}")
    gen = _rng(rng)
    per_chunk = max(1, batch_size // n_points)
    rows = []
    bar = tqdm(total=len(x), desc="gradient cosines", leave=False, disable=not progress)
    for i in range(0, len(x), per_chunk):
        g = _ball_gradients(model, x[i:i + per_chunk], y[i:i + per_chunk], eps, n_points, norm, loss, gen,
                            batch_size)
        rows.extend(_pairwise_cosines(gi) for gi in g)
        bar.update(len(g))
    bar.close()
    per_image = numpy.stack(rows) if rows else numpy.zeros((0, n_points * (n_points - 1) // 2))
    with numpy.errstate(all="ignore"):
        means = numpy.array([numpy.nanmean(r) if numpy.isfinite(r).any() else numpy.nan for r in per_image])
    return {"values": per_image.reshape(-1), "per_image": per_image, "per_image_mean": means}
