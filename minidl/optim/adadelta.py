"""Adadelta (Zeiler, 2012) and RMSprop (Hinton's lecture 6e), with PyTorch's update rules."""
from .optimizer import Optimizer


class Adadelta(Optimizer):
    """v <- rho v + (1-rho) g^2;  d = sqrt(u + eps) / sqrt(v + eps) * g;  u <- rho u + (1-rho) d^2;
    w <- w - lr d.  Weight decay is added to g."""

    def __init__(self, params, lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0):
        if not 0 <= rho <= 1 or eps < 0 or weight_decay < 0:
            raise ValueError(f"Adadelta: rho must be in [0, 1] and eps, weight_decay >= 0, got "
                             f"rho={rho}, eps={eps}, weight_decay={weight_decay}")
        super().__init__(params, dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay))

    def update(self, p, g, state, group):
        rho, eps = group["rho"], group["eps"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.array
        if "square_avg" not in state:
            state["square_avg"] = g * 0
            state["acc_delta"] = g * 0
        v, u = state["square_avg"], state["acc_delta"]
        v *= rho
        v += (1 - rho) * g * g
        delta = (u + eps) ** 0.5 / (v + eps) ** 0.5 * g
        u *= rho
        u += (1 - rho) * delta * delta
        p.array -= group["lr"] * delta


class RMSprop(Optimizer):
    """v <- alpha v + (1-alpha) g^2;  a = sqrt(v) + eps  (centered: sqrt(v - mean(g)^2) + eps);
    w <- w - lr g / a, or with momentum b <- mu b + g / a, w <- w - lr b."""

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0, momentum=0.0, centered=False):
        if not 0 <= alpha <= 1 or eps < 0 or weight_decay < 0 or momentum < 0:
            raise ValueError(f"RMSprop: alpha must be in [0, 1] and eps, weight_decay, momentum >= 0, got "
                             f"alpha={alpha}, eps={eps}, weight_decay={weight_decay}, momentum={momentum}")
        super().__init__(params, dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay,
                                      momentum=momentum, centered=centered))

    def update(self, p, g, state, group):
        alpha = group["alpha"]
        if group["weight_decay"]:
            g = g + group["weight_decay"] * p.array
        if "square_avg" not in state:
            state["square_avg"] = g * 0
        v = state["square_avg"]
        v *= alpha
        v += (1 - alpha) * g * g
        if group["centered"]:
            mean = state.setdefault("grad_avg", g * 0)
            mean *= alpha
            mean += (1 - alpha) * g
            avg = (v - mean * mean) ** 0.5 + group["eps"]
        else:
            avg = v ** 0.5 + group["eps"]
        if group["momentum"]:
            buf = state.setdefault("momentum_buffer", g * 0)
            buf *= group["momentum"]
            buf += g / avg
            p.array -= group["lr"] * buf
        else:
            p.array -= group["lr"] * g / avg
