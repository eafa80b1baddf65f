"""The geometry every attack shares: per-example norms, step directions, projections onto the
eps-ball and uniform samples of it, for the L-inf and L2 norms.

Arrays hold a batch: axis 0 indexes examples, and every norm is taken per example over the
other axes (shape (N, ...) -> (N, 1, ..., 1), ready to broadcast). Host or device arrays.

* step direction:  sign(g) (L-inf), g / ||g||_2 (L2; 0 where g = 0), the direction of
  steepest ascent of a linear function in each ball;
* projection:      x0 + clip(x - x0, -eps, eps) (L-inf), x0 + (x - x0) min(1, eps / ||x - x0||)
  (L2), then clipped to [0, 1]. Clipping after projecting never leaves the ball: x0 is in
  [0, 1], so clipping only shrinks each coordinate of the perturbation;
* PGD step:        x <- project(x + step * direction(g)); ``step`` = +alpha ascends the loss
  (untargeted), -alpha descends it (targeted);
* uniform sample:  U(-eps, eps) per coordinate (L-inf box); for the L2 ball of dimension d, a
  uniform direction (a normalised Gaussian) times a radius eps * U^(1/d), so that points fill
  the ball uniformly instead of crowding near the centre or lying on its surface.
"""
import numpy

from .. import backend

NORMS = {"inf": "inf", "linf": "inf", numpy.inf: "inf", "2": "2", "l2": "2", 2: "2"}


def resolve_norm(norm, op):
    """'inf' or '2' for any accepted spelling of ``norm`` (see ``NORMS``); ``op`` names the
    caller in the error."""
    key = norm.lower() if isinstance(norm, str) else norm
    if key not in NORMS:
        raise ValueError(f"{op}: norm must be 'inf' or '2', got {norm!r}")
    return NORMS[key]


def per_example_norm(a):
    """||a_i||_2 per example, accumulated in float64, returned in a's dtype, shape (N, 1, ..., 1)."""
    xp = backend.get_array_module(a)
    n = xp.sqrt((a.reshape(a.shape[0], -1).astype(xp.float64) ** 2).sum(axis=1))
    return n.astype(a.dtype).reshape((-1,) + (1,) * (a.ndim - 1))


def unit(g):
    """g / ||g||_2 per example (zero where the gradient vanishes)."""
    xp = backend.get_array_module(g)
    n = per_example_norm(g)
    return g / xp.where(n > 0, n, 1)


def step_direction(g, norm):
    """The steepest-ascent direction of the gradient g in the ball of ``norm`` ('inf' or '2')."""
    return backend.get_array_module(g).sign(g) if norm == "inf" else unit(g)


def project(x_adv, x0, eps, norm):
    """Nearest point to x_adv in the eps-ball around x0 (per example), then clipped to [0, 1]."""
    xp = backend.get_array_module(x_adv)
    delta = x_adv - x0
    if norm == "inf":
        delta = xp.clip(delta, -eps, eps)
    else:
        n = per_example_norm(delta)
        delta = delta * xp.minimum(1, eps / xp.where(n > 0, n, 1))
    return xp.clip(x0 + delta, 0, 1)


def pgd_step(x, g, x0, eps, step, norm):
    """One PGD iterate: project(x + step * step_direction(g)) onto the eps-ball around x0."""
    return project(x + step * step_direction(g, norm).astype(x.dtype), x0, eps, norm)


def project_perturbation(v, eps, norm="2"):
    """The nearest point to ``v`` in the eps-ball of the L2 or L-inf norm (ONE perturbation,
    any shape, its norm taken over all entries; host or device array)."""
    norm = resolve_norm(norm, "project_perturbation")
    xp = backend.get_array_module(v)
    if norm == "inf":
        return xp.clip(v, -eps, eps)
    n = float(xp.sqrt((v.astype(xp.float64) ** 2).sum()))
    return v * min(1.0, eps / n) if n > 0 else v


def uniform_ball(gen, shape, eps, norm):
    """Offsets (``shape`` = (N, ...), float64) drawn uniformly from the eps-ball of ``norm``
    around 0, one per example, from the generator ``gen`` (NumPy or CuPy)."""
    if norm == "inf":
        return gen.uniform(-eps, eps, shape)
    n, d = shape[0], int(numpy.prod(shape[1:]))
    ones = (1,) * (len(shape) - 1)
    direction = gen.standard_normal(shape)
    xp = backend.get_array_module(direction)
    direction /= xp.sqrt((direction.reshape(n, -1) ** 2).sum(axis=1)).reshape((-1,) + ones)
    radius = eps * gen.random(n) ** (1.0 / d)
    return direction * radius.reshape((-1,) + ones)


def random_start_point(x0, eps, norm, clip=True, generator=None):
    """A uniform sample of the L-inf box or of the L2 ball of radius eps around x0, clipped to
    [0, 1] unless ``clip`` is False. ``generator`` defaults to the library's."""
    xp = backend.get_array_module(x0)
    gen = backend.rng(xp) if generator is None else generator
    start = x0 + uniform_ball(gen, x0.shape, eps, norm).astype(x0.dtype)
    return xp.clip(start, 0, 1) if clip else start
