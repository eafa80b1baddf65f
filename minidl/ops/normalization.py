"""Batch normalisation and dropout."""
from ..autograd import Function
from ..backend import get_array_module


class BatchNorm(Function):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta over the batch and spatial axes
    (all but axis 1: (N, C) or (N, C, H, W)).

    In training, mu and var are the batch's (biased var), and the running statistics are
    updated in place: running = (1 - momentum) * running + momentum * batch (with the
    unbiased variance, as PyTorch does). In evaluation the running statistics are used and
    act as constants.

    Training backward, with xhat = (x - mu) / s and m elements per channel:
    dL/dx = gamma / s * (g - mean(g) - xhat * mean(g * xhat)).
    """

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        self.axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            mu = x.mean(axis=self.axes)
            var = x.var(axis=self.axes)
            m = x.size // x.shape[1]
            if self.running_mean is not None:
                self.running_mean *= 1 - self.momentum
                self.running_mean += self.momentum * mu
                self.running_var *= 1 - self.momentum
                self.running_var += self.momentum * var * (m / max(m - 1, 1))
        else:
            mu, var = self.running_mean, self.running_var
        self.inv_std = (1 / xp.sqrt(var + self.eps)).astype(x.dtype).reshape(shape)
        self.xhat = (x - mu.astype(x.dtype).reshape(shape)) * self.inv_std
        self.gamma = gamma.reshape(shape)
        return self.xhat * self.gamma + beta.reshape(shape)

    def backward(self, g):
        gx = None
        if self.needs_grad[0]:
            if self.training:
                mean_g = g.mean(axis=self.axes, keepdims=True)
                mean_gx = (g * self.xhat).mean(axis=self.axes, keepdims=True)
                gx = self.gamma * self.inv_std * (g - mean_g - self.xhat * mean_gx)
            else:
                gx = g * self.gamma * self.inv_std
        ggamma = (g * self.xhat).sum(axis=self.axes) if self.needs_grad[1] else None
        gbeta = g.sum(axis=self.axes) if self.needs_grad[2] else None
        return gx, ggamma, gbeta


class Dropout(Function):
    """y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p), so E[y] = x;  dL/dx = g * mask / (1 - p)."""

    def __init__(self, p, rng):
        self.p, self.rng = p, rng

    def forward(self, x):
        keep = self.rng.random(x.shape) >= self.p
        self.scale = keep.astype(x.dtype) / (1 - self.p)
        return x * self.scale

    def backward(self, g):
        return (g * self.scale,)
