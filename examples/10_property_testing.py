"""Example 10: write a new op as a Function and property-test it with minidl.testing.

    softplus(x)      = log(1 + e^x)          d/dx = sigmoid(x) = 1 / (1 + e^-x)
    leaky_relu(x; a) = x if x > 0 else a x   d/dx = 1 if x > 0 else a   (a kink at 0)

Both are elementwise, so they take any shape. Each test draws tensors of random shape, dtype
(float32 or float64) and values, and ``check_backward`` checks in one call: the output's dtype
and device, the shape, dtype and device of every gradient ``backward`` returns, that nothing
is modified in place, that a Function claiming ``reads_inputs = False`` (leaky_relu: its backward
reads only the mask) gives the same gradient after its input was overwritten, and the gradient
against finite differences (float32 re-run in float64).
leaky_relu's values are drawn at least 0.05 away from its kink (``away_from=0.0``), where
finite differences would average the two slopes.

``WrongSoftplus`` has a classic slip, sigmoid(-x) for sigmoid(x). Its test expects the
failure, and running this file prints the report: the input, the worst entry, the analytic
and numerical values.

Run: python examples/10_property_testing.py
 or: python -m pytest examples/10_property_testing.py
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minidl as md
from minidl.autograd import Function
from minidl.backend import get_array_module
from minidl.testing import GradcheckError, check_backward
from minidl.testing.strategies import tensors


class Softplus(Function):
    """y = log(1 + e^x), computed as logaddexp(0, x) so that large x does not overflow."""

    def forward(self, x):
        self.x = x
        return get_array_module(x).logaddexp(0, x)

    def backward(self, g):
        xp = get_array_module(g)
        return (g / (1 + xp.exp(-self.x)),)


class LeakyReLU(Function):
    """y = x for x > 0, slope * x otherwise."""
    # backward reads only the mask kept by forward, not x: autograd then keeps no reference to
    # the input (freed as soon as the forward pass is done with it) and check_backward verifies
    # the claim by overwriting x between forward and backward
    reads_inputs = False

    def __init__(self, slope=0.01):
        self.slope = slope

    def forward(self, x):
        self.positive = x > 0
        return get_array_module(x).where(self.positive, x, x * x.dtype.type(self.slope))

    def backward(self, g):
        return (get_array_module(g).where(self.positive, g, g * g.dtype.type(self.slope)),)


class WrongSoftplus(Softplus):
    """The deliberate bug: sigmoid(-x) instead of sigmoid(x)."""

    def backward(self, g):
        xp = get_array_module(g)
        return (g / (1 + xp.exp(self.x)),)


FLOATS = st.sampled_from([np.float32, np.float64])


@settings(max_examples=25, deadline=None)
@given(x=tensors(dtype=FLOATS, min_value=-5.0, max_value=5.0))
def test_softplus(x):
    assert check_backward(Softplus, x)


@settings(max_examples=25, deadline=None)
@given(x=tensors(dtype=FLOATS, away_from=0.0), slope=st.floats(0.0, 1.0))
def test_leaky_relu(x, slope):
    assert check_backward(LeakyReLU, x, params=dict(slope=slope))


def test_wrong_backward_is_caught():
    x = md.tensor(np.linspace(-2.0, 2.0, 6).reshape(2, 3), dtype="float64", requires_grad=True)
    with pytest.raises(GradcheckError, match="gradient of input 0") as failure:
        check_backward(WrongSoftplus, x)
    return str(failure.value)


if __name__ == "__main__":
    test_softplus()
    test_leaky_relu()
    print("Softplus and LeakyReLU: every check passed on 25 drawn tensors each.")
    print("WrongSoftplus fails as it should:\n" + test_wrong_backward_is_caught())
