"""Example 11: gradients of gradients (``autograd.grad(..., create_graph=True)``).

1. A Hessian-vector product H v of a small network's loss with respect to its input, by
   differentiating <grad L, v> once more, checked against the central difference of the
   gradient, (grad L(x + h v) - grad L(x - h v)) / (2 h).
2. Newton's method, w <- w - H^-1 grad f, on a small regularised logistic regression, with the
   Hessian from ``minidl.testing.hessian``: quadratic convergence to machine precision in a
   few steps.
3. A gradient penalty, lambda |d loss / dx|^2 (double backpropagation, Drucker and LeCun 1992;
   GradAlign in ``minidl.adversarial.gradalign`` is a cousin): its gradient with respect to
   the weights goes through the input gradient.

Run: python examples/11_higher_order.py
"""
import numpy as np

import minidl as md
import minidl.functional as F
from minidl import nn
from minidl.autograd import grad
from minidl.testing import hessian, hvp


def small_net():
    md.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16, 3))
    for p in net.parameters():
        p.array = p.array.astype(np.float64)  # float64, so that the finite difference is accurate
    return net


def hessian_vector_product():
    net = small_net()
    rng = np.random.default_rng(0)
    x0, y = rng.random((2, 1, 4, 4)), np.array([0, 2])
    v = rng.standard_normal(x0.shape)
    loss = lambda x: F.cross_entropy(net(x), y)  # noqa: E731

    _, hv = hvp(loss, md.tensor(x0), v)          # the two backward passes, as below:
    x = md.tensor(x0, requires_grad=True)
    g, = grad(loss(x), x, create_graph=True)     # g has a graph ...
    hv2, = grad((g * md.tensor(v)).sum(), x)     # ... so <g, v> can be differentiated again

    def gradient(at):
        t = md.tensor(at, requires_grad=True)
        return grad(loss(t), t)[0].numpy()
    h = 1e-5
    numeric = (gradient(x0 + h * v) - gradient(x0 - h * v)) / (2 * h)
    error = np.abs(hv.numpy() - numeric).max() / np.abs(numeric).max()
    print(f"Hessian-vector product: relative error against finite differences {error:.1e}")
    assert error < 1e-6 and np.allclose(hv.numpy(), hv2.numpy())
    return error


def newton():
    """Regularised logistic regression, f(w) = mean_i log(1 + exp(-y_i a_i . w)) + 0.05 |w|^2:
    smooth and strictly convex, so Newton's method converges quadratically (the gradient's
    norm roughly squares at every step)."""
    rng = np.random.default_rng(2)
    A = md.tensor(rng.standard_normal((20, 3)))
    labels = md.tensor(np.sign(rng.standard_normal(20)))
    f = lambda w: (1 + (-(labels * (A @ w))).exp()).log().mean() + 0.05 * (w * w).sum()  # noqa: E731
    w = np.zeros(3)
    for step in range(6):
        t = md.tensor(w, requires_grad=True)
        g, = grad(f(t), t)
        H = hessian(f, md.tensor(w)).numpy()
        print(f"Newton step {step}: |grad f| = {np.linalg.norm(g.numpy()):.3e}")
        w = w - np.linalg.solve(H, g.numpy())
    t = md.tensor(w, requires_grad=True)
    assert np.linalg.norm(grad(f(t), t)[0].numpy()) < 1e-12
    return w


def gradient_penalty(weight=0.1):
    net = small_net()
    rng = np.random.default_rng(1)
    x, y = md.tensor(rng.random((4, 1, 4, 4)), requires_grad=True), np.array([0, 1, 2, 0])
    loss = F.cross_entropy(net(x), y)
    gx, = grad(loss, x, create_graph=True)
    total = loss + weight * (gx * gx).sum()
    params = list(net.parameters())
    with_penalty = grad(total, params)
    without = grad(F.cross_entropy(net(x), y), params)
    change = max(np.abs(a.numpy() - b.numpy()).max() for a, b in zip(with_penalty, without))
    print(f"gradient penalty {weight * (gx * gx).sum().item():.3e}: it changes the weights' gradient by up to {change:.1e}")
    assert change > 0
    return change


if __name__ == "__main__":
    hessian_vector_product()
    newton()
    gradient_penalty()
