"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from ..backend import get_array_module
from ..validation import check_number
from .optimizer import Optimizer


class SGD(Optimizer):
    """g <- grad + wd * w;  v <- mu * v + g;
    w <- w - lr * (g + mu * v)  (Nesterov)  or  w - lr * v  (classical)  or  w - lr * g (mu = 0).
    The same update rule as PyTorch's SGD, so results can be compared."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        check_number("SGD: momentum", momentum, minimum=0)
        check_number("SGD: weight_decay", weight_decay, minimum=0)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        super().__init__(params, dict(lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        lr, mu, nesterov, wd = group["lr"], group["momentum"], group["nesterov"], group["weight_decay"]
        v = state.get("velocity")
        first = mu and v is None
        if first:
            v = state["velocity"] = get_array_module(g).empty_like(g)
        w = p.array
        if wd:
            g = g + wd * w
        if mu:
            if first:
                v[...] = g
            else:
                v *= mu
                v += g
            g = g + mu * v if nesterov else v
        w -= lr * g
