"""Batch normalisation's per-channel passes on the CPU: the fast implementations of
``reference.batch_norm_stats``, ``channel_affine``, ``batch_norm_sums`` and
``batch_norm_input_grad``.

The same per-channel quantities, computed over chunks of the batch of about ``CHUNK_BYTES``
(``runtime.parallel.batch_chunks``) spread over the kernel threads, so that a chunk and its
centred copy x - mu, made into a small per-thread scratch buffer, stay in the core's cache
between the ufuncs of one pass; nothing of x's size is stored between passes. The chunks'
per-channel partial sums are added in chunk order, and the cut depends on the shapes only, so
results do not depend on the thread count. Per-channel operands are spread over one image
(``arrays.per_channel``), and dot products are one einsum each.
"""
import contextlib
import math

import numpy

from .arrays import channel_sum, per_channel
from .runtime import parallel, workspace

CHUNK_BYTES = 2 << 20


def _chunks(x):
    """Ranges (n0, n1) of the batch axis of about ``CHUNK_BYTES`` each."""
    N = x.shape[0]
    return parallel.batch_chunks(N, x[0].nbytes if N else 1, CHUNK_BYTES)


def _over_chunks(chunks, body, x):
    """Call ``body(i, sl, centre)`` for every chunk i, sl = slice(n0, n1) of the batch, the
    chunks spread over the kernel threads. ``centre(m)`` returns x[sl] - m (m per channel,
    shaped to broadcast) in a buffer of the calling thread's own, valid until its next call."""
    n = chunks[0][1] if chunks else 0

    @contextlib.contextmanager
    def thread_buffer():
        with workspace.Scratch() as scratch:
            yield scratch.empty((n * math.prod(x.shape[1:]),), x.dtype)

    def run(i, flat):
        sl = slice(*chunks[i])
        k = sl.stop - sl.start

        def centre(m):
            return numpy.subtract(x[sl], m, out=flat[:k * x[0].size].reshape((k,) + x.shape[1:]))
        body(i, sl, centre)
    parallel.for_each_item(len(chunks), run, x.nbytes, thread_buffer)


def _sum_over_chunks(chunks, term, x, shape):
    """The sum over the chunks of ``term(sl, centre)`` (``_over_chunks``), in chunk order."""
    parts = [None] * len(chunks)

    def keep(i, sl, centre):
        parts[i] = term(sl, centre)
    _over_chunks(chunks, keep, x)
    total = numpy.zeros(shape, x.dtype)
    for part in parts:
        total += part
    return total


def _channel_dot(a, b):
    """sum over all axes but 1 of a * b, per channel (one pass, no temporary)."""
    n, c = a.shape[:2]
    return numpy.einsum("nci,nci->c", a.reshape(n, c, -1), b.reshape(n, c, -1))


def batch_norm_stats(x):
    """Per-channel mean and biased variance in one pass over memory.

    Each chunk i (k_i values per channel) gets its own mean mu_i and sum of squared deviations
    M2_i = sum (x - mu_i)^2 while it is in cache; the chunks are then merged in chunk order
    (Chan, Golub and LeVeque's pairwise update, as stable as two passes over the data):

        mu = sum_i k_i mu_i / m,   var = (sum_i M2_i + sum_i k_i (mu_i - mu)^2) / m
    """
    chunks = _chunks(x)
    per_image = x[0].size // x.shape[1] if x.shape[0] else 0
    shape = (1, -1) + (1,) * (x.ndim - 2)
    parts = [None] * len(chunks)

    def stats(i, sl, centre):
        k = (sl.stop - sl.start) * per_image
        mu_i = channel_sum(x[sl]) / k
        # a chunk holds only a few images, so spreading mu_i over an image would cost as much
        # as it saves: a broadcast
        xc = centre(mu_i.astype(x.dtype, copy=False).reshape(shape))
        parts[i] = (k, mu_i, _channel_dot(xc, xc))
    _over_chunks(chunks, stats, x)
    m = sum(k for k, _, _ in parts)
    mu = numpy.zeros(x.shape[1], x.dtype)
    for k, mu_i, _ in parts:
        mu += mu_i * (k / m)
    m2 = numpy.zeros(x.shape[1], x.dtype)
    for k, mu_i, m2_i in parts:
        m2 += m2_i
        m2 += k * (mu_i - mu) ** 2
    return mu, m2 / m


def channel_affine(x, scale, shift=None):
    """y = x * scale + shift per channel, chunk by chunk over the kernel threads."""
    chunks = _chunks(x)
    scale = per_channel(scale, x)
    shift = None if shift is None else per_channel(shift, x)
    y = numpy.empty(x.shape, x.dtype)

    def affine(i, _):
        yc = y[slice(*chunks[i])]
        numpy.multiply(x[slice(*chunks[i])], scale, out=yc)
        if shift is not None:
            yc += shift
    parallel.for_each_item(len(chunks), affine, x.nbytes)
    return y


def batch_norm_sums(g, x, mu):
    """sum(g) and sum(g * (x - mu)) per channel, both in one pass over g and x."""
    mu_x = per_channel(mu, x)
    sums = _sum_over_chunks(
        _chunks(g), lambda sl, centre: numpy.stack([channel_sum(g[sl]), _channel_dot(g[sl], centre(mu_x))]),
        x, (2, g.shape[1]))
    return sums[0], sums[1]


def batch_norm_input_grad(g, x, mu, a, b, c):
    """dL/dx = a * g + b * (x - mu) + c per channel, x - mu recomputed chunk by chunk in cache."""
    mu_x, a, b, c = (per_channel(v, g) for v in (mu, a, b, c))
    gx = numpy.empty(g.shape, g.dtype)

    def input_grad(i, sl, centre):
        gxc, xc = gx[sl], centre(mu_x)
        numpy.multiply(g[sl], a, out=gxc)
        xc *= b
        gxc += xc
        gxc += c
    _over_chunks(_chunks(g), input_grad, x)
    return gx
