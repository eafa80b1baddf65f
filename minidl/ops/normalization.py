"""Batch normalisation and dropout."""
import numpy

from ..autograd import Function
from ..backend import get_array_module
from ..kernels import workspace


class BatchNorm(Function):
    """y = gamma * (x - mu) / sqrt(var + eps) + beta over the batch and spatial axes
    (all but axis 1: (N, C) or (N, C, H, W)).

    In training, mu and var are the batch's (biased var), and the running statistics are
    updated in place: running = (1 - momentum) * running + momentum * batch (with the
    unbiased variance, as PyTorch does). In evaluation the running statistics are used and
    act as constants.

    With xc = x - mu, s = 1 / sqrt(var + eps), xhat = xc * s and m elements per channel,
    the training backward is dL/dx = gamma * s * (g - mean(g) - xhat * mean(g * xhat)), i.e.
    per channel an affine map of g and xc:

        dL/dx = a * g + b * xc + c,  a = gamma * s,  b = -a * s^2 * sum(g * xc) / m,  c = -a * sum(g) / m
        dL/dgamma = s * sum(g * xc),  dL/dbeta = sum(g)

    So each pass over the data computes a whole per-channel quantity (the sums, one einsum
    for each dot product, one fused multiply per output) and only xc is kept for backward.
    """

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        self.axes = (0,) + tuple(range(2, x.ndim))
        shape = (1, -1) + (1,) * (x.ndim - 2)
        m = x.size // x.shape[1]
        if self.training:
            mu = x.sum(axis=self.axes) / m
        else:
            mu = self.running_mean
        self.xc = _empty_like(x, xp)
        xp.subtract(x, mu.astype(x.dtype, copy=False).reshape(shape), out=self.xc)
        if self.training:
            var = _channel_dot(self.xc, self.xc, xp) / m
            if self.running_mean is not None:
                self.running_mean *= 1 - self.momentum
                self.running_mean += self.momentum * mu
                self.running_var *= 1 - self.momentum
                self.running_var += self.momentum * var * (m / max(m - 1, 1))
        else:
            var = self.running_var
        self.inv_std = (1 / xp.sqrt(var + self.eps)).astype(x.dtype)
        self.gamma = gamma
        y = _empty_like(x, xp)
        xp.multiply(self.xc, (gamma * self.inv_std).astype(x.dtype, copy=False).reshape(shape), out=y)
        y += beta.astype(x.dtype, copy=False).reshape(shape)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        shape = (1, -1) + (1,) * (g.ndim - 2)
        m = g.size // g.shape[1]
        s, gamma = self.inv_std, self.gamma
        need_gx, need_gamma, need_beta = self.needs_grad
        sum_g = g.sum(axis=self.axes) if (need_beta or (need_gx and self.training)) else None
        sum_gxc = _channel_dot(g, self.xc, xp) if (need_gamma or (need_gx and self.training)) else None
        gx = None
        if need_gx:
            a = gamma * s
            gx = _empty_like(g, xp)
            xp.multiply(g, a.astype(g.dtype, copy=False).reshape(shape), out=gx)
            if self.training:
                b = (-a * s * s * sum_gxc / m).astype(g.dtype, copy=False)
                c = (-a * sum_g / m).astype(g.dtype, copy=False)
                with workspace.Scratch() as scratch:  # bxc: a temporary, pooled on the CPU
                    bxc = scratch.empty(g.shape, g.dtype) if xp is numpy else None
                    gx += xp.multiply(self.xc, b.reshape(shape), out=bxc)
                gx += c.reshape(shape)
        ggamma = sum_gxc * s if need_gamma else None
        gbeta = sum_g if need_beta else None
        return gx, ggamma, gbeta


def _channel_dot(a, b, xp):
    """sum over all axes but 1 of a * b, per channel (one pass, no temporary)."""
    n, c = a.shape[:2]
    return xp.einsum("nci,nci->c", a.reshape(n, c, -1), b.reshape(n, c, -1))


def _empty_like(x, xp):
    """An uninitialised C-contiguous array like ``x``: an ordinary array, since it is an output
    or kept for backward (a pooled ``workspace.Scratch`` buffer must not escape its block)."""
    return xp.empty(x.shape, x.dtype)


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
