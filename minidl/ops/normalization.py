"""Batch normalisation and dropout."""
from .. import kernels
from ..autograd import Function
from ..backend import get_array_module
from ..kernels.arrays import channel_sum


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

    and the output is y = x * (gamma s) + (beta - mu gamma s). Nothing of x's size is kept for
    backward but x itself (held by autograd as the input).
    """

    def __init__(self, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        self.running_mean, self.running_var = running_mean, running_var
        self.training, self.momentum, self.eps = training, momentum, eps

    def forward(self, x, gamma, beta):
        xp = get_array_module(x)
        m = x.size // x.shape[1]
        if self.training:
            mu, var = kernels.batch_norm_stats(x)
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
        return kernels.channel_affine(x, scale, beta - self.mu * scale)

    def backward(self, g):
        m = g.size // g.shape[1]
        s, gamma, x, mu = self.inv_std, self.gamma, self.x, self.mu
        need_gx, need_gamma, need_beta = self.needs_grad
        sum_g = sum_gxc = None
        if need_gamma or (need_gx and self.training):
            sum_g, sum_gxc = kernels.batch_norm_sums(g, x, mu)     # sum(g), sum(g * xc)
        elif need_beta:
            sum_g = channel_sum(g)
        gx = None
        if need_gx:
            a = (gamma * s).astype(g.dtype, copy=False)
            if self.training:
                b = -a * s * s * sum_gxc / m
                c = -a * sum_g / m
                gx = kernels.batch_norm_input_grad(g, x, mu, a, b, c)   # a g + b xc + c
            else:
                gx = kernels.channel_affine(g, a)                         # a g
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
