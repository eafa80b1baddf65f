"""The worked examples from the lecture notes, computed by hand, reproduced by the engine."""
import numpy as np
import pytest

import minidl as md
import minidl.functional as F

from conftest import host, leaf

X = [1.5, -1.0, 1.3]
W1 = [[0.3, 0.4, 0.2], [0.3, 0.5, 0.2], [0.8, 1.0, -1.0]]
W2 = [[0.0, -1.2, 0.5], [0.9, 1.0, 0.0]]
W3 = [[-1.0, 1.0]]


def test_three_layer_relu_network_functional(device):
    x = leaf([X], device)  # a batch of one
    w1, w2, w3 = (leaf(w, device) for w in (W1, W2, W3))
    h1 = F.relu(F.linear(x, w1))
    h2 = F.relu(F.linear(h1, w2))
    f = F.relu(F.linear(h2, w3))
    # by hand: W1 x = (0.31, 0.21, -1.1) -> (0.31, 0.21, 0); W2 h1 = (-0.252, 0.489) -> (0, 0.489)
    np.testing.assert_allclose(host(h1), [[0.31, 0.21, 0.0]], atol=1e-12)
    np.testing.assert_allclose(host(h2), [[0.0, 0.489]], atol=1e-12)
    assert round(f.item(), 3) == 0.489
    f.backward()
    # only the active path (x -> h1[0], h1[1] -> h2[1] -> f) carries the gradient:
    # df/dx = 0.9 * W1[0] + 1.0 * W1[1]
    np.testing.assert_allclose(host(x.grad), [[0.57, 0.86, 0.38]], atol=1e-12)
    np.testing.assert_allclose(host(w3.grad), [[0.0, 0.489]], atol=1e-12)
    np.testing.assert_allclose(host(w2.grad), [[0, 0, 0], [0.31, 0.21, 0.0]], atol=1e-12)
    np.testing.assert_allclose(host(w1.grad), [[0.9 * v for v in X], X, [0, 0, 0]], atol=1e-12)


def test_three_layer_relu_network_as_modules():
    net = md.nn.Sequential(md.nn.Linear(3, 3, bias=False), md.nn.ReLU(),
                           md.nn.Linear(3, 2, bias=False), md.nn.ReLU(),
                           md.nn.Linear(2, 1, bias=False), md.nn.ReLU())
    net.load_state_dict({"0.weight": np.array(W1), "2.weight": np.array(W2), "4.weight": np.array(W3)})
    out = net(md.tensor([X]))
    assert out.shape == (1, 1)
    assert out.item() == pytest.approx(0.489, abs=5e-4)


IMAGE = [[1.0, 0.5, 20.0], [0.25, 0.0, 0.0], [0.0, 0.0, 20.0]]
KERNEL = [[1.0, 0.2], [0.2, 0.0]]
POOL_IN = [[4.0, 10.0, 5.0], [5.0, 7.0, 4.0], [-2.0, 3.0, 7.0]]


def test_convolution_example(device):
    y = F.conv2d(leaf([[IMAGE]], device), leaf([[KERNEL]], device))
    assert y.shape == (1, 1, 2, 2)
    np.testing.assert_allclose(host(y)[0, 0], [[1.15, 4.5], [0.25, 0.0]], atol=1e-12)
    # float32 too (the library default)
    y32 = F.conv2d(md.tensor([[IMAGE]], device=device), md.tensor([[KERNEL]], device=device))
    np.testing.assert_allclose(host(y32)[0, 0], [[1.15, 4.5], [0.25, 0.0]], atol=1e-6)


def test_max_pool_example(device):
    y = F.max_pool2d(leaf([[POOL_IN]], device), 2, stride=1)
    np.testing.assert_array_equal(host(y)[0, 0], [[10.0, 10.0], [7.0, 7.0]])


def test_avg_pool_example(device):
    y = F.avg_pool2d(leaf([[POOL_IN]], device), 2, stride=1)
    np.testing.assert_allclose(host(y)[0, 0], [[6.5, 6.5], [3.25, 5.25]], atol=1e-12)


def test_pool_example_gradients(device):
    # max: the 10 is the maximum of two windows and gets both gradients; the 7 at (1, 1) likewise
    x = leaf([[POOL_IN]], device)
    F.max_pool2d(x, 2, stride=1).sum().backward()
    np.testing.assert_array_equal(host(x.grad)[0, 0], [[0, 2, 0], [0, 2, 0], [0, 0, 0]])
    # avg: each input receives 1/4 per window that contains it
    x = leaf([[POOL_IN]], device)
    F.avg_pool2d(x, 2, stride=1).sum().backward()
    np.testing.assert_allclose(host(x.grad)[0, 0], np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4)
