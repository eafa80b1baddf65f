"""Stochastic gradient descent with momentum, Nesterov momentum and weight decay."""
from ..validation import check_number
from .optimizer import Optimizer


class SGD(Optimizer):
    """g <- grad + wd * w;  v <- mu * v + g;
    w <- w - lr * (g + mu * v)  (Nesterov)  or  w - lr * v  (classical)  or  w - lr * g (mu = 0).
    The same update rule as PyTorch's SGD, so results can be compared."""

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        check_number("SGD: momentum", momentum, minimum=0)
        check_number("SGD: weight_decay", weight_decay, minimum=0)
        if nesterov and momentum == 0:
            raise ValueError("SGD: nesterov=True needs momentum > 0")
        self.momentum, self.nesterov, self.weight_decay = momentum, nesterov, weight_decay

    def update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            v = state.get("velocity")
            if v is None:
                v = state["velocity"] = g.copy()
            else:
                v *= self.momentum
                v += g
            g = g + self.momentum * v if self.nesterov else v
        p.data -= self.lr * g
