"""Tests for minidl.adversarial.attacks: FGSM, PGD (L-inf and L2), random starts, restarts,
targeted attacks, the margin loss and expectation over transformation.

The reference points are closed forms. For a 2-class linear model with logits W x + b,
the logit difference is f(x) = w.x + c with w = W[1] - W[0], c = b[1] - b[0]; both the
cross-entropy and the margin loss of label y are decreasing functions of (2y-1) f(x), so
the loss-maximizing perturbation in an eps-ball (when clipping to [0, 1] is inactive) is

    L-inf:  -eps * sign(w) * (2y-1)        L2:  -eps * w / ||w|| * (2y-1).
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from scipy import stats

import minidl as md
from minidl import nn
from minidl.adversarial import attacks as A
from minidl.adversarial import fgsm, fgsm_random_start, input_gradient, noisy_fgsm, pgd
from minidl.tensor import Tensor

from conftest import linear_model, make_blocks

F64 = np.float64


# --- helpers ------------------------------------------------------------------------------
def to_dtype(model, dtype):
    for p in model.parameters():
        p.array = p.array.astype(dtype)
    return model


def logits_of(model, x):
    was = model.training
    model.eval()
    with md.no_grad():
        out = model(Tensor(np.asarray(x))).numpy().astype(F64)
    model.train(was)
    return out


def ce_np(z, y):
    z = z - z.max(axis=1, keepdims=True)
    return np.log(np.exp(z).sum(axis=1)) - z[np.arange(len(y)), y]


def margin_np(z, y):
    other = z.copy()
    other[np.arange(len(y)), y] = -np.inf
    return other.max(axis=1) - z[np.arange(len(y)), y]


def per_example_l2(d):
    return np.sqrt((np.asarray(d, dtype=F64).reshape(len(d), -1) ** 2).sum(axis=1))


def binary_problem(seed, n=8, d=6):
    """A 2-class float64 linear model with |w_i| >= 0.2, interior inputs in [0.3, 0.7] and mixed labels."""
    rng = np.random.default_rng(seed)
    W = rng.normal(size=(2, d))
    w = rng.uniform(0.2, 1.5, d) * rng.choice([-1.0, 1.0], d)
    W[1] = W[0] + w
    b = rng.normal(size=2) * 0.1
    x = rng.uniform(0.3, 0.7, (n, d))
    y = np.arange(n) % 2
    return linear_model(W, b), x, y, w


def optimal_delta(w, y, eps, norm):
    sgn = (2 * y - 1).astype(F64)[:, None]
    direction = np.sign(w)[None, :] if norm == "inf" else (w / np.linalg.norm(w))[None, :]
    return -eps * direction * sgn


def check_closed_form(model, x, y, x_adv, w, eps, norm):
    x_adv = x_adv.numpy() if isinstance(x_adv, Tensor) else x_adv
    assert x_adv.dtype == F64
    delta = optimal_delta(w, y, eps, norm)
    # L2 iterates approach the optimum at an angle theta with a loss deficit ~ theta^2, so the
    # loss (hence the kept point) resolves the direction to about sqrt(float64 eps) ~ 1e-8
    np.testing.assert_allclose(x_adv - x, delta, rtol=0, atol=1e-9 if norm == "inf" else 1e-7)
    optimum = ce_np(logits_of(model, x + delta), y)
    np.testing.assert_allclose(ce_np(logits_of(model, x_adv), y), optimum, rtol=1e-5)
    # and it really is a maximum: higher than the clean loss and than random points of the ball
    assert np.all(optimum > ce_np(logits_of(model, x), y))


# --- closed forms on a linear model ---------------------------------------------------------
@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_fgsm_reaches_the_linear_optimum(norm, eps):
    model, x, y, w = binary_problem(0)
    check_closed_form(model, x, y, fgsm(model, x, y, eps, norm=norm), w, eps, norm)


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_pgd_reaches_the_linear_optimum(norm, random_start, loss):
    model, x, y, w = binary_problem(1)
    eps = 0.15
    # L-inf: a corner is reached exactly after 2 eps / alpha steps; L2: each projection
    # shrinks the component orthogonal to w by about eps / alpha.
    alpha = eps / 4 if norm == "inf" else 10 * eps
    md.manual_seed(3)
    x_adv = pgd(model, x, y, eps, alpha, steps=12, norm=norm, random_start=random_start, loss=loss)
    check_closed_form(model, x, y, x_adv, w, eps, norm)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_optimal_loss_values(norm):
    """The optimum's loss in closed form: the margin -(2y-1) f(x) grows by eps ||w||_1 (L-inf)
    or eps ||w||_2 (L2); cross-entropy is log(1 + exp(margin))."""
    model, x, y, w = binary_problem(2)
    eps = 0.1
    x_adv = pgd(model, x, y, eps, eps / 2, steps=6, norm=norm, random_start=False).numpy()
    dual = np.abs(w).sum() if norm == "inf" else np.linalg.norm(w)
    clean_margin = margin_np(logits_of(model, x), y)
    np.testing.assert_allclose(margin_np(logits_of(model, x_adv), y), clean_margin + eps * dual, rtol=1e-5)
    np.testing.assert_allclose(ce_np(logits_of(model, x_adv), y), np.logaddexp(0, clean_margin + eps * dual),
                               rtol=1e-5)


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_targeted_at_the_other_class_is_the_untargeted_optimum(norm):
    """With two classes, moving toward class 1-y is moving away from y."""
    model, x, y, w = binary_problem(4)
    eps = 0.1
    check_closed_form(model, x, y, fgsm(model, x, 1 - y, eps, norm=norm, targeted=True), w, eps, norm)
    x_adv = pgd(model, x, 1 - y, eps, eps / 2, steps=8, norm=norm, random_start=False, targeted=True)
    if norm == "inf":
        check_closed_form(model, x, y, x_adv, w, eps, norm)
    else:  # from x, the first step already lands on the optimum
        np.testing.assert_allclose(x_adv.numpy() - x, optimal_delta(w, y, eps, norm), atol=1e-9)


def test_clipping_to_the_unit_box():
    """Where the optimum leaves [0, 1], FGSM stops at the box: x' = clip(x + delta*)."""
    model, x, y, w = binary_problem(5)
    x = x.copy()
    x[:, 0] = np.where(-np.sign(w[0]) * (2 * y - 1) > 0, 0.98, 0.02)  # pushed outward: clipped
    eps = 0.1
    x_adv = fgsm(model, x, y, eps).numpy()
    np.testing.assert_allclose(x_adv, np.clip(x + optimal_delta(w, y, eps, "inf"), 0, 1), atol=1e-12)
    assert x_adv.min() >= 0 and x_adv.max() <= 1


# --- targeted attacks ---------------------------------------------------------------------
def target_margin(z, t):
    return -margin_np(z, t)  # z_t - max_{j != t} z_j


@pytest.mark.parametrize("loss", ["ce", "margin"])
@pytest.mark.parametrize("norm", ["inf", "2"])
def test_targeted_moves_toward_the_target(loss, norm):
    rng = np.random.default_rng(7)
    d, c, n = 8, 4, 20
    model = linear_model(rng.normal(size=(c, d)), rng.normal(size=c) * 0.1)
    x = rng.uniform(0.2, 0.8, (n, d))
    z0 = logits_of(model, x)
    y = z0.argmax(axis=1)
    t = (y + 1 + rng.integers(0, c - 1, n)) % c
    assert np.all(t != y)
    eps = 0.05 if norm == "inf" else 0.15
    before = target_margin(z0, t)
    x_pgd = pgd(model, x, t, eps, eps / 4, steps=10, norm=norm, random_start=False, targeted=True, loss=loss)
    after = target_margin(logits_of(model, x_pgd.numpy()), t)
    assert np.all(after > before + 1e-9)
    if loss == "ce":
        after_fgsm = target_margin(logits_of(model, fgsm(model, x, t, eps, norm=norm, targeted=True).numpy()), t)
        assert np.all(after_fgsm > before)
    # an untargeted attack, by contrast, is not asked to favour t: the targeted one does better on it
    x_un = pgd(model, x, y, eps, eps / 4, steps=10, norm=norm, random_start=False, loss=loss)
    assert np.mean(target_margin(logits_of(model, x_un.numpy()), t)) < np.mean(after)


def test_targeted_succeeds_on_an_easy_model():
    """Each class k owns feature k; with eps = 0.5 any target can be reached from the centre."""
    c = 3
    model = linear_model(10 * np.eye(c), np.zeros(c))
    rng = np.random.default_rng(0)
    x = 0.5 + rng.uniform(-0.1, 0.1, (30, c))
    y = logits_of(model, x).argmax(axis=1)
    t = (y + 1) % c
    for x_adv in (pgd(model, x, t, 0.5, 0.1, steps=10, targeted=True),
                  fgsm(model, x, t, 0.5, targeted=True)):
        assert np.all(logits_of(model, x_adv.numpy()).argmax(axis=1) == t)


# --- hypothesis invariants: the ball and the box ------------------------------------------
@st.composite
def problems(draw):
    """A small random model (linear or MLP, maybe on image-shaped input) and a batch in [0, 1]."""
    seed = draw(st.integers(0, 2 ** 16))
    rng = np.random.default_rng(seed)
    c = draw(st.integers(2, 4))
    n = draw(st.integers(1, 5))
    shape = draw(st.sampled_from([(5,), (1, 3, 3), (2, 2, 2)]))
    d = int(np.prod(shape))
    dtype = draw(st.sampled_from([np.float32, F64]))
    md.manual_seed(seed)
    layers = [nn.Flatten()] if len(shape) > 1 else []
    if draw(st.booleans()):
        layers += [nn.Linear(d, 6), draw(st.sampled_from([nn.ReLU, nn.Tanh]))(), nn.Linear(6, c)]
    else:
        layers += [nn.Linear(d, c)]
    model = to_dtype(nn.Sequential(*layers), dtype)
    for p in model.parameters():  # non-zero biases too
        p.array = p.array + rng.normal(scale=0.3, size=p.shape).astype(dtype)
    x = rng.uniform(0, 1, (n,) + shape)
    x[rng.random(x.shape) < 0.2] = 0.0  # points on the box's faces, where clipping matters
    x[rng.random(x.shape) < 0.2] = 1.0
    y = rng.integers(0, c, n)
    return model, x.astype(dtype), y, seed


def assert_in_ball(x_adv, x, eps, norm):
    x_adv = x_adv.numpy() if isinstance(x_adv, Tensor) else x_adv
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype
    assert np.all(np.isfinite(x_adv))
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    delta = x_adv.astype(F64) - x.astype(F64)
    if norm == "inf":
        assert np.abs(delta).max() <= eps + 1e-6
    else:
        # storing x' in x's dtype rounds each coordinate by up to half an ulp (<= finfo.eps / 2
        # for values in [0, 1]): negligible in float64, visible in float32 only for tiny eps
        rounding = np.sqrt(delta[0].size) * np.finfo(x.dtype).eps / 2
        assert np.all(per_example_l2(delta) <= eps * (1 + 1e-5) + rounding)


FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(problems(), st.floats(0, 0.6), st.sampled_from(["inf", "2"]), st.booleans(), st.sampled_from(["ce", "margin"]))
def test_fgsm_stays_in_ball_and_box(problem, eps, norm, targeted, loss):
    model, x, y, _ = problem
    assert_in_ball(fgsm(model, x, y, eps, norm=norm, targeted=targeted, loss=loss), x, eps, norm)


@FAST
@given(problems(), st.floats(0, 0.6), st.sampled_from(["inf", "2"]), st.sampled_from([None, 0.01, 0.5]))
def test_fgsm_random_start_stays_in_ball_and_box(problem, eps, norm, alpha):
    model, x, y, _ = problem
    assert_in_ball(fgsm_random_start(model, x, y, eps, alpha=alpha, norm=norm), x, eps, norm)


@FAST
@given(problems(), st.floats(0, 0.3), st.sampled_from(["inf", "2"]), st.sampled_from([None, 0.0, 0.05, 0.4]),
       st.sampled_from([None, 0.01, 0.2]))
def test_noisy_fgsm_stays_in_its_wider_ball_and_box(problem, eps, norm, noise, alpha):
    """N-FGSM does not project: its perturbation is bounded by noise + alpha (defaults 2 eps
    and eps), not by eps."""
    model, x, y, _ = problem
    radius = (2 * eps if noise is None else noise) + (eps if alpha is None else alpha)
    assert_in_ball(noisy_fgsm(model, x, y, eps, noise=noise, alpha=alpha, norm=norm), x, radius, norm)


def test_noisy_fgsm_is_noise_plus_a_signed_step():
    """On a 2-class linear model the loss gradient's sign is the same at every point,
    -(2y-1) sign(w), so x_adv - x - alpha * that sign must be the noise itself: uniform on
    [-noise, noise] per coordinate (interior inputs, nothing clipped) and, because nothing is
    projected, well beyond eps on many coordinates."""
    model, x, y, w = binary_problem(11, n=400, d=6)
    eps = 0.05
    x_adv = seeded(3, noisy_fgsm, model, x, y, eps)                        # noise 0.1, alpha 0.05
    step = eps * (-(2 * y - 1)[:, None] * np.sign(w)[None, :])
    eta = x_adv - x - step
    assert np.abs(eta).max() <= 2 * eps + 1e-12
    assert stats.kstest(eta.ravel(), stats.uniform(-2 * eps, 4 * eps).cdf).pvalue > 1e-3
    assert (np.abs(x_adv - x) > 1.5 * eps).mean() > 0.3
    # alpha and noise are honoured as given
    x_adv = seeded(3, noisy_fgsm, model, x, y, eps, noise=0.0, alpha=0.07)
    np.testing.assert_allclose(x_adv - x, 0.07 / eps * step, atol=1e-12)
    np.testing.assert_array_equal(seeded(4, noisy_fgsm, model, x, y, eps), seeded(4, noisy_fgsm, model, x, y, eps))
    assert not np.array_equal(seeded(4, noisy_fgsm, model, x, y, eps), seeded(5, noisy_fgsm, model, x, y, eps))


@FAST
@given(problems(), st.floats(0, 0.6), st.floats(0.05, 3.0), st.integers(1, 4), st.sampled_from(["inf", "2"]),
       st.booleans(), st.booleans(), st.integers(1, 3), st.sampled_from(["ce", "margin"]))
def test_pgd_stays_in_ball_and_box(problem, eps, alpha_ratio, steps, norm, random_start, targeted, restarts, loss):
    model, x, y, _ = problem
    alpha = max(alpha_ratio * eps, 1e-3)
    x_adv = pgd(model, x, y, eps, alpha, steps, norm=norm, random_start=random_start, restarts=restarts,
                targeted=targeted, loss=loss)
    assert_in_ball(x_adv, x, eps, norm)


@FAST
@given(problems(), st.floats(0.01, 0.5), st.sampled_from(["inf", "2"]), st.booleans(), st.integers(2, 4),
       st.sampled_from(["ce", "margin"]))
def test_restarts_never_weaken_the_attack(problem, eps, norm, targeted, restarts, loss):
    """With the same seed the first restart repeats the single run; later ones only improve it:
    each example is broken, or its loss is at least as bad for the model."""
    model, x, y, seed = problem
    kw = dict(eps=eps, alpha=eps / 3, steps=3, norm=norm, targeted=targeted, loss=loss)
    md.manual_seed(seed)
    one = pgd(model, x, y, restarts=1, **kw).numpy()
    md.manual_seed(seed)
    many = pgd(model, x, y, restarts=restarts, **kw).numpy()
    z1, zk = logits_of(model, one), logits_of(model, many)
    loss_fn = ce_np if loss == "ce" else margin_np
    l1, lk = loss_fn(z1, y), loss_fn(zk, y)
    if targeted:
        success1, successk = z1.argmax(1) == y, zk.argmax(1) == y
        assert np.all(successk | (lk <= l1 + 1e-6))
    else:
        success1, successk = z1.argmax(1) != y, zk.argmax(1) != y
        assert np.all(successk | (lk >= l1 - 1e-6))
    assert np.all(successk | ~success1)


def test_restarts_find_points_a_single_run_misses():
    """A model that is only fooled in one narrow corner: with random starts and a tiny step,
    more restarts break more examples (and never fewer)."""
    d = 6
    model = linear_model(np.stack([np.zeros(d), np.ones(d)]), [0.0, -0.5 * d - 0.1])
    x = np.full((40, d), 0.5)
    y = np.zeros(40, dtype=np.int64)  # f(x) = sum(x) - 3.1 < 0: class 0 unless pushed up by > 0.1 in total
    kw = dict(eps=0.05, alpha=1e-3, steps=1, norm="inf")
    md.manual_seed(0)
    broken1 = logits_of(model, pgd(model, x, y, restarts=1, **kw).numpy()).argmax(1) != y
    md.manual_seed(0)
    broken8 = logits_of(model, pgd(model, x, y, restarts=8, **kw).numpy()).argmax(1) != y
    assert np.all(broken8 | ~broken1)
    assert broken8.sum() > broken1.sum()


# --- random starts ------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(1,), (2,), (3,), (7,), (2, 3, 2)])
def test_l2_random_start_is_uniform_in_the_ball(shape):
    n, eps = 3000, 0.3
    d = int(np.prod(shape))
    x0 = np.full((n,) + shape, 0.5)  # eps < 0.5: clipping never acts
    md.manual_seed(11)
    delta = A.random_start_point(x0, eps, "2") - x0
    r = per_example_l2(delta)
    assert np.all(r <= eps * (1 + 1e-12))
    # radius: P(r <= s) = (s / eps)^d, i.e. (r / eps)^d ~ U(0, 1) (not all on the sphere)
    assert stats.kstest((r / eps) ** d, "uniform").pvalue > 1e-3
    units = delta.reshape(n, -1) / r[:, None]
    assert np.abs(units.mean(axis=0)).max() < 5 / np.sqrt(n * d)  # coordinates of a unit vector: var 1/d
    if d == 3:  # Archimedes: one coordinate of a uniform direction in 3-D is U(-1, 1)
        assert stats.kstest(units[:, 0], "uniform", args=(-1, 2)).pvalue > 1e-3
    if d == 2:  # the angle is uniform
        assert stats.kstest(np.arctan2(units[:, 1], units[:, 0]), "uniform", args=(-np.pi, 2 * np.pi)).pvalue > 1e-3


def test_linf_random_start_is_uniform_in_the_box():
    n, eps = 2000, 0.2
    x0 = np.full((n, 2, 3), 0.5)
    md.manual_seed(12)
    delta = A.random_start_point(x0, eps, "inf") - x0
    assert np.abs(delta).max() <= eps
    assert stats.kstest(delta.ravel() / eps, "uniform", args=(-1, 2)).pvalue > 1e-3
    # coordinates independent: no correlation between two of them
    assert abs(np.corrcoef(delta[:, 0, 0], delta[:, 1, 2])[0, 1]) < 5 / np.sqrt(n)


@pytest.mark.parametrize("norm", ["inf", "2"])
@pytest.mark.parametrize("dtype", [np.float32, F64])
def test_random_start_is_clipped_and_keeps_dtype(norm, dtype):
    x0 = np.tile(np.array([0.0, 1.0, 0.02, 0.5], dtype=dtype), (50, 1))
    md.manual_seed(0)
    p = A.random_start_point(x0, 0.3, norm)
    assert p.dtype == dtype and p.min() >= 0 and p.max() <= 1
    assert np.all(p[:, 0] >= 0) and (p[:, 0] > 0).any() and (p[:, 1] < 1).any()


# --- determinism --------------------------------------------------------------------------
def seeded(seed, fn, *args, **kwargs):
    md.manual_seed(seed)
    return fn(*args, **kwargs).numpy()


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_same_seed_same_output_different_seed_different_start(norm):
    rng = np.random.default_rng(0)
    md.manual_seed(0)
    model = to_dtype(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), F64)
    x = rng.uniform(0, 1, (5, 6))
    y = rng.integers(0, 3, 5)
    kw = dict(eps=0.1, alpha=0.01, steps=1, norm=norm)
    for fn, args, kwargs in [(pgd, (model, x, y), kw), (pgd, (model, x, y), dict(kw, restarts=3, steps=3)),
                             (fgsm_random_start, (model, x, y, 0.1), dict(norm=norm, alpha=0.02))]:
        a, b = seeded(5, fn, *args, **kwargs), seeded(5, fn, *args, **kwargs)
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, seeded(6, fn, *args, **kwargs))
    x0 = np.full((4, 6), 0.5)
    np.testing.assert_array_equal(seeded(1, lambda: Tensor(A.random_start_point(x0, 0.1, norm))),
                                  seeded(1, lambda: Tensor(A.random_start_point(x0, 0.1, norm))))
    assert not np.array_equal(seeded(1, lambda: Tensor(A.random_start_point(x0, 0.1, norm))),
                              seeded(2, lambda: Tensor(A.random_start_point(x0, 0.1, norm))))


def test_without_random_start_pgd_is_deterministic():
    model, x, y, _ = binary_problem(3)
    a = seeded(1, pgd, model, x, y, 0.1, 0.02, 4, random_start=False)
    b = seeded(2, pgd, model, x, y, 0.1, 0.02, 4, random_start=False)
    np.testing.assert_array_equal(a, b)


# --- the model is left as it was ------------------------------------------------------------
class ModeRecorder(nn.Module):
    """An MLP with dropout that records the mode it ran in."""

    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 3))
        self.modes = []

    def forward(self, x):
        self.modes.append(self.training)
        return self.net(x)


ATTACKS = {
    "fgsm": lambda m, x, y: fgsm(m, x, y, 0.1),
    "fgsm_l2_targeted": lambda m, x, y: fgsm(m, x, y, 0.1, norm="2", targeted=True),
    "fgsm_random_start": lambda m, x, y: fgsm_random_start(m, x, y, 0.1),
    "noisy_fgsm": lambda m, x, y: noisy_fgsm(m, x, y, 0.1),
    "pgd": lambda m, x, y: pgd(m, x, y, 0.1, 0.02, 3, restarts=2),
    "pgd_l2_margin": lambda m, x, y: pgd(m, x, y, 0.5, 0.1, 3, norm="2", loss="margin", targeted=True),
    "pgd_eot": lambda m, x, y: pgd(m, x, y, 0.1, 0.02, 2, eot_samples=3),
}


@pytest.mark.parametrize("name", sorted(ATTACKS))
@pytest.mark.parametrize("training", [True, False])
def test_mode_restored_and_parameters_get_no_gradient(name, training):
    md.manual_seed(0)
    model = ModeRecorder()
    model.train(training)
    params = model.parameters()
    frozen = params[-1]
    frozen.requires_grad = False
    x = np.random.default_rng(0).uniform(0, 1, (6, 4)).astype(np.float32)
    y = np.arange(6) % 3
    ATTACKS[name](model, x, y)
    assert model.modes and not any(model.modes), "the attack must run the model in eval mode"
    assert all(m.training == training for m in model.modules())
    assert all(p.grad is None for p in params)
    assert all(p.requires_grad for p in params[:-1]) and not frozen.requires_grad


def test_existing_gradients_are_left_unchanged():
    md.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2))
    x = np.random.default_rng(1).uniform(0, 1, (3, 4)).astype(np.float32)
    y = np.array([0, 1, 1])
    md.functional.cross_entropy(model(Tensor(x)), y).backward()
    before = [p.grad.numpy().copy() for p in model.parameters()]
    pgd(model, x, y, 0.1, 0.05, 3)
    fgsm(model, x, y, 0.1)
    for p, g in zip(model.parameters(), before):
        np.testing.assert_array_equal(p.grad.numpy(), g)


def test_mode_and_flags_restored_after_an_error():
    class Exploding(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            raise ArithmeticError("boom")

    model = Exploding()
    model.train()
    with pytest.raises(ArithmeticError):
        pgd(model, np.full((2, 3), 0.5), np.array([0, 1]), 0.1, 0.01, 2)
    assert model.training and model.lin.training
    assert all(p.requires_grad and p.grad is None for p in model.parameters())


def test_mixed_modes_are_restored_module_by_module():
    """A model in training mode with one layer frozen in eval mode (a common fine-tuning setup)
    gets each module's own mode back."""
    md.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 2))
    model.train()
    model[1].eval()
    x = np.random.default_rng(0).uniform(0, 1, (4, 4)).astype(np.float32)
    pgd(model, x, np.array([0, 1, 0, 1]), 0.1, 0.05, 2)
    assert [m.training for m in model.modules()] == [True, True, False, True, True]


def test_output_is_detached_and_input_untouched():
    model, x, y, _ = binary_problem(6)
    x_copy = x.copy()
    xt = md.tensor(x, requires_grad=True)
    for out in (fgsm(model, xt, y, 0.1), pgd(model, xt, y, 0.1, 0.05, 3), fgsm_random_start(model, xt, y, 0.1)):
        assert isinstance(out, Tensor) and not out.requires_grad and out.is_leaf
        assert out.array is not xt.array
    np.testing.assert_array_equal(xt.numpy(), x_copy)
    assert xt.grad is None


def test_eps_zero_returns_the_input():
    model, x, y, _ = binary_problem(7)
    for out in (fgsm(model, x, y, 0), pgd(model, x, y, 0, 0.1, 3), pgd(model, x, y, 0.0, 0.1, 3, norm="2"),
                fgsm_random_start(model, x, y, 0)):
        np.testing.assert_array_equal(out.numpy(), x)


def test_gradient_masked_model_gives_zero_gradient_not_an_error():
    """A model that cuts x out of its graph (it reads x.array): the input gradient is zero and
    attacks without a random start return the input unchanged."""

    class Rounding(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = linear_model([[1.0, -1.0], [-1.0, 1.0]], [0.0, 0.0])

        def forward(self, x):
            return self.lin(Tensor(np.round(x.array)))

    model = Rounding()
    x = np.array([[0.9, 0.1], [0.2, 0.7]])
    y = np.array([0, 1])
    g, logits, losses = input_gradient(model, Tensor(x), Tensor(y))
    np.testing.assert_array_equal(g, np.zeros_like(x))
    np.testing.assert_allclose(losses, ce_np(logits_of(model, x), y))
    model.zero_grad()  # input_gradient on its own does not freeze the parameters; attacks do
    np.testing.assert_array_equal(fgsm(model, x, y, 0.3).numpy(), x)
    np.testing.assert_array_equal(pgd(model, x, y, 0.3, 0.1, 3, random_start=False).numpy(), x)
    assert all(p.grad is None for p in model.parameters())


# --- argument errors ----------------------------------------------------------------------
def _setup():
    model, x, y, _ = binary_problem(8, n=4)
    return model, x, y


BAD_CALLS = [
    # (exception, word the message must contain, call)
    (ValueError, "x", lambda m, x, y: fgsm(m, x + 1.0, y, 0.1)),
    (ValueError, "x", lambda m, x, y: pgd(m, x - 1.0, y, 0.1, 0.01, 2)),
    (ValueError, "x", lambda m, x, y: fgsm_random_start(m, x * 2, y, 0.1)),
    (ValueError, "x", lambda m, x, y: fgsm(m, x[0], y, 0.1)),
    (TypeError, "x", lambda m, x, y: fgsm(m, (x > 0.5).astype(np.int64), y, 0.1)),
    (ValueError, "eps", lambda m, x, y: fgsm(m, x, y, -0.1)),
    (ValueError, "eps", lambda m, x, y: pgd(m, x, y, -1e-3, 0.01, 2)),
    (ValueError, "eps", lambda m, x, y: fgsm_random_start(m, x, y, -0.1)),
    (ValueError, "eps", lambda m, x, y: noisy_fgsm(m, x, y, float("nan"))),
    (ValueError, "noise", lambda m, x, y: noisy_fgsm(m, x, y, 0.1, noise=-0.2)),
    (ValueError, "alpha", lambda m, x, y: noisy_fgsm(m, x, y, 0.1, alpha=-0.1)),
    (ValueError, "x", lambda m, x, y: noisy_fgsm(m, x * 2, y, 0.1)),
    (TypeError, "eps", lambda m, x, y: pgd(m, x, y, "0.1", 0.01, 2)),
    (ValueError, "alpha", lambda m, x, y: pgd(m, x, y, 0.1, 0, 2)),
    (ValueError, "alpha", lambda m, x, y: pgd(m, x, y, 0.1, -0.01, 2)),
    (ValueError, "alpha", lambda m, x, y: fgsm_random_start(m, x, y, 0.1, alpha=0)),
    (ValueError, "alpha", lambda m, x, y: fgsm_random_start(m, x, y, 0.1, alpha=-0.5)),
    (ValueError, "steps", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 0)),
    (TypeError, "steps", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2.5)),
    (ValueError, "restarts", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2, restarts=0)),
    (TypeError, "restarts", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2, restarts=1.0)),
    (ValueError, "eot_samples", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2, eot_samples=0)),
    (ValueError, "y", lambda m, x, y: fgsm(m, x, y[:-1], 0.1)),
    (ValueError, "y", lambda m, x, y: pgd(m, x, y[:, None], 0.1, 0.01, 2)),
    (ValueError, "y", lambda m, x, y: fgsm_random_start(m, x, np.append(y, 0), 0.1)),
    (TypeError, "y", lambda m, x, y: fgsm(m, x, y.astype(np.float64), 0.1)),
    (TypeError, "y", lambda m, x, y: pgd(m, x, y.astype(np.float32), 0.1, 0.01, 2)),
    (ValueError, "norm", lambda m, x, y: fgsm(m, x, y, 0.1, norm="l1")),
    (ValueError, "norm", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2, norm=1)),
    (ValueError, "norm", lambda m, x, y: fgsm_random_start(m, x, y, 0.1, norm="fro")),
    (ValueError, "loss", lambda m, x, y: pgd(m, x, y, 0.1, 0.01, 2, loss="hinge")),
    (ValueError, "loss", lambda m, x, y: fgsm(m, x, y, 0.1, loss="mse")),
]


@pytest.mark.parametrize("exc, word, call", BAD_CALLS, ids=[f"{i}-{w}" for i, (_, w, _) in enumerate(BAD_CALLS)])
def test_bad_arguments_are_reported_by_name(exc, word, call):
    model, x, y = _setup()
    with pytest.raises(exc, match=rf"\b{word}\b"):
        call(model, x, y)


@pytest.mark.parametrize("norm", ["inf", "linf", np.inf, float("inf"), "2", "L2", 2])
def test_norm_spellings(norm):
    model, x, y, w = binary_problem(9)
    kind = "2" if norm in ("2", "L2", 2) else "inf"
    check_closed_form(model, x, y, fgsm(model, x, y, 0.1, norm=norm), w, 0.1, kind)


def test_tensor_and_list_inputs_are_accepted():
    model, x, y, w = binary_problem(10)
    a = fgsm(model, md.tensor(x, dtype=F64), md.tensor(y), 0.1).numpy()
    np.testing.assert_array_equal(a, fgsm(model, x, y, 0.1).numpy())
    # lists become float32 inputs for a float32 model
    m32 = to_dtype(binary_problem(10)[0], np.float32)
    out = fgsm(m32, x.tolist(), y.tolist(), 0.1)
    assert out.dtype == np.float32 and out.shape == x.shape


# --- margin loss ----------------------------------------------------------------------------
def test_margin_loss_on_a_hand_example():
    z = md.tensor([[1.0, 3.0, 2.0], [1.0, 3.0, 2.0], [0.5, -1.0, 4.0], [2.0, 2.0, 1.0]], dtype=F64)
    y = md.tensor([0, 1, 2, 0])
    got = A.margin_loss(z, y).numpy()
    np.testing.assert_allclose(got, [3 - 1, 2 - 3, 0.5 - 4, 0.0])
    np.testing.assert_allclose(A.attack_loss(z, y, "margin").numpy(), got)
    np.testing.assert_allclose(A.attack_loss(z, y, "ce").numpy(), ce_np(z.numpy(), y.numpy()))
    # gradient: +1 on the best other class, -1 on the label (ties share the +1)
    zg = md.tensor(z.numpy(), requires_grad=True)
    A.margin_loss(zg, y).sum().backward()
    np.testing.assert_allclose(zg.grad.numpy(), [[-1, 1, 0], [0, -1, 1], [1, 0, -1], [-1, 1, 0]])


def test_margin_loss_is_positive_exactly_when_misclassified():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 5))
    y = rng.integers(0, 5, 200)
    m = A.margin_loss(Tensor(z), Tensor(y)).numpy()
    np.testing.assert_array_equal(m > 0, z.argmax(1) != y)
    np.testing.assert_allclose(m, margin_np(z, y))


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_pgd_with_margin_loss_breaks_a_linear_model(norm):
    rng = np.random.default_rng(1)
    model = linear_model(rng.normal(size=(3, 5)), np.zeros(3))
    x = rng.uniform(0.3, 0.7, (20, 5))
    y = logits_of(model, x).argmax(1)
    x_adv = pgd(model, x, y, 0.3, 0.05, 10, norm=norm, loss="margin").numpy()
    assert_in_ball(x_adv, x, 0.3, norm)
    assert np.all(margin_np(logits_of(model, x_adv), y) > margin_np(logits_of(model, x), y))
    assert (logits_of(model, x_adv).argmax(1) != y).mean() > 0.5


# --- expectation over transformation --------------------------------------------------------
class RandomSign(nn.Module):
    """A randomized model: each input feature's sign is flipped at random on every forward
    pass (from the library generator, so manual_seed fixes the sequence)."""

    def __init__(self, d, c):
        super().__init__()
        self.lin = nn.Linear(d, c)

    def forward(self, x):
        xp = md.backend.get_array_module(x.array)
        sign = md.backend.rng(xp).choice([-1.0, 1.0], size=x.shape[1:]).astype(x.dtype)
        return self.lin(x * Tensor(sign))


@pytest.mark.parametrize("loss", ["ce", "margin"])
def test_eot_gradient_is_the_mean_of_separate_gradients(loss):
    md.manual_seed(0)
    model = to_dtype(RandomSign(5, 3), F64)
    rng = np.random.default_rng(0)
    x, y = Tensor(rng.uniform(0, 1, (4, 5))), Tensor(rng.integers(0, 3, 4))
    k = 6
    md.manual_seed(42)
    g, logits, losses = input_gradient(model, x, y, loss=loss, eot_samples=k)
    md.manual_seed(42)
    singles = [input_gradient(model, x, y, loss=loss, eot_samples=1) for _ in range(k)]
    np.testing.assert_allclose(g, np.mean([s[0] for s in singles], axis=0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(logits, np.mean([s[1] for s in singles], axis=0), rtol=1e-12)
    np.testing.assert_allclose(losses, np.mean([s[2] for s in singles], axis=0), rtol=1e-12)
    assert not all(np.allclose(s[0], singles[0][0]) for s in singles)  # the model is random
    # every single gradient matches the closed form W^T (dL/dz) * sign for its own sign draw
    md.manual_seed(42)
    for s in singles:
        sign = md.backend.rng().choice([-1.0, 1.0], size=(5,))
        z = (x.numpy() * sign) @ model.lin.weight.numpy().T + model.lin.bias.numpy()
        if loss == "ce":
            p = np.exp(z - z.max(1, keepdims=True))
            dz = p / p.sum(1, keepdims=True)
            dz[np.arange(4), y.numpy()] -= 1
        else:
            other = z.copy()
            other[np.arange(4), y.numpy()] = -np.inf
            dz = np.zeros_like(z)
            dz[np.arange(4), other.argmax(1)] = 1
            dz[np.arange(4), y.numpy()] -= 1
        np.testing.assert_allclose(s[0], (dz @ model.lin.weight.numpy()) * sign, rtol=1e-10, atol=1e-12)


def test_pgd_with_eot_runs_and_stays_in_the_ball():
    md.manual_seed(0)
    model = RandomSign(5, 3)
    x = np.random.default_rng(0).uniform(0, 1, (4, 5)).astype(np.float32)
    y = np.array([0, 1, 2, 0])
    md.manual_seed(1)
    a = pgd(model, x, y, 0.2, 0.05, 3, eot_samples=4).numpy()
    md.manual_seed(1)
    b = pgd(model, x, y, 0.2, 0.05, 3, eot_samples=4).numpy()
    np.testing.assert_array_equal(a, b)
    assert_in_ball(a, x, 0.2, "inf")


# --- a small trained network ------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained_mlp():
    md.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 3))
    x, y = make_blocks(300, 0)
    opt = md.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(150):
        opt.zero_grad()
        md.functional.cross_entropy(model(Tensor(x)), y).backward()
        opt.step()
    xt, yt = make_blocks(120, 1)
    model.eval()
    assert (logits_of(model, xt).argmax(1) == yt).mean() > 0.95
    return model, xt, yt


def test_pgd_breaks_a_trained_network(trained_mlp):
    model, x, y = trained_mlp
    md.manual_seed(0)
    acc = lambda x_adv: (logits_of(model, x_adv.numpy()).argmax(1) == y).mean()
    pgd_acc = acc(pgd(model, x, y, 0.4, 0.05, 12))
    fgsm_acc = acc(fgsm(model, x, y, 0.4))
    assert pgd_acc <= 0.05
    assert fgsm_acc >= pgd_acc
    assert acc(pgd(model, x, y, 0.4, 0.05, 12, loss="margin")) <= 0.05
    assert acc(pgd(model, x, y, 2.0, 0.3, 12, norm="2")) <= 0.05


def test_targeted_pgd_reaches_the_target_on_a_trained_network(trained_mlp):
    model, x, y = trained_mlp
    t = (y + 1) % 3
    md.manual_seed(0)
    x_adv = pgd(model, x, t, 0.5, 0.05, 15, targeted=True)
    hit = (logits_of(model, x_adv.numpy()).argmax(1) == t).mean()
    assert hit >= 0.9
    fgsm_hit = (logits_of(model, fgsm(model, x, t, 0.5, targeted=True).numpy()).argmax(1) == t).mean()
    assert fgsm_hit <= hit


@pytest.fixture(scope="module")
def trained_cnn():
    md.manual_seed(1)
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    x, y = make_blocks(300, 2)
    opt = md.optim.Adam(model.parameters(), lr=2e-2)
    for _ in range(120):
        opt.zero_grad()
        md.functional.cross_entropy(model(Tensor(x)), y).backward()
        opt.step()
    model.zero_grad()
    xt, yt = make_blocks(90, 3)
    assert (logits_of(model, xt).argmax(1) == yt).mean() > 0.95
    return model, xt, yt


@pytest.mark.parametrize("norm, eps, alpha, eps_target", [("inf", 0.4, 0.05, 0.5), ("2", 2.0, 0.3, 2.0)])
def test_attacks_on_a_trained_conv_net(trained_cnn, norm, eps, alpha, eps_target):
    model, x, y = trained_cnn
    md.manual_seed(0)
    x_pgd = pgd(model, x, y, eps, alpha, 20, norm=norm, restarts=2)
    assert_in_ball(x_pgd, x, eps, norm)
    pred = lambda x_adv: logits_of(model, x_adv.numpy()).argmax(1)
    pgd_acc = (pred(x_pgd) == y).mean()
    assert pgd_acc <= 0.05
    assert (pred(fgsm(model, x, y, eps, norm=norm)) == y).mean() >= pgd_acc
    t = (y + 2) % 3
    x_t = pgd(model, x, t, eps_target, alpha, 20, norm=norm, targeted=True)
    assert_in_ball(x_t, x, eps_target, norm)
    assert (pred(x_t) == t).mean() >= 0.9
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_fgsm_random_start_takes_gradient_at_unclipped_start():
    """Wong et al.'s fast adversarial training evaluates the gradient at x + U(-eps, eps) without
    clipping: on pixels at 0, half of the starts are negative. Clipping them (a tempting 'fix')
    weakens the random start and brings back catastrophic overfitting."""
    seen = []

    class Recorder(md.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = md.nn.Linear(16, 3)

        def forward(self, x):
            seen.append(x.numpy().copy())
            return self.lin(x.reshape(x.shape[0], -1))

    md.manual_seed(0)
    model = Recorder()
    x = np.zeros((8, 1, 4, 4), dtype=np.float32)
    out = fgsm_random_start(model, x, np.zeros(8, dtype=np.int64), eps=0.3).numpy()
    start = seen[0]
    assert (start < 0).mean() > 0.3 and start.min() >= -0.3 - 1e-6
    assert out.min() >= 0 and out.max() <= 0.3 + 1e-6
