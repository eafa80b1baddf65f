"""Optimizers against hand-computed updates, convergence, schedules and checkpoint state."""

import numpy as np
import pytest

import minidl as md
from minidl.nn import Parameter
from minidl.optim import SGD, Adam
from minidl.optim.lr_scheduler import CosineAnnealingLR, CyclicLR, OneCycleLR, StepLR
from minidl.tensor import Tensor

GRADS = [np.array([1.0, -2.0]), np.array([0.5, 0.5]), np.array([-1.0, 3.0])]
W0 = np.array([1.0, 2.0])


def run(opt_factory, grads=GRADS, w0=W0):
    """Parameter values after each step with the given gradient sequence."""
    p = Parameter(w0.copy())
    opt = opt_factory([p])
    out = []
    for g in grads:
        p.grad = Tensor(g.copy())
        opt.step()
        out.append(p.numpy().copy())
    return out


def test_sgd_plain():
    lr = 0.1
    ws = run(lambda ps: SGD(ps, lr))
    w = W0.copy()
    for g, got in zip(GRADS, ws):
        w = w - lr * g
        np.testing.assert_allclose(got, w, rtol=1e-15)
    # after 3 steps: W0 - 0.1 * (1 + 0.5 - 1, -2 + 0.5 + 3)
    np.testing.assert_allclose(ws[-1], [0.95, 1.85], rtol=1e-12)


def test_sgd_momentum():
    lr, mu = 0.1, 0.9
    ws = run(lambda ps: SGD(ps, lr, momentum=mu))
    # v1 = g1, v2 = mu v1 + g2, v3 = mu v2 + g3; w_t = w_{t-1} - lr v_t
    v1 = GRADS[0]
    v2 = mu * v1 + GRADS[1]
    v3 = mu * v2 + GRADS[2]
    np.testing.assert_allclose(ws[0], W0 - lr * v1)
    np.testing.assert_allclose(ws[1], W0 - lr * (v1 + v2))
    np.testing.assert_allclose(ws[2], W0 - lr * (v1 + v2 + v3))
    # numerically: v2 = (1.4, -1.3), v3 = (0.26, 1.83)
    np.testing.assert_allclose(ws[2], [1.0 - 0.1 * 2.66, 2.0 - 0.1 * (-1.47)], rtol=1e-12)


def test_sgd_nesterov():
    lr, mu = 0.1, 0.9
    ws = run(lambda ps: SGD(ps, lr, momentum=mu, nesterov=True))
    w, v = W0.copy(), np.zeros(2)
    for t, (g, got) in enumerate(zip(GRADS, ws)):
        v = g.copy() if t == 0 else mu * v + g
        w = w - lr * (g + mu * v)
        np.testing.assert_allclose(got, w, rtol=1e-14)
    np.testing.assert_allclose(ws[0], W0 - 0.1 * 1.9 * GRADS[0])


def test_sgd_weight_decay():
    lr, wd = 0.1, 0.01
    ws = run(lambda ps: SGD(ps, lr, weight_decay=wd))
    w = W0.copy()
    for g, got in zip(GRADS, ws):
        w = w - lr * (g + wd * w)
        np.testing.assert_allclose(got, w, rtol=1e-14)
    # with momentum: decay goes into the velocity
    ws = run(lambda ps: SGD(ps, lr, momentum=0.5, weight_decay=wd))
    w, v = W0.copy(), None
    for g, got in zip(GRADS, ws):
        d = g + wd * w
        v = d if v is None else 0.5 * v + d
        w = w - lr * v
        np.testing.assert_allclose(got, w, rtol=1e-14)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, 0.1, momentum=0.9), lambda ps: Adam(ps, 0.1)])
def test_a_gradient_of_another_shape_is_refused(make):
    # set by hand, it would broadcast in a whole-array update and fail or not piece by piece
    p = Parameter(np.ones((4, 3)))
    opt = make([p])
    p.grad = Tensor(np.ones((1, 3)))
    with pytest.raises(ValueError, match=r"step: parameter 0 has shape \(4, 3\) but its \.grad has shape \(1, 3\); "
                                         "expected the same shape"):
        opt.step()
    np.testing.assert_array_equal(p.numpy(), 1.0)


def test_sgd_skips_parameters_without_gradient():
    a, b = Parameter(np.ones(2)), Parameter(np.ones(2))
    opt = SGD([a, b], 0.5)
    a.grad = Tensor(np.ones(2))
    opt.step()
    np.testing.assert_array_equal(a.numpy(), 0.5)
    np.testing.assert_array_equal(b.numpy(), 1.0)



@pytest.mark.parametrize("mu, nesterov, wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 1e-2),
                                               (0.0, False, 1e-2)])
def test_sgd_float32_matches_the_formula(mu, nesterov, wd):
    """A float32 weight matrix and a 1-D bias get exactly the formula's update, in float32."""
    rng = np.random.default_rng(0)
    shapes = [(64, 32), (5,)]
    w0 = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) for s in shapes] for _ in range(3)]
    ps = [Parameter(w.copy()) for w in w0]
    opt = SGD(ps, 0.1, momentum=mu, nesterov=nesterov, weight_decay=wd)
    for gs in grads:
        for p, g in zip(ps, gs):
            p.grad = Tensor(g.copy())
        opt.step()
    for i, w in enumerate(w0):
        v = None
        for gs in grads:
            g = gs[i] + np.float32(wd) * w if wd else gs[i]
            if mu:
                v = g.copy() if v is None else np.float32(mu) * v + g
                g = g + np.float32(mu) * v if nesterov else v
            w = w - np.float32(0.1) * g
        np.testing.assert_array_equal(ps[i].numpy(), w)

def numpy_adam(grads, w, lr, b1, b2, eps, wd=0.0):
    m = v = np.zeros_like(w)
    out = []
    for t, g in enumerate(grads, 1):
        g = g + wd * w
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        mhat, vhat = m / (1 - b1 ** t), v / (1 - b2 ** t)
        w = w - lr * mhat / (np.sqrt(vhat) + eps)
        out.append(w)
    return out


@pytest.mark.parametrize("lr,b1,b2,eps,wd", [(1e-3, 0.9, 0.999, 1e-8, 0.0), (0.1, 0.5, 0.9, 1e-2, 0.0),
                                             (0.05, 0.9, 0.99, 1e-8, 0.1)])
def test_adam_against_numpy(lr, b1, b2, eps, wd):
    ws = run(lambda ps: Adam(ps, lr, betas=(b1, b2), eps=eps, weight_decay=wd))
    for got, want in zip(ws, numpy_adam(GRADS, W0, lr, b1, b2, eps, wd)):
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_adam_first_step_is_lr_times_sign():
    # with bias correction the first step is lr * g / (|g| + eps) ~ lr * sign(g)
    ws = run(lambda ps: Adam(ps, 0.01), grads=[np.array([1e-3, -50.0])])
    np.testing.assert_allclose(ws[0], W0 - 0.01 * np.array([1.0, -1.0]), rtol=1e-6)


@pytest.mark.parametrize("make", [lambda ps: SGD(ps, 0.1, momentum=0.9, nesterov=True),
                                  lambda ps: SGD(ps, 0.2), lambda ps: Adam(ps, 0.1)])
def test_convergence_on_a_quadratic(make):
    target = np.array([[3.0, -1.0], [0.5, 2.0]])
    scales = np.array([[1.0, 2.0], [0.5, 1.5]])
    w = Parameter(np.zeros((2, 2)))
    opt = make([w])
    for _ in range(500):
        opt.zero_grad()
        loss = (((w - target) ** 2) * scales).sum()
        loss.backward()
        opt.step()
    np.testing.assert_allclose(w.numpy(), target, atol=1e-3)


def test_optimizer_argument_errors():
    with pytest.raises(ValueError, match="empty parameter list"):
        SGD([], 0.1)
    with pytest.raises(ValueError, match=r"Adam: lr: expected a finite number > 0, got 0.0"):
        Adam([Parameter(np.ones(1))], 0.0)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match="SGD: lr: expected a finite number > 0"):
            SGD([Parameter(np.ones(1))], bad)
    with pytest.raises(ValueError, match="Adam: betas.1.: expected"):
        Adam([Parameter(np.ones(1))], 0.1, betas=(0.9, float("nan")))
    with pytest.raises(ValueError, match="SGD: weight_decay: expected"):
        SGD([Parameter(np.ones(1))], 0.1, weight_decay=float("nan"))
    with pytest.raises(ValueError, match="nesterov"):
        SGD([Parameter(np.ones(1))], 0.1, nesterov=True)
    with pytest.raises(ValueError, match="momentum"):
        SGD([Parameter(np.ones(1))], 0.1, momentum=-1)


# --- state dict -------------------------------------------------------------------------------
@pytest.mark.parametrize("make", [lambda ps: SGD(ps, 0.1, momentum=0.9, nesterov=True, weight_decay=1e-2),
                                  lambda ps: Adam(ps, 0.05, weight_decay=1e-2)])
@pytest.mark.parametrize("via_file", [False, True])
def test_optimizer_state_dict_round_trip_continues_identically(make, via_file, tmp_path):
    rng = np.random.default_rng(0)
    grads = [[rng.standard_normal((3, 2)), rng.standard_normal(4)] for _ in range(6)]
    shapes = [(3, 2), (4,)]

    def step(opt, params, gs):
        for p, g in zip(params, gs):
            p.grad = Tensor(g.copy())
        opt.step()

    a = [Parameter(rng.standard_normal(s)) for s in shapes]
    opt_a = make(a)
    for gs in grads[:3]:
        step(opt_a, a, gs)
    state = opt_a.state_dict()
    snapshot = [p.numpy().copy() for p in a]
    if via_file:
        md.save({"optimizer": state}, tmp_path / "opt.npz")
        state = md.load(tmp_path / "opt.npz")["optimizer"]
    for gs in grads[3:]:  # the original goes on (must not change the saved state)
        step(opt_a, a, gs)

    b = [Parameter(s.copy()) for s in snapshot]
    opt_b = make(b)
    opt_b.load_state_dict(state)
    assert opt_b.steps == 3
    for gs in grads[3:]:
        step(opt_b, b, gs)
    for pa, pb in zip(a, b):
        np.testing.assert_array_equal(pa.numpy(), pb.numpy())


# --- schedules --------------------------------------------------------------------------------
def make_opt(lr=1.0):
    return SGD([Parameter(np.zeros(1))], lr)


def lrs(schedule, n):
    out = [schedule.optimizer.lr]
    for _ in range(n):
        out.append(schedule.step())
    return out


def test_step_lr():
    s = StepLR(make_opt(0.5), step_size=3, gamma=0.1)
    np.testing.assert_allclose(lrs(s, 7), [0.5, 0.5, 0.5, 0.05, 0.05, 0.05, 0.005, 0.005])


def test_cosine_lr_endpoints_and_midpoint():
    opt = make_opt(0.2)
    s = CosineAnnealingLR(opt, T_max=10, eta_min=0.02)
    seq = lrs(s, 12)
    assert seq[0] == pytest.approx(0.2)
    assert seq[5] == pytest.approx(0.11)  # halfway: the mean of base and min
    assert seq[10] == pytest.approx(0.02)
    assert seq[11] == pytest.approx(seq[9]) and seq[11] > seq[10]  # PyTorch's: rises again after T_max
    assert all(x >= y for x, y in zip(seq[:11], seq[1:11]))  # non-increasing up to T_max


def test_cyclic_lr_peak_and_endpoints():
    s = CyclicLR(make_opt(0.4), base_lr=0.0, max_lr=0.4, step_size_up=4, step_size_down=6, cycle_momentum=False)
    seq = lrs(s, 10)
    assert seq[0] == 0.0
    assert seq[4] == pytest.approx(0.4) and max(seq) == pytest.approx(0.4)
    assert seq[2] == pytest.approx(0.2)
    assert seq[10] == pytest.approx(0.0, abs=1e-15)
    assert seq[7] == pytest.approx(0.2)
    s = CyclicLR(make_opt(0.1), base_lr=0.5, max_lr=1.0, step_size_up=2, cycle_momentum=False)
    np.testing.assert_allclose(lrs(s, 4), [0.5, 0.75, 1.0, 0.75, 0.5])


def test_one_cycle_lr_peak_and_endpoints():
    total = 100
    s = OneCycleLR(make_opt(0.5), max_lr=0.5, total_steps=total, cycle_momentum=False)
    seq = lrs(s, total - 1)
    assert seq[0] == pytest.approx(0.5 / 25)  # starts at max_lr / div_factor
    assert int(np.argmax(seq)) == 29 and seq[29] == pytest.approx(0.5)  # peaks at step 0.3 total - 1
    assert all(x <= y for x, y in zip(seq[:30], seq[1:30]))  # rises, then falls
    assert all(x >= y for x, y in zip(seq[29:], seq[30:]))
    assert seq[total - 1] == pytest.approx(0.5 / 25 / 1e4)  # min_lr at the last step


def test_schedule_state_dict_round_trip():
    s = CosineAnnealingLR(make_opt(0.3), T_max=20)
    for _ in range(7):
        s.step()
    opt2 = make_opt(0.3)
    s2 = CosineAnnealingLR(opt2, T_max=20)
    s2.load_state_dict(s.state_dict())
    assert opt2.lr == pytest.approx(s.optimizer.lr)
    assert lrs(s2, 5) == pytest.approx(lrs(s, 5))


def test_schedule_resumes_from_an_old_checkpoint():
    """Checkpoints written before the PyTorch-style schedulers hold {"count", "base_lr"}."""
    s = CyclicLR(make_opt(0.4), base_lr=0.0, max_lr=0.4, step_size_up=4, step_size_down=6, cycle_momentum=False)
    s.load_state_dict({"count": 2, "base_lr": 0.4})
    assert s.optimizer.lr == pytest.approx(0.2) and s.last_epoch == 2
def test_fast_training_schedule_is_wong_et_al_per_batch():
    """The cyclic schedule of a TrainConfig runs batch i of epoch e at Wong et al.'s
    interp(e + (i + 1) / n, [0, epochs * 2 // 5, epochs], [0, lr_max, 0]), set before the step:
    not one step late (the first step at rate 0, the last one above 0)."""
    from minidl.experiment import TrainConfig, make_optimizer
    epochs, n, lr_max = 10, 7, 5e-3
    config = TrainConfig(adv="fgsm", epochs=epochs, lr=lr_max, optimizer="adam").resolved()
    assert config.schedule == "cyclic"
    opt, schedule = make_optimizer(config, md.nn.Linear(2, 2), n)
    used = []
    for _ in range(epochs * n):
        used.append(opt.lr)  # the rate the next optimizer step runs at
        schedule.step()
    t = np.arange(epochs * n) // n + (np.arange(epochs * n) % n + 1) / n
    np.testing.assert_allclose(used, np.interp(t, [0, epochs * 2 // 5, epochs], [0, lr_max, 0]), rtol=1e-12, atol=1e-18)
