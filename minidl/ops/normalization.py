"""Batch normalisation and dropout."""
import contextlib
import math

import numpy

from ..autograd import Function
from ..backend import get_array_module
from ..kernels import parallel, workspace
from ..kernels.arrays import channel_sum, per_channel


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
    The chunks are spread over the kernel threads and their per-channel partial sums added in
    chunk order, so the result does not depend on the thread count.
    """

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        m = x.size // x.shape[1]
        chunks = _batch_chunks(x, xp)
        if self.training:
            mu, var = _batch_mean_var(chunks, x, xp)
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
        shift = per_channel(beta - self.mu * scale, x)
        scale = per_channel(scale, x)
        y = xp.empty(x.shape, x.dtype)  # an output: an ordinary array

        def affine(i, _):
            n0, n1 = chunks[i]
            yc = y[n0:n1]
            xp.multiply(x[n0:n1], scale, out=yc)
            yc += shift
        parallel.for_each_item(len(chunks), affine, x.nbytes)
        return y

    def backward(self, g):
        xp = get_array_module(g)
        m = g.size // g.shape[1]
        s, gamma, x, mu = self.inv_std, self.gamma, self.x, self.mu
        need_gx, need_gamma, need_beta = self.needs_grad
        need_sum_gxc = need_gamma or (need_gx and self.training)
        need_sum_g = need_beta or (need_gx and self.training)
        chunks = _batch_chunks(g, xp)
        sum_g = sum_gxc = None
        mu_x = per_channel(mu, x) if need_sum_gxc else None
        if need_sum_gxc:  # both sums in one pass over g
            sum_g, sum_gxc = _sum_over_chunks(
                chunks, lambda sl, centre: xp.stack([channel_sum(g[sl]), _channel_dot(g[sl], centre(mu_x), xp)]), x, xp,
                shape=(2, g.shape[1]))
        elif need_sum_g:
            sum_g = _sum_over_chunks(chunks, lambda sl, centre: channel_sum(g[sl]), g, xp)
        gx = None
        if need_gx:
            a = per_channel(gamma * s, g)
            gx = xp.empty(g.shape, g.dtype)
            if self.training:
                b = per_channel(-gamma * s * s * s * sum_gxc / m, g)
                c = per_channel(-gamma * s * sum_g / m, g)

                def input_grad(i, sl, centre):
                    gxc, xc = gx[sl], centre(mu_x)
                    xp.multiply(g[sl], a, out=gxc)
                    xc *= b
                    gxc += xc
                    gxc += c
                _over_chunks(chunks, input_grad, x, xp)
            else:
                xp.multiply(g, a, out=gx)
        ggamma = sum_gxc * s if need_gamma else None
        gbeta = sum_g if need_beta else None
        return gx, ggamma, gbeta

    def backward_graph(self, g):
        """The class docstring's gradients with Tensor operations; in training the batch
        statistics are recomputed from x as Tensors, so that their dependence on x is
        differentiated too (in evaluation they are constants)."""
        axes = (0,) + tuple(range(2, g.ndim))
        channel = (1, -1) + (1,) * (g.ndim - 2)
        x, gamma = self.input_tensor(0, self.x), self.input_tensor(1, self.gamma)
        if self.training:
            xc = x - x.mean(axis=axes, keepdims=True)
            s = ((xc * xc).mean(axis=axes, keepdims=True) + self.eps) ** -0.5
            xhat = xc * s
            gx = gamma.reshape(channel) * s * (g - g.mean(axis=axes, keepdims=True)
                                               - xhat * (g * xhat).mean(axis=axes, keepdims=True))
        else:
            s = self.inv_std.reshape(channel)
            xhat = (x - self.mu.reshape(channel)) * s
            gx = g * (gamma.reshape(channel) * s)
        need_gx, need_gamma, need_beta = self.needs_grad
        return (gx if need_gx else None,
                (g * xhat).sum(axis=axes) if need_gamma else None,
                g.sum(axis=axes) if need_beta else None)


# On the CPU the per-channel passes run over chunks of the batch of about this many bytes, so
# that a chunk and its centred copy stay in the core's cache between the ufuncs of one pass;
# the chunks are shared out to the kernel threads (``parallel.for_each_item``).
_CHUNK_BYTES = 2 << 20


def _batch_chunks(x, xp):
    """Ranges (n0, n1) of the batch axis; the whole batch at once on a GPU."""
    N = x.shape[0]
    if xp is not numpy:
        return [(0, N)] if N else []
    return parallel.batch_chunks(N, x[0].nbytes if N else 1, _CHUNK_BYTES)


def _over_chunks(chunks, body, x, xp):
    """Call ``body(i, sl, centre)`` for every chunk i, sl = slice(n0, n1) of the batch, the
    chunks spread over the kernel threads. ``centre(m)`` returns x[sl] - m (m per channel,
    shaped to broadcast: ``kernels.arrays.per_channel``) in a buffer of the calling thread's own, valid
    until its next call in that thread."""
    n = chunks[0][1] if chunks else 0

    @contextlib.contextmanager
    def thread_buffer():
        with workspace.Scratch() as scratch:
            yield scratch.empty((n * math.prod(x.shape[1:]),), x.dtype) if xp is numpy else None

    def run(i, flat):
        sl = slice(*chunks[i])
        k = sl.stop - sl.start

        def centre(m):
            out = flat[:k * x[0].size].reshape((k,) + x.shape[1:]) if flat is not None else None
            return xp.subtract(x[sl], m, out=out)
        body(i, sl, centre)
    parallel.for_each_item(len(chunks), run, x.nbytes, thread_buffer)


def _sum_over_chunks(chunks, term, x, xp, shape=None):
    """sum over the chunks of ``term(sl, centre)`` (per-channel values of ``shape``, (C,) by
    default; ``_over_chunks``), added in chunk order whichever thread computed each term, so the
    sum does not depend on the thread count. Zeros for an empty batch."""
    parts = [None] * len(chunks)

    def keep(i, sl, centre):
        parts[i] = term(sl, centre)
    _over_chunks(chunks, keep, x, xp)
    total = xp.zeros(shape or (x.shape[1],), x.dtype)
    for part in parts:
        total += part
    return total


def _batch_mean_var(chunks, x, xp):
    """Per-channel mean and biased variance of x in one pass over memory.

    Each chunk i (k_i values per channel) gets its own mean mu_i and sum of squared deviations
    M2_i = sum (x - mu_i)^2 while it is in cache; the chunks are then merged in chunk order
    (Chan, Golub and LeVeque's pairwise update, as stable as two passes over the data):

        mu = sum_i k_i mu_i / m,   var = (sum_i M2_i + sum_i k_i (mu_i - mu)^2) / m
    """
    per_image = x[0].size // x.shape[1] if x.shape[0] else 0
    shape = (1, -1) + (1,) * (x.ndim - 2)
    parts = [None] * len(chunks)

    def stats(i, sl, centre):
        k = (sl.stop - sl.start) * per_image
        mu_i = channel_sum(x[sl]) / k
        # a chunk holds only a few images, so spreading mu_i over an image would cost as much
        # as it saves: a broadcast
        xc = centre(mu_i.astype(x.dtype, copy=False).reshape(shape))
        parts[i] = (k, mu_i, _channel_dot(xc, xc, xp))
    _over_chunks(chunks, stats, x, xp)
    m = sum(k for k, _, _ in parts)
    mu = xp.zeros(x.shape[1], x.dtype)
    for k, mu_i, _ in parts:
        mu += mu_i * (k / m)
    m2 = xp.zeros(x.shape[1], x.dtype)
    for k, mu_i, m2_i in parts:
        m2 += m2_i
        m2 += k * (mu_i - mu) ** 2
    return mu, m2 / m


def _channel_dot(a, b, xp):
    """sum over all axes but 1 of a * b, per channel (one pass, no temporary)."""
    n, c = a.shape[:2]
    return xp.einsum("nci,nci->c", a.reshape(n, c, -1), b.reshape(n, c, -1))


class Dropout(Function):
    """y = x * mask / (1 - p) with mask ~ Bernoulli(1 - p), so E[y] = x;  dL/dx = g * mask / (1 - p)."""
    reads_inputs = False

    def __init__(self, p, rng):
        self.p, self.rng = p, rng

    def forward(self, x):
        keep = self.rng.random(x.shape) >= self.p
        self.scale = keep.astype(x.dtype) / (1 - self.p)
        return x * self.scale

    def backward(self, g):
        return (g * self.scale,)

    backward_graph = backward  # linear in x (the mask is fixed), and written with operators
