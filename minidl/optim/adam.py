"""Adam (Kingma and Ba, 2015)."""
import math

from ..validation import check_number
from .optimizer import Optimizer


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    w <- w - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).  Weight decay is added to g (L2)."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.b1, self.b2 = betas
        check_number("Adam: betas[0]", self.b1, minimum=0, maximum=1)
        check_number("Adam: betas[1]", self.b2, minimum=0, maximum=1)
        check_number("Adam: eps", eps, minimum=0, strict=True)
        check_number("Adam: weight_decay", weight_decay, minimum=0)
        self.eps, self.weight_decay = eps, weight_decay

    def update(self, p, g, state):
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if "m" not in state:
            state["m"] = g * 0
            state["v"] = g * 0
        m, v = state["m"], state["v"]
        m *= self.b1
        m += (1 - self.b1) * g
        v *= self.b2
        v += (1 - self.b2) * g * g
        t = self.steps
        step = self.lr * math.sqrt(1 - self.b2 ** t) / (1 - self.b1 ** t)
        p.data -= step * m / (v ** 0.5 + self.eps * math.sqrt(1 - self.b2 ** t))
