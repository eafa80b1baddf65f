"""Adam (Kingma and Ba, 2015) and AdamW (Loshchilov and Hutter, 2019)."""
import math

from ..validation import check_number
from ..validation import check_number
from .optimizer import Optimizer


class Adam(Optimizer):
    """m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    w <- w - lr * (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps).  Weight decay is added to g (L2)."""

    decoupled = False

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        name = type(self).__name__
        for i, b in enumerate(betas):
            check_number(f"{name}: betas[{i}]", b, minimum=0, maximum=1)
            if b == 1:  # 1 - b^t would be 0: the bias correction divides by it
                raise ValueError(f"{name}: betas[{i}]: expected a number in [0, 1), got {b!r}")
        check_number(f"{name}: eps", eps, minimum=0, strict=True)
        check_number(f"{name}: weight_decay", weight_decay, minimum=0)
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
        if wd and self.decoupled:
            p.array *= 1 - lr * wd
        elif wd:
            g = g + wd * p.array
        if "m" not in state:
            state["m"] = g * 0
            state["v"] = g * 0
        m, v = state["m"], state["v"]
        m *= b1
        m += (1 - b1) * g
        v *= b2
        v += (1 - b2) * g * g
        t = self.steps
        step = lr * math.sqrt(1 - b2 ** t) / (1 - b1 ** t)
        p.array -= step * m / (v ** 0.5 + eps * math.sqrt(1 - b2 ** t))


class AdamW(Adam):
    """Adam with decoupled weight decay: w <- w (1 - lr wd) before the Adam step (PyTorch's AdamW,
    default weight_decay 0.01)."""

    decoupled = True

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        super().__init__(params, lr, betas, eps, weight_decay)
