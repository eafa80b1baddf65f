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

    So each pass over the data computes a whole per-channel quantity: the sums, one einsum for
    each dot product, the output as y = x * (gamma s) + (beta - mu gamma s). Nothing of x's size
    is kept for backward (x itself is held by autograd as the input): on the CPU the passes run
    over chunks of the batch (``_CHUNK_BYTES``), and xc is recomputed per chunk into a small
    buffer that stays in cache, which costs less than reading a stored xc back from memory.
    """

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        m = x.size // x.shape[1]
        shape = (1, -1) + (1,) * (x.ndim - 2)
        if self.training:
            mu = _channel_sum(x, xp) / m
            var = xp.zeros(x.shape[1], x.dtype)
            with workspace.Scratch() as scratch:
                for xc_, xc in _centred_chunks(x, mu, xp, scratch):
                    var += _channel_dot(xc, xc, xp)
            var /= m
            if self.running_mean is not None:
                self.running_mean *= 1 - self.momentum
                self.running_mean += self.momentum * mu
                self.running_var *= 1 - self.momentum
                self.running_var += self.momentum * var * (m / max(m - 1, 1))
        else:
            mu, var = self.running_mean, self.running_var
        self.x, self.mu = x, mu.astype(x.dtype, copy=False)
        self.inv_std = (1 / xp.sqrt(var + self.eps)).astype(x.dtype)
        self.gamma = gamma
        scale = (gamma * self.inv_std).astype(x.dtype, copy=False)
        shift = (beta - self.mu * scale).astype(x.dtype, copy=False)
        y = xp.empty(x.shape, x.dtype)  # an output: an ordinary array
        for n0, n1 in _batch_chunks(x, xp):
            yc = y[n0:n1]
            xp.multiply(x[n0:n1], scale.reshape(shape), out=yc)
            yc += shift.reshape(shape)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        shape = (1, -1) + (1,) * (g.ndim - 2)
        m = g.size // g.shape[1]
        s, gamma, x, mu = self.inv_std, self.gamma, self.x, self.mu
        need_gx, need_gamma, need_beta = self.needs_grad
        need_sum_gxc = need_gamma or (need_gx and self.training)
        sum_g = _channel_sum(g, xp) if (need_beta or (need_gx and self.training)) else None
        with workspace.Scratch() as scratch:
            if need_sum_gxc:
                sum_gxc = xp.zeros(g.shape[1], g.dtype)
                for (n0, n1), xc in _centred_chunks(x, mu, xp, scratch):
                    sum_gxc += _channel_dot(g[n0:n1], xc, xp)
            gx = None
            if need_gx:
                a = (gamma * s).astype(g.dtype, copy=False).reshape(shape)
                gx = xp.empty(g.shape, g.dtype)
                if self.training:
                    b = (-gamma * s * s * s * sum_gxc / m).astype(g.dtype, copy=False).reshape(shape)
                    c = (-gamma * s * sum_g / m).astype(g.dtype, copy=False).reshape(shape)
                    for (n0, n1), xc in _centred_chunks(x, mu, xp, scratch):
                        gxc = gx[n0:n1]
                        xp.multiply(g[n0:n1], a, out=gxc)
                        xc *= b
                        gxc += xc
                        gxc += c
                else:
                    xp.multiply(g, a, out=gx)
        ggamma = sum_gxc * s if need_gamma else None
        gbeta = sum_g if need_beta else None
        return gx, ggamma, gbeta


# On the CPU the per-channel passes run over chunks of the batch of about this many bytes, so
# that a chunk and its centred copy stay in the core's cache between the ufuncs of one pass.
_CHUNK_BYTES = 256 << 10


def _batch_chunks(x, xp):
    """Ranges (n0, n1) of the batch axis; the whole batch at once on a GPU."""
    N = x.shape[0]
    per_image = x[0].nbytes if N else 1
    n = N if xp is not numpy else max(1, min(N, _CHUNK_BYTES // max(1, per_image)))
    return [(n0, min(N, n0 + n)) for n0 in range(0, N, max(1, n))]


def _centred_chunks(x, mu, xp, scratch):
    """Yield ((n0, n1), x[n0:n1] - mu) for the chunks of ``_batch_chunks``; the centred chunk
    lives in one reused buffer, valid until the next one is yielded."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    chunks = _batch_chunks(x, xp)
    n = chunks[0][1] if chunks else 0
    flat = scratch.empty((n * x[0].size,), x.dtype) if xp is numpy else None
    mu = mu.astype(x.dtype, copy=False).reshape(shape)
    for n0, n1 in chunks:
        out = flat[:(n1 - n0) * x[0].size].reshape((n1 - n0,) + x.shape[1:]) if flat is not None else None
        yield (n0, n1), xp.subtract(x[n0:n1], mu, out=out)


def _channel_sum(a, xp):
    """sum over all axes but 1, per channel."""
    n, c = a.shape[:2]
    return xp.einsum("nci->c", a.reshape(n, c, -1))


def _channel_dot(a, b, xp):
    """sum over all axes but 1 of a * b, per channel (one pass, no temporary)."""
    n, c = a.shape[:2]
    return xp.einsum("nci,nci->c", a.reshape(n, c, -1), b.reshape(n, c, -1))


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
