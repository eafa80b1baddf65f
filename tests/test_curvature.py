"""The input-space curvature measure ``landscape.input_hessian_eigenvalues``: power iteration
with deflation on batched Hessian-vector products, against eigenvalues known in closed form
(a quadratic loss) and against the explicit Hessian of a small CNN (``testing.hessian``)."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F
from minidl import nn
from minidl.adversarial.landscape import input_hessian_eigenvalues
from minidl.testing import hessian


def test_quadratic_losses_with_known_eigenvalues():
    """loss_n = 1/2 x_n^T A_n x_n with A_n's eigenvalues chosen (mixed signs): the top three by
    magnitude, per image, whatever the images' values."""
    rng = np.random.default_rng(0)
    spectra = [np.array([5.0, -3.0, 2.0, 1.0, 0.5, -0.2]), np.array([-4.0, 1.0, 0.9, 0.3, 0.2, 0.1])]
    mats = []
    for s in spectra:
        q, _ = np.linalg.qr(rng.standard_normal((6, 6)))
        mats.append(q @ np.diag(s) @ q.T)
    A = md.tensor(np.stack(mats))

    def quadratic(z, y):  # z (N, 6): 1/2 z_n^T A_n z_n
        return 0.5 * ((A @ z.reshape(2, 6, 1)).reshape(2, 6) * z).sum(axis=1)
    images = rng.random((2, 1, 2, 3))
    got = input_hessian_eigenvalues(lambda x: x.reshape(2, 6), images, np.zeros(2, np.int64), k=3, iters=200,
                                    loss=quadratic)
    want = [sorted(s, key=abs, reverse=True)[:3] for s in spectra]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_small_cnn_top_eigenvalue_matches_the_explicit_hessian():
    md.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.Tanh(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(12, 3))
    for p in net.parameters():
        p.array = p.array.astype(np.float64)
    rng = np.random.default_rng(2)
    images, labels = rng.random((3, 1, 4, 4)), np.array([0, 2, 1])
    got = input_hessian_eigenvalues(net, images, labels, k=2, iters=300, batch_size=2)
    for n in range(3):
        H = hessian(lambda x: F.cross_entropy(net(x.reshape(1, 1, 4, 4)), labels[n:n + 1]),
                    md.tensor(images[n].reshape(-1))).numpy()
        eig = np.linalg.eigvalsh(H)
        top = sorted(eig, key=abs, reverse=True)[:2]
        np.testing.assert_allclose(got[n], top, rtol=1e-5, atol=1e-8)
    assert net.training  # attack_mode restored the mode


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="k: expected an integer >= 1"):
        input_hessian_eigenvalues(lambda x: x.reshape(1, -1), np.zeros((1, 1, 2, 2)), np.zeros(1, np.int64), k=0)
    with pytest.raises(ValueError, match="at least k = 5 values"):
        input_hessian_eigenvalues(lambda x: x.reshape(1, -1), np.zeros((1, 1, 2, 2)), np.zeros(1, np.int64), k=5)
