"""GradAlign (``adversarial.gradalign``): its penalty's gradient with respect to the weights
(a derivative of an input gradient) against float64 finite differences, the penalty's values
at its extremes, its configuration checks, and a short training run through the CLI."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl import nn
from minidl.adversarial.gradalign import grad_align_penalty
from minidl.cli import main as cli_main
from minidl.experiment import TrainConfig, train_on_arrays
from minidl.testing import gradcheck
from minidl.train import CHECKPOINT

from test_train import synthetic


def small_net():
    md.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Tanh(), nn.Flatten(), nn.Linear(3 * 3 * 3, 4))
    for p in net.parameters():
        p.array = p.array.astype(np.float64)
    return net


def _case():
    rng = np.random.default_rng(0)
    x = md.tensor(rng.random((3, 1, 5, 5)))
    return small_net(), x, np.array([0, 3, 1]), rng.uniform(-0.3, 0.3, x.shape)


def test_penalty_gradient_matches_finite_differences():
    """detach_clean=False: the exact gradient of the penalty with respect to every weight."""
    net, x, y, eta = _case()
    # gradcheck perturbs the parameters' arrays in place; the penalty reads them through net
    assert gradcheck(lambda *ps: grad_align_penalty(net, x, y, eps=0.3, weight=2.0, eta=eta, detach_clean=False),
                     *net.parameters(), promote=False, atol=1e-7, rtol=1e-6)


def test_default_penalty_gradient_holds_the_clean_gradient_constant():
    """The default (the authors' code): finite differences of the penalty in which the clean input
    gradient g1 is computed once, at the unperturbed weights."""
    net, x, y, eta = _case()
    clean = md.Tensor(x.array, requires_grad=True)
    g1 = md.autograd.grad(F.cross_entropy(net(clean), y, reduction="sum"), clean)[0].array.reshape(3, -1)

    def frozen(*params):
        noisy = md.Tensor(x.array + eta, requires_grad=True)
        g2 = md.autograd.grad(F.cross_entropy(net(noisy), y, reduction="sum"), noisy, create_graph=True)[0]
        g2 = g2.reshape(3, -1)
        cos = (g2 * g1).sum(axis=1) / (g2.norm(dim=1) * np.sqrt((g1 * g1).sum(axis=1)))
        return 2.0 * (1 - cos.mean())
    params = list(net.parameters())
    ours = md.autograd.grad(grad_align_penalty(net, x, y, eps=0.3, weight=2.0, eta=eta), params)
    np.testing.assert_allclose(frozen().item(), grad_align_penalty(net, x, y, 0.3, 2.0, eta=eta).item(), rtol=1e-12)
    assert gradcheck(frozen, *params, promote=False, atol=1e-7, rtol=1e-6)  # the reference itself
    reference = md.autograd.grad(frozen(), params)
    for a, b in zip(ours, reference):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-14)
    exact = md.autograd.grad(grad_align_penalty(net, x, y, 0.3, 2.0, eta=eta, detach_clean=False), params)
    assert not np.allclose(exact[0].numpy(), ours[0].numpy())  # the two choices do differ


def test_penalty_is_zero_for_a_linear_model_and_its_cosine_is_bounded():
    md.manual_seed(0)
    linear = nn.Sequential(nn.Flatten(), nn.Linear(25, 4))
    x = md.tensor(np.random.default_rng(1).random((4, 1, 5, 5)).astype(np.float32))
    y = np.array([0, 1, 2, 3])
    # softmax makes the input gradient depend on x, but at eta = 0 the two gradients coincide
    assert abs(grad_align_penalty(linear, x, y, eps=0.1, weight=1.0, eta=np.zeros(x.shape, np.float32)).item()) < 1e-6
    value = grad_align_penalty(small_net(), x.double(), y, eps=0.5, weight=3.0).item()
    assert 0 <= value <= 6.0


def test_config_checks_grad_align():
    with pytest.raises(ValueError, match="grad_align: expected a finite number >= 0, got -1"):
        TrainConfig(adv="fgsm", grad_align=-1).resolved()
    with pytest.raises(ValueError, match="single-step adversarial training.*adv='pgd'"):
        TrainConfig(adv="pgd", grad_align=0.2).resolved()
    assert TrainConfig(adv="fgsm", grad_align=0.2).resolved().grad_align == 0.2


def test_training_with_grad_align_runs_and_learns(tmp_path):
    config = TrainConfig(dataset="synthetic", model="lenet", epochs=2, batch_size=16, lr=3e-3, optimizer="adam",
                         adv="fgsm", eps=0.05, grad_align=0.5)
    train, test = synthetic(96, size=12), synthetic(32, size=12, seed=1)
    _, history = train_on_arrays(config, train, test, str(tmp_path), progress=False)
    assert np.isfinite(history[-1]["train_loss"])
    assert md.load(str(tmp_path / CHECKPOINT))["config"]["grad_align"] == 0.5


def test_cli_grad_align_flag(capsys):
    assert cli_main(["train", "--dataset", "mnist", "--model", "mlp", "--grad-align", "-0.5", "--out", "x"]) == 2
    err = capsys.readouterr().err
    assert "--grad-align" in err and len(err.strip().splitlines()) == 1
