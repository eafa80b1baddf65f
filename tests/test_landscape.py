"""Tests for minidl.adversarial.landscape: PGD paths, their straightness and gradient cosines,
one path's plane and loss grid, gradient cosines in balls, the curvature measures, the named
measures at several radii, and the pictures. Tiny linear models, quadratic losses with a known Hessian and MLPs on 4x4 images
(no convolution)."""
import numpy as np
import pytest

import minidl
from minidl import nn
from minidl.adversarial import pgd
from minidl.adversarial import input_gradient
from minidl.adversarial.landscape import (MEASURES, ball_gradient_cosines, landscape_measures, loss_grid,
                                          path_gradient_cosines, path_straightness, pgd_paths, plot_trajectory,
                                          random_to_adversarial, surface_directions, trajectory_coordinates,
                                          trajectory_plane)
from minidl.adversarial.plots import plot_cosine_histograms
from minidl.tensor import Tensor

SHAPE = (1, 4, 4)
D = 16


def two_class_linear(seed=0):
    """A 2-class linear model: the cross-entropy gradient is p_other (w_other - w_y), one
    direction everywhere."""
    rng = np.random.default_rng(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(D, 2))
    model[1].weight.array[...] = rng.standard_normal((2, D)).astype(np.float32)
    model[1].bias.array[...] = 0
    return model


def mlp(seed=0, classes=3):
    minidl.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(D, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(),
                         nn.Linear(32, classes))


def image(seed=0, lo=0.4, hi=0.6):
    return np.random.default_rng(seed).uniform(lo, hi, SHAPE).astype(np.float32)


def one_path(model, x, label, eps, alpha, steps, norm):
    """The PGD path (T + 1, ...) of the single image x."""
    return pgd_paths(model, x[None], np.array([label]), eps, alpha, steps, norm=norm)["iterates"][:, 0]


def ce(model, x, y):
    model.eval()
    with minidl.no_grad():
        z = model(minidl.tensor(x[None].astype(np.float32))).numpy()[0].astype(np.float64)
    return float(np.log(np.exp(z - z.max()).sum()) + z.max() - z[y])


# --- PGD paths ---------------------------------------------------------------------------------
@pytest.mark.parametrize("norm,eps,alpha", [("2", 0.8, 0.15), ("inf", 0.1, 0.02)])
def test_path_starts_at_x_and_stays_in_ball(norm, eps, alpha):
    model, x = mlp(1), image(1, 0.0, 1.0)
    traj = one_path(model, x, 2, eps, alpha, 12, norm)
    assert traj.shape == (13,) + SHAPE
    np.testing.assert_array_equal(traj[0], x)
    for t in traj:
        d = (t - x).ravel()
        size = np.linalg.norm(d) if norm == "2" else np.abs(d).max()
        assert size <= eps * (1 + 1e-5) + 1e-7
        assert t.min() >= 0 and t.max() <= 1
    assert not np.allclose(traj[-1], x)  # it moved
    s = path_straightness(traj[:, None])
    assert s.shape == (1,) and 0 < s[0] <= 1
    # the iterates are pgd's: its result (the best iterate) is one of them
    best = pgd(model, x[None], np.array([2]), eps, alpha, 12, norm=norm, random_start=False).numpy()[0]
    assert min(np.abs(best - t).max() for t in traj) < 1e-6


def test_straight_path_for_linear_model():
    model, x = two_class_linear(), image(0)
    # L2 steps along one constant direction; eps small enough that clipping to [0, 1] never acts
    traj = one_path(model, x, 0, 0.3, 0.05, 10, "2")
    assert path_straightness(traj[:, None])[0] == pytest.approx(1.0, abs=1e-6)
    assert np.linalg.norm(traj[-1] - x) == pytest.approx(0.3, rel=1e-5)  # reached the sphere
    # a path that turns is less straight: an L-shaped path; one that never moves has none
    corner = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]])
    still = np.zeros((3, 2))
    straight = np.array([[0.0, 0.0], [0.5, 0.0], [2.0, 0.0]])
    s = path_straightness(np.stack([corner, still, straight], axis=1))
    assert s[0] == pytest.approx(np.sqrt(2) / 2) and np.isnan(s[1]) and s[2] == pytest.approx(1.0)


def test_each_path_of_a_batch_is_the_path_the_image_gets_alone():
    model = mlp(2)
    rng = np.random.default_rng(0)
    images = rng.random((5,) + SHAPE).astype(np.float32)
    labels = rng.integers(0, 3, 5)
    trajs = pgd_paths(model, images, labels, 0.5, 0.1, 6, norm="2")["iterates"]
    assert trajs.shape == (7, 5) + SHAPE
    np.testing.assert_array_equal(trajs[0], images)
    single = one_path(model, images[3], labels[3], 0.5, 0.1, 6, "2")
    np.testing.assert_allclose(single, trajs[:, 3], atol=1e-6)
    s = path_straightness(trajs)
    assert s.shape == (5,) and ((s > 0) & (s <= 1)).all()
    flat = single.reshape(7, -1).astype(np.float64)
    by_hand = np.linalg.norm(flat[-1] - flat[0]) / np.linalg.norm(np.diff(flat, axis=0), axis=1).sum()
    assert s[3] == pytest.approx(by_hand, rel=1e-5)


def test_trajectory_plane_and_loss_grid():
    model, x = mlp(3), image(3, 0.2, 0.8)
    traj = one_path(model, x, 1, 1.0, 0.2, 10, "2")
    u, v = trajectory_plane(traj)
    assert u.shape == SHAPE and v.shape == SHAPE
    assert np.dot(u.ravel(), u.ravel()) == pytest.approx(1) and np.dot(v.ravel(), v.ravel()) == pytest.approx(1)
    assert abs(np.dot(u.ravel(), v.ravel())) < 1e-10
    first = (traj[1] - traj[0]).ravel()
    assert np.dot(u.ravel(), first) == pytest.approx(np.linalg.norm(first), rel=1e-5)
    coords = trajectory_coordinates(traj, u, v)
    assert coords.shape == (11, 2)
    np.testing.assert_allclose(coords[0], 0)
    # the final perturbation lies in the plane
    assert np.linalg.norm(coords[-1]) == pytest.approx(np.linalg.norm(traj[-1] - x), rel=1e-4)

    grid = loss_grid(model, x, 1, u, v, extent=0.5, resolution=5)
    assert grid["loss"].shape == (5, 5) and grid["pred"].shape == (5, 5)
    np.testing.assert_allclose(grid["a"], np.linspace(-0.5, 0.5, 5))
    assert grid["loss"][2, 2] == pytest.approx(ce(model, x, 1), rel=1e-4)
    corner = x + grid["a"][4] * u + grid["b"][0] * v  # loss indexed [b, a]
    assert grid["loss"][0, 4] == pytest.approx(ce(model, corner, 1), rel=1e-4)
    # asymmetric extent; clipping changes points that leave [0, 1]
    g2 = loss_grid(model, x, 1, u, v, extent=(0, 2, -1, 1), resolution=3, clip=True)
    clipped = np.clip(x + 2 * u + 1 * v, 0, 1)
    assert g2["loss"][2, 2] == pytest.approx(ce(model, clipped, 1), rel=1e-4)


def test_plane_of_a_straight_path_is_still_orthonormal():
    model, x = two_class_linear(), image(0)
    traj = one_path(model, x, 0, 0.3, 0.05, 10, "2")
    u, v = trajectory_plane(traj)
    assert abs(np.dot(u.ravel(), v.ravel())) < 1e-10
    assert np.linalg.norm(v) == pytest.approx(1)
    with pytest.raises(ValueError):
        trajectory_plane([x, x])


# --- gradient cosines in balls ---------------------------------------------------------------------
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_linear_model_gradients_are_parallel(norm):
    model = two_class_linear(4)
    out = ball_gradient_cosines(model, image(4)[None], np.array([1]), [0.1], n_points=12, norm=norm, rng=0)
    assert out["pairwise"].shape == (1, 1, 12 * 11 // 2)
    np.testing.assert_allclose(out["pairwise"], 1.0, atol=1e-5)
    np.testing.assert_allclose(out["centre_cosine"], 1.0, atol=1e-5)


def test_cosines_of_a_nonlinear_model_and_many_images():
    model = mlp(5)
    rng = np.random.default_rng(5)
    images = rng.random((4,) + SHAPE).astype(np.float32)
    labels = rng.integers(0, 3, 4)
    out = ball_gradient_cosines(model, images, labels, [0.1, 0.5], n_points=10, rng=0, batch_size=25)
    assert out["pairwise"].shape == (2, 4, 45)
    assert out["ball_cosine"].shape == (2, 4) and out["centre_cosine"].shape == (2, 4)
    np.testing.assert_array_equal(out["radii"], [0.1, 0.5])
    sims = out["pairwise"]
    assert ((sims >= -1) & (sims <= 1)).all()
    assert sims[1].min() < 0.999  # a ReLU net is not linear over a large ball
    np.testing.assert_allclose(out["ball_cosine"], sims.mean(axis=2))
    again = ball_gradient_cosines(model, images, labels, [0.1, 0.5], n_points=10, rng=0, batch_size=25)
    np.testing.assert_array_equal(sims, again["pairwise"])
    # a single chunk draws other points, but the same kind of numbers
    whole = ball_gradient_cosines(model, images, labels, [0.1, 0.5], n_points=10, rng=0, batch_size=256)
    assert not np.array_equal(sims, whole["pairwise"]) and whole["pairwise"].shape == sims.shape
    lin = ball_gradient_cosines(two_class_linear(), images, labels % 2, [0.1], n_points=5)
    np.testing.assert_allclose(lin["pairwise"], 1.0, atol=1e-5)


# --- named measures at several radii ---------------------------------------------------------------
class Quadratic:
    """A plain function of x with logits (0, q(x)), q(x) = b.(x - c) + (1/2) (x - c)' diag(h) (x - c):
    with label 0 the margin loss is q itself, so its gradient b + h (x - c) and Hessian diag(h)
    are known."""

    def __init__(self, c, b, h):
        self.c, self.b, self.h = (np.asarray(a, np.float32).reshape(-1) for a in (c, b, h))

    def __call__(self, x):
        d = x.reshape(len(x), -1) - Tensor(self.c)
        q = (d * Tensor(self.b)).sum(axis=1) + 0.5 * (d * d * Tensor(self.h)).sum(axis=1)
        return q.reshape(-1, 1) * Tensor(np.array([[0, 1]], np.float32))


class Recorder:
    """``model`` that keeps every input it is called on."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __call__(self, x):
        self.seen.append(x.numpy().copy())
        return self.model(x)


def linear_in_x(norm):
    """Every measure's value for a loss that is linear in the ball."""
    return {name: 1.0 if way == "higher" else 0.0 for name, (way, _) in MEASURES.items()}


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_a_linear_loss_is_flat_by_every_measure(norm):
    """The margin loss of a 2-class linear model is linear in x: every cosine and the
    straightness are 1, the ratio and the Taylor remainders 0 (points stay inside [0, 1])."""
    images = np.stack([image(s) for s in range(3)])
    out = landscape_measures(two_class_linear(7), images, np.array([0, 1, 0]), [0.05, 0.2], norm=norm, n_points=6,
                             n_directions=3, steps=8, loss="margin", rng=0)
    for name, value in linear_in_x(norm).items():
        assert out[name].shape == (2, 3), name
        np.testing.assert_allclose(out[name], value, atol=2e-5, err_msg=name)
    assert out["pairwise"].shape == (2, 3, 15) and out["example_path"].shape == (2, 9) + SHAPE
    np.testing.assert_array_equal(out["radii"], [0.05, 0.2])


def isotropic(h=2.0, beta=0.5, seed=0):
    """q with c = the image (all 0.5), b = beta * random signs, H = h I: the gradient at the
    image is b, PGD runs straight along b's signs (L-inf) or along b (L2)."""
    signs = np.sign(np.random.default_rng(seed).standard_normal(D))
    return Quadratic(np.full(D, 0.5), beta * signs, np.full(D, h)), np.full((2,) + SHAPE, 0.5, np.float32)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_isotropic_quadratic_has_the_known_curvature(norm):
    h, beta = 2.0, 0.5
    model, x = isotropic(h, beta)
    y = np.zeros(2, np.int64)
    for r in (0.1, 0.3):
        out = random_to_adversarial(model, x, y, r, norm=norm, n_directions=3, steps=10, loss="margin", rng=1)
        # |d|^2 of a surface point and of PGD's point: D r^2 (a corner of the box) or r^2
        sq = D * r ** 2 if norm == "inf" else r ** 2
        slope = beta * D * r if norm == "inf" else beta * np.sqrt(D) * r   # g . d* = r |b|_1 or r |b|_2
        curv = 0.5 * h * sq
        np.testing.assert_allclose(out["random_increase"], curv, rtol=1e-4)
        np.testing.assert_allclose(out["adversarial_increase"], slope + curv, rtol=1e-4)
        np.testing.assert_allclose(out["ratio"], curv / (slope + curv), rtol=1e-4)
        np.testing.assert_allclose(out["taylor_remainder"], curv, rtol=1e-4)
        np.testing.assert_allclose(out["taylor_remainder_relative"], curv / (slope + curv), rtol=1e-4)
        np.testing.assert_allclose(out["taylor_remainder_random"], curv, rtol=1e-4)
    # the gradient b + h d stays parallel to b along PGD's path: cosines and straightness are 1
    path = pgd_paths(model, x, y, 0.3, steps=10, norm=norm, loss="margin")
    cos = path_gradient_cosines(path["gradients"])
    np.testing.assert_allclose(cos["successive"], 1, atol=1e-6)
    np.testing.assert_allclose(cos["initial"], 1, atol=1e-6)
    np.testing.assert_allclose(path_straightness(path["iterates"]), 1, atol=1e-6)


def test_cosines_decay_as_the_hessian_says():
    """q(x) = beta x_1 + (h / 2) (x_2 - 1/2)^2 on two pixels: g = (beta, h d_2) with d_2 uniform on
    [-r, r] in the L-inf ball, so cos(g, g_0) = beta / sqrt(beta^2 + h^2 d_2^2) has the mean
    (beta / (h r)) asinh(h r / beta), and the pairwise mean is a double integral (computed on a
    grid). PGD moves along x_1 only, where the loss is linear: its Taylor remainder is 0, while
    random corners (d_2 = +-r) see the curvature: ratio (h r^2 / 2) / (beta r)."""
    beta, h = 1.0, 20.0
    model = Quadratic([0.5, 0.5], [beta, 0], [0, h])
    x = np.full((8, 1, 1, 2), 0.5, np.float32)
    y = np.zeros(8, np.int64)
    radii = [0.05, 0.15, 0.4]
    out = ball_gradient_cosines(model, x, y, radii, norm="inf", n_points=300, loss="margin", rng=0)
    t = (np.arange(2000) + 0.5) / 2000 * 2 - 1   # midpoints of [-1, 1]
    for i, r in enumerate(radii):
        k = h * r / beta
        centre = np.arcsinh(k) / k
        g = np.stack([np.ones_like(t), k * t], axis=1)
        g /= np.linalg.norm(g, axis=1, keepdims=True)
        pairwise = (g @ g.T).mean()
        # 8 images x 300 points: the standard error of the means is below 0.005
        assert out["centre_cosine"][i].mean() == pytest.approx(centre, abs=0.015)
        assert out["ball_cosine"][i].mean() == pytest.approx(pairwise, abs=0.015)
    for name in ("ball_cosine", "centre_cosine"):
        assert (np.diff(out[name].mean(axis=1)) < 0).all(), name
    for r in radii:
        curv = random_to_adversarial(model, x, y, r, norm="inf", n_directions=2, steps=5, loss="margin", rng=0)
        np.testing.assert_allclose(curv["taylor_remainder"], 0, atol=1e-5)
        np.testing.assert_allclose(curv["ratio"], (h * r ** 2 / 2) / (beta * r), rtol=1e-4)


def test_pgd_paths_hold_the_steps_losses_and_gradients():
    model = mlp(8)
    rng = np.random.default_rng(8)
    images = rng.random((3,) + SHAPE).astype(np.float32)
    labels = np.array([0, 2, 1])
    path = pgd_paths(model, images, labels, 0.5, 0.1, 5, norm="2")
    assert path["iterates"].shape == (6, 3) + SHAPE
    assert path["gradients"].shape == (6, 3, D) and path["losses"].shape == (6, 3)
    # each L2 step is alpha along the gradient at the iterate before it, projected (the ball
    # of radius 0.5 is not reached in one step of 0.1, so only [0, 1] acts)
    for t in (0, 4):
        g = path["gradients"][t]
        step = path["iterates"][t].reshape(3, -1) + 0.1 * g / np.linalg.norm(g, axis=1, keepdims=True)
        if t == 4:  # later steps may meet the ball: compare only the points still well inside it
            inside = np.linalg.norm(step - images.reshape(3, -1), axis=1) < 0.5
            assert inside.any()
        else:
            inside = np.ones(3, bool)
        np.testing.assert_allclose(path["iterates"][t + 1].reshape(3, -1)[inside], np.clip(step, 0, 1)[inside],
                                   atol=1e-6)
    for t in (0, 5):
        for i in range(3):
            assert path["losses"][t, i] == pytest.approx(ce(model, path["iterates"][t, i], labels[i]), rel=1e-4)
    g0 = input_gradient(model, minidl.tensor(images), minidl.tensor(labels))[0]
    np.testing.assert_allclose(path["gradients"][0], g0.reshape(3, -1), rtol=1e-5, atol=1e-7)
    # the default step is pgd_alpha: 2.5 eps / steps
    np.testing.assert_array_equal(pgd_paths(model, images, labels, 0.5, steps=5)["iterates"],
                                  pgd_paths(model, images, labels, 0.5, 2.5 * 0.5 / 5, 5)["iterates"])
    cos = path_gradient_cosines(path["gradients"])
    assert cos["successive"].shape == (5, 3) and cos["initial"].shape == (5, 3)
    ref = path["gradients"][1, 2] @ path["gradients"][2, 2] / np.linalg.norm(path["gradients"][1, 2]) / \
        np.linalg.norm(path["gradients"][2, 2])
    assert cos["successive"][1, 2] == pytest.approx(ref)
    assert cos["initial"][4, 0] == pytest.approx(
        path["gradients"][0, 0] @ path["gradients"][5, 0] / np.linalg.norm(path["gradients"][0, 0])
        / np.linalg.norm(path["gradients"][5, 0]))


def test_the_adversarial_point_is_the_strongest_iterate_and_the_taylor_term_uses_the_gradient_at_x():
    """A given path whose loss peaks half-way: x* is that iterate, not the last, and the
    first-order term is g(x) . (x* - x) with the gradient at the image, not at x*."""
    model = two_class_linear(11)
    x = np.full((1,) + SHAPE, 0.5, np.float32)
    y = np.array([0])
    step = np.zeros(SHAPE, np.float32)
    step[0, 0, 0] = 0.1
    iterates = np.stack([x, x + step, x + 2 * step])
    grads = np.zeros((3, 1, D))
    grads[0, 0, 0], grads[1, 0, 0], grads[2, 0, 0] = 3.0, -50.0, 70.0
    losses = np.array([[1.0], [2.0], [1.5]])
    path = {"iterates": iterates, "gradients": grads, "losses": losses}
    out = random_to_adversarial(model, x, y, 0.2, norm="inf", n_directions=1, loss="margin", rng=0, path=path)
    assert out["adversarial_increase"][0] == pytest.approx(1.0)
    assert out["taylor_remainder"][0] == pytest.approx(abs(1.0 - 3.0 * 0.1), rel=1e-5)
    assert out["taylor_remainder_relative"][0] == pytest.approx(0.7, rel=1e-5)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_surface_directions_are_antithetic_and_on_the_sphere(norm):
    d = surface_directions(np.random.default_rng(0), (5,) + SHAPE, 3, 0.2, norm)
    assert d.shape == (6, 5) + SHAPE
    np.testing.assert_array_equal(d[3:], -d[:3])
    flat = d.reshape(6, 5, -1)
    size = np.abs(flat).max(axis=2) if norm == "inf" else np.linalg.norm(flat, axis=2)
    np.testing.assert_allclose(size, 0.2)
    if norm == "inf":
        np.testing.assert_allclose(np.abs(flat), 0.2)   # a corner of the box
    assert not np.allclose(d[0], d[1])


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_every_point_looked_at_is_in_the_ball_and_the_box(norm):
    """Images near 0 and 1, so that clipping acts; the model records what it is asked about."""
    images = np.random.default_rng(9).choice([0.0, 0.05, 0.95, 1.0], (2,) + SHAPE).astype(np.float32)
    labels = np.array([0, 1])
    eps = 0.3 if norm == "inf" else 0.8
    model = Recorder(mlp(9))
    landscape_measures(model, images, labels, [eps / 2, eps], norm=norm, n_points=4, n_directions=2, steps=4, rng=0)
    seen = np.concatenate([s.reshape(-1, *SHAPE) for s in model.seen])
    assert len(seen) >= 2 * (2 * 4 + 2 * 5 + 2 * 4)
    assert seen.min() >= 0 and seen.max() <= 1
    offsets = (seen[:, None] - images[None]).reshape(len(seen), 2, -1)
    size = np.abs(offsets).max(axis=2) if norm == "inf" else np.linalg.norm(offsets, axis=2)
    assert (size.min(axis=1) <= eps * (1 + 1e-5)).all()   # each point is near one of the images


def test_measures_are_deterministic_under_a_seed():
    model = mlp(10)
    images = np.random.default_rng(10).random((3,) + SHAPE).astype(np.float32)
    labels = np.array([0, 1, 2])
    run = lambda seed: landscape_measures(model, images, labels, [0.1, 0.3], n_points=4, n_directions=2, steps=3,
                                          rng=seed)
    a, b, c = run(0), run(0), run(1)
    for name in list(MEASURES) + ["pairwise"]:
        np.testing.assert_array_equal(a[name], b[name], err_msg=name)
    assert not np.array_equal(a["ball_cosine"], c["ball_cosine"])
    assert not np.array_equal(a["random_to_adversarial"], c["random_to_adversarial"])
    np.testing.assert_array_equal(a["straightness"], c["straightness"])   # PGD has no random start
    for name in MEASURES:
        if MEASURES[name][0] == "higher" and name != "straightness":
            assert ((a[name] >= -1) & (a[name] <= 1)).all(), name
    assert ((a["straightness"] > 0) & (a["straightness"] <= 1)).all()
    assert (a["taylor_remainder"] >= 0).all()


@pytest.mark.parametrize("call, message", [
    (lambda m, x, y: landscape_measures(m, x, y, []), "landscape_measures: radii must be a non-empty list"),
    (lambda m, x, y: landscape_measures(m, x, y, 0.3), "landscape_measures: radii must be a non-empty list"),
    (lambda m, x, y: landscape_measures(m, x, y, [0.1, 0.0]), r"landscape_measures: radii\[1\]: expected"),
    (lambda m, x, y: landscape_measures(m, x, y, [float("nan")]), r"landscape_measures: radii\[0\]: expected"),
    (lambda m, x, y: ball_gradient_cosines(m, x, y, [-0.1]), r"ball_gradient_cosines: radii\[0\]: expected"),
    (lambda m, x, y: landscape_measures(m, x, y, [0.1], norm="1"), "landscape_measures: norm must be"),
    (lambda m, x, y: random_to_adversarial(m, x, y, 0.1, n_directions=0), "random_to_adversarial: n_directions"),
    (lambda m, x, y: random_to_adversarial(m, x, y, 0.0), "random_to_adversarial: eps: expected"),
    (lambda m, x, y: random_to_adversarial(m, x + 0.6, y, 0.1), r"random_to_adversarial: x must lie in \[0, 1\]"),
    (lambda m, x, y: ball_gradient_cosines(m, x, y[:1], [0.1]), r"labels must have shape \(2,\)"),
    (lambda m, x, y: path_gradient_cosines(np.zeros((1, 2, 3))), "path_gradient_cosines: gradients must be"),
    (lambda m, x, y: path_straightness(np.zeros((3, 4))), r"path_straightness: iterates must be"),
    (lambda m, x, y: path_straightness(np.zeros((1, 2, 3))), r"path_straightness: iterates must be"),
    (lambda m, x, y: pgd_paths(m, x, y, 0.1, steps=0), "pgd_paths: steps: expected"),
    (lambda m, x, y: pgd_paths(m, x, y, -0.1), "pgd_paths: eps: expected"),
    (lambda m, x, y: pgd_paths(m, x, y, 0.1, alpha=0.0), "pgd_paths: alpha: expected"),
    (lambda m, x, y: pgd_paths(m, x, y, 0.1, norm="1"), "pgd_paths: norm must be"),
])
def test_bad_arguments_are_named(call, message):
    x = np.full((2,) + SHAPE, 0.5, np.float32)
    with pytest.raises((ValueError, TypeError), match=message):
        call(mlp(0), x, np.array([0, 1]))


# --- pictures -----------------------------------------------------------------------------------
def test_plots_write_pngs(tmp_path):
    model, x = mlp(6), image(6, 0.1, 0.9)
    traj = one_path(model, x, 0, 1.0, 0.2, 8, "2")
    out = plot_trajectory(model, x, 0, traj, tmp_path / "traj.png", resolution=9)
    assert out["coords"].shape == (9, 2) and out["grid"]["loss"].shape == (9, 9)
    assert 0 < out["straightness"] <= 1
    assert out["straightness"] == path_straightness(traj[:, None])[0]
    sims = {name: ball_gradient_cosines(m, x[None], np.array([0]), [0.3], n_points=8, rng=0)["pairwise"]
            for name, m in (("natural", model), ("linear", two_class_linear()))}
    hist = plot_cosine_histograms(sims, tmp_path / "deep" / "cos.png")
    for p in (tmp_path / "traj.png", hist):
        assert p.exists() and p.stat().st_size > 1000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
