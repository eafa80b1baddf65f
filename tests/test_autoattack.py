"""Tests for APGD, Square, FAB, AutoAttack and the DLR losses (minidl.adversarial).

Reference points are closed forms on linear models z = W x + b (inputs as 1 x 4 x 4 images).
For labels y and another class j, z_j - z_y = dw . x + db with dw = W_j - W_y, a linear
function, so over the L-inf ball intersected with [0, 1] its maximum is reached at
x_i = clip(x0_i + eps sign(dw_i), 0, 1), and over an L2 ball that stays inside [0, 1] at
x0 + eps dw / ||dw||. A point is robust exactly when every one of these maxima is negative,
so the robust accuracy of a linear model is known exactly. The smallest perturbation that
reaches z_j = z_y is |z_y - z_j| / ||dw||_1 (L-inf) or / ||dw||_2 (L2) when the box is
inactive.
"""
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import minidl as md
from minidl import nn
from minidl.adversarial import (StageLog, apgd, autoattack, dlr_loss, dlr_loss_targeted, fab, pgd, robust_accuracy,
                                square)
from minidl.adversarial.apgd import APGDState, checkpoints, halves_step
from minidl.adversarial.evaluate import predict, stage_warnings
from minidl.adversarial.fab import min_norm_to_hyperplane
from minidl.tensor import Tensor
from minidl.testing import gradcheck

from conftest import examples

F64 = np.float64


# --- helpers ------------------------------------------------------------------------------
def linear_image_model(W, b):
    """Flatten, then logits W x + b (float64)."""
    lin = nn.Linear(W.shape[1], W.shape[0])
    lin.weight.array = np.asarray(W, dtype=F64).copy()
    lin.bias.array = np.asarray(b, dtype=F64).copy()
    return nn.Sequential(nn.Flatten(), lin)


def linear_problem(seed, n=40, classes=10, lo=0.0, hi=1.0, side=4):
    """A random linear model and n side x side images in [lo, hi] labelled with its own
    predictions; the bias centres the logits on the middle of the range, so classes compete."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((classes, side * side)) * 4 / side
    x = rng.uniform(lo, hi, (n, 1, side, side))
    b = -W.sum(1) * (lo + hi) / 2 + rng.standard_normal(classes) * 0.1
    y = (x.reshape(n, -1) @ W.T + b).argmax(axis=1)
    return linear_image_model(W, b), W, b, x, y


def linf_worst_margin(W, b, x, y, eps):
    """max over the L-inf ball (and [0, 1]) of max_{j != y} z_j - z_y, per example."""
    flat = x.reshape(len(x), -1)
    out = np.full(len(x), -np.inf)
    for j in range(W.shape[0]):
        dw = W[j] - W[y]
        xs = np.clip(flat + eps * np.sign(dw), 0, 1)
        m = (dw * xs).sum(1) + b[j] - b[y]
        out = np.where(j != y, np.maximum(out, m), out)
    return out


def l2_worst_margin(W, b, x, y, eps):
    """The same over the L2 ball (the box inactive)."""
    flat = x.reshape(len(x), -1)
    out = np.full(len(x), -np.inf)
    for j in range(W.shape[0]):
        dw = W[j] - W[y]
        m = (dw * flat).sum(1) + eps * np.linalg.norm(dw, axis=1) + b[j] - b[y]
        out = np.where(j != y, np.maximum(out, m), out)
    return out


def min_distance(W, b, x, y, norm):
    """Smallest L-inf / L2 distance to a misclassification (box inactive)."""
    flat = x.reshape(len(x), -1)
    out = np.full(len(x), np.inf)
    for j in range(W.shape[0]):
        dw = W[j] - W[y]
        gap = (flat * -dw).sum(1) + b[y] - b[j]
        scale = np.abs(dw).sum(1) if norm == "inf" else np.linalg.norm(dw, axis=1)
        out = np.where(j != y, np.minimum(out, gap / np.where(j != y, scale, 1)), out)
    return out


def fooled(model, x_adv, y):
    return predict(model, Tensor(np.asarray(x_adv))) != y


def norms(a, x):
    d = (np.asarray(a) - x).reshape(len(x), -1)
    return np.abs(d).max(1), np.sqrt((d ** 2).sum(1))


class Quantised(nn.Module):
    """model(round(x * levels) / levels): the rounding cuts x from the graph, so every input
    gradient is zero (masked), while the model's decisions are those of the inner model."""

    def __init__(self, inner, levels=255):
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x):
        xp = md.backend.get_array_module(x.array)
        return self.inner(Tensor(xp.round(x.array * self.levels) / self.levels))


# --- DLR ----------------------------------------------------------------------------------
@examples(25)
@given(seed=st.integers(0, 2 ** 31), classes=st.integers(4, 7))
def test_dlr_values_match_the_formula(seed, classes):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((6, classes))
    y = rng.integers(0, classes, 6)
    t = (y + 1 + rng.integers(0, classes - 1, 6)) % classes
    s = np.sort(z, axis=1)[:, ::-1]
    other = np.where(np.arange(classes)[None] == y[:, None], -np.inf, z).max(1)
    zy, zt = z[np.arange(6), y], z[np.arange(6), t]
    expected = -(zy - other) / (s[:, 0] - s[:, 2] + 1e-12)
    expected_t = -(zy - zt) / (s[:, 0] - 0.5 * (s[:, 2] + s[:, 3]) + 1e-12)
    np.testing.assert_allclose(dlr_loss(Tensor(z), Tensor(y)).numpy(), expected, rtol=1e-10)
    np.testing.assert_allclose(dlr_loss_targeted(Tensor(z), Tensor(y), t).numpy(), expected_t, rtol=1e-10)
    # shift and scale invariance, the point of the ratio
    np.testing.assert_allclose(dlr_loss(Tensor(3.5 * z - 2.0), Tensor(y)).numpy(), expected, rtol=1e-8)


@examples(20)
@given(seed=st.integers(0, 2 ** 31))
def test_dlr_gradients(seed):
    rng = np.random.default_rng(seed)
    z = Tensor(rng.standard_normal((4, 6)), requires_grad=True)  # continuous draws: no ties in the sort
    y = rng.integers(0, 6, 4)
    t = (y + 1) % 6
    assert gradcheck(lambda a: dlr_loss(a, Tensor(y)), z)
    assert gradcheck(lambda a: dlr_loss_targeted(a, Tensor(y), t), z)


def test_dlr_rejects_too_few_classes():
    with pytest.raises(ValueError, match="at least 3 classes"):
        dlr_loss(Tensor(np.zeros((2, 2))), Tensor(np.array([0, 1])))
    with pytest.raises(ValueError, match="at least 4 classes"):
        dlr_loss_targeted(Tensor(np.zeros((2, 3))), Tensor(np.array([0, 1])), np.array([1, 2]))


# --- APGD ---------------------------------------------------------------------------------
def test_checkpoints_follow_the_paper():
    # p = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (steps shrinking by 0.03 to 0.06)
    assert checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]


def test_step_halving_conditions():
    """Condition 1: fewer than 0.75 * 22 = 16.5 of 22 steps raised the loss. Condition 2: not
    halved last time and no new best."""
    ups = np.array([0, 16, 17, 22, 22, 22])
    halved_before = np.array([True, True, True, True, False, False])
    best, best_before = np.array([1.0, 1, 1, 1, 1, 1.5]), np.array([0.5, 0.5, 0.5, 0.5, 1.0, 1.0])
    np.testing.assert_array_equal(halves_step(ups, 22, halved_before, best, best_before),
                                  [True, True, False, False, True, False])


def test_apgd_state_starts_and_selects_rows():
    """The start state: eta = 2 eps, the start is the best point, float64 best losses; select
    keeps the masked rows of every field (a field it forgot would keep its old length)."""
    rng = np.random.default_rng(0)
    x0, cur, g = (rng.random((5, 1, 2, 2)).astype(np.float32) for _ in range(3))
    y, f = np.arange(5), rng.random(5).astype(np.float32)
    st = APGDState.start(x0, y, cur, g, f, eps=0.1)
    np.testing.assert_allclose(st.eta, 0.2)
    assert st.best_f.dtype == np.float64 and st.halved_at_mark.all() and not st.ups.any()
    assert st.prev is not st.cur and st.best_x is not st.cur
    mask = np.array([True, False, True, False, False])
    sub = st.select(mask)
    for field in ("idx", "x0", "y", "cur", "prev", "g", "f", "best_x", "best_f", "best_g", "eta", "ups",
                  "best_at_mark", "halved_at_mark"):
        np.testing.assert_array_equal(getattr(sub, field), getattr(st, field)[mask], err_msg=field)
    np.testing.assert_array_equal(sub.idx, [0, 2])
    sub.cur[0] = 9  # a selection is a copy: the full state is untouched
    assert st.cur[0].max() < 9


@pytest.mark.parametrize("norm", ["inf", "2"])
def test_apgd_reaches_the_binary_linear_optimum(norm):
    """Two classes: the cross-entropy is increasing in z_other - z_y, so its maximiser is the
    closed form above; the robust points must be moved there (L2: to within rounding)."""
    lo, hi, eps = (0.0, 1.0, 0.05) if norm == "inf" else (0.3, 0.7, 0.1)
    model, W, b, x, y = linear_problem(1, n=40, classes=2, lo=lo, hi=hi)
    adv = apgd(model, x, y, eps, norm, steps=50, seed=0).numpy()
    dw = W[1 - y] - W[y]
    if norm == "inf":
        target = np.clip(x.reshape(40, -1) + eps * np.sign(dw), 0, 1)
        worst = linf_worst_margin(W, b, x, y, eps)
    else:
        target = x.reshape(40, -1) + eps * dw / np.linalg.norm(dw, axis=1, keepdims=True)
        worst = l2_worst_margin(W, b, x, y, eps)
    robust = worst < 0
    assert 5 < robust.sum() < 35  # the eps splits the points
    np.testing.assert_allclose(adv.reshape(40, -1)[robust], target[robust], atol=1e-9 if norm == "inf" else 1e-3)
    assert np.array_equal(fooled(model, adv, y), ~robust)


@pytest.mark.parametrize("norm,eps,attack", [(n, 0.02, a) for n in ("inf", "2") for a in ("apgd-t", "apgd-dlr", "fab-t")]
                         + [("inf", 0.02, "square")])
def test_attacks_find_the_linear_robust_accuracy(norm, eps, attack):
    """Ten classes: each attack breaks exactly the points whose closed-form worst case is
    misclassified (never more: it stays in the ball; never fewer: it finds them)."""
    lo, hi = (0.0, 1.0) if norm == "inf" else (0.3, 0.7)
    model, W, b, x, y = linear_problem(2, n=60, lo=lo, hi=hi)
    worst = (linf_worst_margin if norm == "inf" else l2_worst_margin)(W, b, x, y, eps)
    keep = np.abs(worst) > 1e-3  # no point on the fence
    x, y, worst = x[keep], y[keep], worst[keep]
    assert 10 < (worst > 0).sum() < len(y) - 10
    run = {"apgd-t": lambda: apgd(model, x, y, eps, norm, steps=50, loss="dlr", targeted=True, seed=0),
           "apgd-dlr": lambda: apgd(model, x, y, eps, norm, steps=50, loss="dlr", restarts=2, seed=0),
           "fab-t": lambda: fab(model, x, y, eps, norm, steps=30, seed=0),
           "square": lambda: square(model, x, y, eps, norm, queries=3000, seed=0)}[attack]
    adv = run().numpy()
    assert np.array_equal(fooled(model, adv, y), worst > 0)


def test_square_l2_on_a_linear_model():
    """L2 Square is a slow random search on a dense linear direction: within 2,000 queries it
    must break every point of an 8 x 8 linear problem whose closed-form worst margin is
    comfortably positive (the margin at eps 0.02 exceeds that of eps 0.01), and no robust one."""
    model, W, b, x, y = linear_problem(2, n=60, lo=0.3, hi=0.7, side=8)
    worst = l2_worst_margin(W, b, x, y, 0.02)
    clear = l2_worst_margin(W, b, x, y, 0.01) > 0
    assert clear.sum() >= 6
    broken = fooled(model, square(model, x, y, 0.02, "2", queries=2000, seed=0).numpy(), y)
    assert not (broken & (worst < 0)).any()
    assert broken[clear].all()


def test_fab_finds_the_linear_minimum_norm():
    """FAB's distances on a linear model: never below the closed-form minimum (that would be an
    error), and within 2% of it."""
    for norm in ("inf", "2"):
        model, W, b, x, y = linear_problem(3, n=30, lo=0.35, hi=0.65)
        best = min_distance(W, b, x, y, norm)
        adv = fab(model, x, y, None, norm, steps=40, seed=0).numpy()
        assert fooled(model, adv, y).all()
        dist = norms(adv, x)[0 if norm == "inf" else 1]
        assert (best < 0.3).all()  # the box stays inactive
        assert (dist >= best * (1 - 1e-6)).all()
        assert (dist <= best * 1.02).all(), (norm, (dist / best).max())


@examples(40)
@given(seed=st.integers(0, 2 ** 31), dim=st.integers(1, 6), norm=st.sampled_from(["inf", "2"]))
def test_min_norm_to_hyperplane_solves_the_box_problem(seed, dim, norm):
    """Against scipy on small problems: same norm, on the hyperplane, inside [0, 1]."""
    from scipy.optimize import linprog, minimize
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 1, (1, dim))
    w = rng.standard_normal((1, dim))
    target = rng.uniform(-0.5, 0.5) * np.abs(w).sum()  # w . (x + d) = w . x + target
    b = -(w * x).sum(1) - target
    d = min_norm_to_hyperplane(x, w, b, norm)[0]
    assert (x[0] + d >= -1e-12).all() and (x[0] + d <= 1 + 1e-12).all()
    lo, hi = -x[0], 1 - x[0]
    reachable = (np.where(w[0] > 0, hi, lo) * w[0]).sum() if target > 0 else (np.where(w[0] > 0, lo, hi) * w[0]).sum()
    if abs(reachable) < abs(target):  # unreachable: the closest the box allows
        np.testing.assert_allclose(w[0] @ d, reachable, rtol=1e-9, atol=1e-12)
        return
    np.testing.assert_allclose(w[0] @ d, target, rtol=1e-9, atol=1e-12)
    if norm == "inf":  # min r s.t. -r <= d <= r, w . d = target, lo <= d <= hi; variables (d, r)
        c = np.r_[np.zeros(dim), 1.0]
        a_ub = np.block([[np.eye(dim), -np.ones((dim, 1))], [-np.eye(dim), -np.ones((dim, 1))]])
        res = linprog(c, A_ub=a_ub, b_ub=np.zeros(2 * dim), A_eq=np.r_[w[0], 0.0][None], b_eq=[target],
                      bounds=list(zip(lo, hi)) + [(0, None)], method="highs")
        np.testing.assert_allclose(np.abs(d).max(), res.fun, rtol=1e-7, atol=1e-10)
    else:
        res = minimize(lambda v: v @ v, np.zeros(dim), jac=lambda v: 2 * v, method="SLSQP",
                       constraints=[{"type": "eq", "fun": lambda v: w[0] @ v - target, "jac": lambda v: w[0]}],
                       bounds=list(zip(lo, hi)), options={"ftol": 1e-14, "maxiter": 500})
        assert d @ d <= res.fun * (1 + 1e-6) + 1e-12


# --- invariants -------------------------------------------------------------------------
def small_cnn(seed=0):
    md.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 10))


def cnn_problem(n=12, seed=0):
    model = small_cnn(seed)
    x = np.random.default_rng(seed).random((n, 1, 8, 8)).astype(np.float32)
    y = predict(model, Tensor(x))
    y[:2] = (y[:2] + 1) % 10  # two points the model already gets wrong
    return model, x, y


ATTACKS = {
    "apgd-ce": lambda m, x, y, e, n, s: apgd(m, x, y, e, n, steps=8, seed=s),
    "apgd-t": lambda m, x, y, e, n, s: apgd(m, x, y, e, n, steps=5, loss="dlr", targeted=True, n_target_classes=2,
                                             seed=s),
    "fab-t": lambda m, x, y, e, n, s: fab(m, x, y, e, n, steps=5, n_target_classes=2, restarts=2, seed=s),
    "square": lambda m, x, y, e, n, s: square(m, x, y, e, n, queries=60, seed=s),
    "autoattack": lambda m, x, y, e, n, s: autoattack(m, x, y, e, n, seed=s),
}


@pytest.mark.parametrize("name,norm,eps", [(a, n, e) for a in sorted(ATTACKS) for n, e in (("inf", 0.03), ("2", 0.3))
                                            if (a, n) != ("autoattack", "2")])  # one full AutoAttack is enough
def test_inside_the_ball_and_deterministic(name, norm, eps):
    model, x, y = cnn_problem()
    a = ATTACKS[name](model, x, y, eps, norm, 7).numpy()
    linf, l2 = norms(a, x)
    assert (a >= 0).all() and (a <= 1).all()
    assert ((linf if norm == "inf" else l2) <= eps * (1 + 1e-5)).all()
    np.testing.assert_array_equal(a[:2], x[:2])  # already misclassified: left alone
    np.testing.assert_array_equal(ATTACKS[name](model, x, y, eps, norm, 7).numpy(), a)


@pytest.mark.parametrize("name", ["apgd-ce", "square"])
def test_seed_matters(name):
    model, x, y = cnn_problem()
    a, b = (ATTACKS[name](model, x, y, 0.03, "inf", s).numpy() for s in (1, 2))
    assert not np.array_equal(a, b)


# --- masking ------------------------------------------------------------------------------
def test_square_breaks_a_masked_model_where_pgd_and_apgd_fail():
    """Quantised inputs: every gradient is zero, so PGD and APGD stay where they start; Square,
    which only reads scores, reaches the closed-form robust accuracy of the linear model."""
    model, W, b, x, y = linear_problem(4, n=60)
    x = np.round(x * 255) / 255  # on the grid, so x +- eps is too
    eps = 5 / 255
    masked = Quantised(model)
    worst = linf_worst_margin(W, b, x, y, eps)
    keep = np.abs(worst) > 1e-3
    x, y, worst = x[keep], y[keep], worst[keep]
    assert (worst > 0).sum() > 15
    g = md.adversarial.input_gradient(masked, Tensor(x), Tensor(y))[0]
    assert not g.any()
    pgd_broken = fooled(masked, pgd(masked, x, y, eps, eps / 4, 20, random_start=False), y).sum()
    apgd_broken = fooled(masked, apgd(masked, x, y, eps, steps=20, seed=0), y).sum()
    square_broken = fooled(masked, square(masked, x, y, eps, queries=2000, seed=0), y)
    assert pgd_broken == 0 and apgd_broken <= (worst > 0).sum() // 3
    assert np.array_equal(square_broken, worst > 0)


def test_stage_warnings_flag_square_beating_apgd():
    """On the masked model AutoAttack's breakdown shows Square breaking points APGD left, and
    the diagnostics say so; on the plain linear model they stay quiet."""
    model, W, b, x, y = linear_problem(4, n=40)
    x = np.round(x * 255) / 255
    for m, expect in ((Quantised(model), True), (model, False)):
        log = StageLog()
        res = robust_accuracy(m, (x, y), lambda mm, xx, yy: autoattack(mm, xx, yy, 5 / 255, log=log), progress=False)
        rows = log.rows()
        assert res["robust_accuracy"] == rows[-1]["robust_accuracy"]  # the returned points are the log's
        assert [r["stage"] for r in rows] == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
        accs = [r["robust_accuracy"] for r in rows]
        assert accs == sorted(accs, reverse=True)
        warns = stage_warnings(rows)
        assert bool(warns) == expect, warns
        if expect:
            assert "square" in warns[0]


# --- FAB versus PGD -----------------------------------------------------------------------
def test_fab_is_no_farther_than_pgd_at_a_matched_budget():
    """Per example, PGD's smallest successful eps by bisection (6 probes of 20 steps, restarts 1)
    against FAB's distance with the same 120 gradient steps (6 targets x 20 steps): FAB's
    points are on average no farther, and never much farther on any point."""
    md.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(1, 6, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(6 * 16, 32),
                          nn.ReLU(), nn.Linear(32, 10))
    x = np.random.default_rng(3).random((16, 1, 8, 8))
    y = predict(model, Tensor(x))
    adv = fab(model, x, y, None, "inf", steps=20, n_target_classes=6, seed=0).numpy()
    assert fooled(model, adv, y).all()
    dist = norms(adv, x)[0]
    lo, hi = np.zeros(len(y)), np.full(len(y), 1.0)
    for _ in range(6):
        mid = (lo + hi) / 2
        broke = np.array([fooled(model, pgd(model, x[i:i + 1], y[i:i + 1], mid[i], mid[i] / 8, 20), y[i:i + 1])[0]
                          for i in range(len(y))])
        hi, lo = np.where(broke, mid, hi), np.where(broke, lo, mid)
    assert dist.mean() <= hi.mean()
    assert (dist <= hi * 1.25).all()


# --- argument checks ----------------------------------------------------------------------
@pytest.mark.parametrize("call,message", [
    (lambda m, x, y: apgd(m, x, y, float("nan")), "apgd: eps: expected a finite number >= 0, got nan"),
    (lambda m, x, y: apgd(m, x, y, float("inf")), "apgd: eps: expected a finite number >= 0, got inf"),
    (lambda m, x, y: apgd(m, x, y, -0.1), "apgd: eps: expected a finite number >= 0, got -0.1"),
    (lambda m, x, y: apgd(m, x, y, 0.1, steps=0), "apgd: steps: expected an integer >= 1, got 0"),
    (lambda m, x, y: apgd(m, x, y, 0.1, loss="margin"), "loss must be 'ce' or 'dlr'"),
    (lambda m, x, y: apgd(m, x, y, 0.1, norm="1"), "norm must be 'inf' or '2'"),
    (lambda m, x, y: apgd(m, x, y, 0.1, targeted=True, n_target_classes=10), "n_target_classes must be <= 9"),
    (lambda m, x, y: apgd(m, x, y, 0.1, eot_samples=1.5), "apgd: eot_samples: expected an integer >= 1, got 1.5"),
    (lambda m, x, y: square(m, x, y, 0.1, queries=0), "square: queries: expected an integer >= 1, got 0"),
    (lambda m, x, y: square(m, x, y, 0.1, p_init=1.5), "p_init must be <= 1"),
    (lambda m, x, y: square(m, x.reshape(len(x), -1), y, 0.1), "x must be images"),
    (lambda m, x, y: fab(m, x, y, float("nan")), "fab: eps: expected a finite number >= 0, got nan"),
    (lambda m, x, y: fab(m, x, y, 0.1, n_target_classes=0), "fab: n_target_classes: expected an integer >= 1, got 0"),
    (lambda m, x, y: autoattack(m, x, y, 0.1, version="fast"), "version must be 'standard' or 'rand'"),
    (lambda m, x, y: autoattack(m, x, y, 0.1, seed=-1), "autoattack: seed: expected an integer >= 0, got -1"),
    (lambda m, x, y: autoattack(m, x, y, 0.1, log=[]), "log must be a StageLog"),
    (lambda m, x, y: autoattack(m, np.full_like(x, np.nan), y, 0.1), "autoattack: x: expected finite values, got 256 NaN"),
])
def test_bad_arguments_are_named(call, message):
    model, x, y = cnn_problem(n=4)
    with pytest.raises((ValueError, TypeError), match=message):
        call(model, x, y)


class Noisy(nn.Module):
    """A randomized model: the inner model's logits plus Gaussian noise on every pass."""

    def __init__(self, inner, sigma):
        super().__init__()
        self.inner, self.sigma = inner, sigma

    def forward(self, x):
        z = self.inner(x)
        xp = md.backend.get_array_module(z.array)
        return z + Tensor(md.backend.rng(xp).standard_normal(z.shape) * self.sigma)


def test_rand_version_on_a_randomized_linear_model():
    """version="rand": the two EOT stages only; with noise small against the margins, nearly
    all the closed-form breakable points are found (untargeted, single restart), no robust one
    is claimed, and the points stay in the ball."""
    md.manual_seed(0)
    model, W, b, x, y = linear_problem(2, n=30)
    eps = 0.02
    worst = linf_worst_margin(W, b, x, y, eps)
    keep = np.abs(worst) > 0.05
    x, y, worst = x[keep], y[keep], worst[keep]
    log = StageLog()
    adv = autoattack(Noisy(model, 0.01), x, y, eps, version="rand", log=log).numpy()
    assert [r["stage"] for r in log.rows()] == ["clean", "apgd-ce", "apgd-dlr"]
    assert (norms(adv, x)[0] <= eps * (1 + 1e-9)).all()
    broken = fooled(model, adv, y)
    assert not (broken & (worst < 0)).any()
    assert broken.sum() >= 0.9 * (worst > 0).sum()


def test_cli_autoattack_writes_the_breakdown(tmp_path, capsys):
    """`python -m minidl attack --attack autoattack`: the breakdown in the JSON, stage by stage
    non-increasing and ending at the reported robust accuracy. Needs the real MNIST test files."""
    import json
    import os
    from pathlib import Path
    from minidl.cli import main as cli_main
    from minidl.experiment import TrainConfig, train_on_arrays
    from minidl.train import CHECKPOINT
    real = Path(os.environ.get("MINIDL_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
    if not (real / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
        pytest.skip("real MNIST files not found")
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 64)
    train_on_arrays(TrainConfig(dataset="mnist", model="mlp", epochs=1, batch_size=32), (x, y), (x[:16], y[:16]),
                    str(tmp_path), progress=False)
    out = tmp_path / "aa.json"
    code = cli_main(["attack", "--checkpoint", str(tmp_path / CHECKPOINT), "--attack", "autoattack", "--eps", "0.02",
                     "--data-dir", str(real), "--limit", "10", "--no-checks", "--quiet", "--json", str(out)])
    assert code == 0
    result = json.loads(out.read_text())
    stages = [r["stage"] for r in result["breakdown"]]
    assert stages == ["clean", "apgd-ce", "apgd-t", "fab-t", "square"]
    accs = [r["robust_accuracy"] for r in result["breakdown"]]
    assert accs == sorted(accs, reverse=True) and accs[0] == result["clean_accuracy"]
    assert accs[-1] == result["robust_accuracy"]
    assert "after square" in capsys.readouterr().out
