"""GradAlign (Andriushchenko and Flammarion, "Understanding and Improving Fast Adversarial
Training", NeurIPS 2020): a regulariser that keeps single-step (FGSM) adversarial training from
catastrophic overfitting by keeping the loss locally linear in the input.

With L the cross-entropy of the model on the batch, g1 = dL/dx at the clean inputs x and
g2 = dL/dx at x + eta, eta uniform in the L-inf ball of radius eps, per example n::

    penalty = lambda * (1 - mean_n cos(g1_n, g2_n)),   cos(a, b) = <a, b> / max(|a| |b|, 1e-8)

It is added to the training loss, so its gradient with respect to the weights is needed: a
derivative of an input gradient, through ``autograd.grad(..., create_graph=True)``. As in the
authors' code, g1 is by default a constant and only g2 is differentiated through (one double
backward pass instead of two); ``detach_clean=False`` differentiates both, the exact gradient
of the penalty. The input gradients are those of the summed (not averaged) loss, so that
their norms do not shrink with the batch size towards the 1e-8 floor; the cosine itself does
not depend on that scale.
"""
from .. import backend
from ..autograd import enable_grad, grad
from ..functional import cross_entropy
from ..tensor import Tensor
from ..validation import check_number


def grad_align_penalty(model, x, y, eps, weight, eta=None, detach_clean=True):
    """The GradAlign penalty (module docstring) of ``model`` on the batch (x, y): a one-element
    Tensor whose graph reaches the model's parameters. ``eta`` (an array shaped like x) fixes
    the random point; by default it is drawn from the library generator, uniform in [-eps, eps].
    ``detach_clean``: hold the clean input gradient g1 constant (the authors' choice)."""
    check_number("grad_align_penalty: eps", eps, minimum=0)
    check_number("grad_align_penalty: weight", weight, minimum=0)
    if eta is None:
        eta = backend.rng(backend.get_array_module(x.array)).uniform(-eps, eps, x.shape).astype(x.dtype)
    elif tuple(eta.shape) != x.shape:
        raise ValueError(f"grad_align_penalty: eta has shape {tuple(eta.shape)}, expected {x.shape} (x's)")
    n = x.shape[0]
    with enable_grad():
        clean = Tensor(x.array, requires_grad=True)
        g1, = grad(cross_entropy(model(clean), y, reduction="sum"), clean, create_graph=not detach_clean)
        noisy = Tensor(x.array + eta, requires_grad=True)
        g2, = grad(cross_entropy(model(noisy), y, reduction="sum"), noisy, create_graph=True)
        g1, g2 = g1.reshape(n, -1), g2.reshape(n, -1)
        cos = (g1 * g2).sum(axis=1) / (g1.norm(dim=1) * g2.norm(dim=1)).clamp(min=1e-8)
        return weight * (1 - cos.mean())
