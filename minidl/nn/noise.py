"""Additive Gaussian noise, the layer of Random Self-Ensemble (Liu et al., ECCV 2018).

``GaussianNoise(sigma)`` returns ``x + sigma * z`` with ``z ~ N(0, I)`` drawn afresh on every
call, in training AND in evaluation mode (RSE keeps its noise at test time and predicts by
averaging many noisy passes). The noise is a constant of the graph, so the gradient with
respect to ``x`` is the identity. ``layer.enabled = False`` (or :func:`set_noise` on a whole
model) turns it into the identity.

Random numbers come from ``minidl.backend.rng(xp)`` (NumPy on the CPU, CuPy on the GPU),
seeded by ``minidl.manual_seed``.

Replica streams. An ensemble evaluates ``n`` noisy passes at once by replicating its batch
``n`` times along the batch axis. Drawn from one generator, the noise of that single pass
would come in a different order from ``n`` separate passes (layer-major instead of
pass-major), so the two could not be compared exactly. Inside :func:`replica_streams`
(a list of generators, one per replica) every noise layer splits its input's batch axis
into ``len(streams)`` equal blocks and draws the noise of block ``i`` from generator ``i``.
Then replica ``i`` of a batched pass sees exactly the noise of a separate pass run under
``replica_streams([generator_i])``, whatever the number of noise layers and however the
replicas are chunked; :func:`replica_generators` makes the generators from seeds.
"""
import contextlib

import numpy

from .. import backend
from ..tensor import Tensor
from ..validation import check_number
from .module import Module

_streams = None  # list of generators while a replica_streams block is active


def replica_seeds(n):
    """``n`` seeds for replica generators, drawn from minidl's CPU generator (so they follow
    ``manual_seed`` on either device)."""
    return [int(s) for s in backend.rng(numpy).integers(0, 2 ** 63 - 1, size=n, dtype=numpy.int64)]


def replica_generators(seeds, xp=numpy):
    """One generator of the array module ``xp`` per seed (``backend.seeded_generator``)."""
    return [backend.seeded_generator(s, xp) for s in seeds]


@contextlib.contextmanager
def replica_streams(generators):
    """Within this block, noise layers draw the noise of the ``i``-th of ``len(generators)``
    equal blocks of their batch from ``generators[i]`` (see the module docstring)."""
    global _streams
    previous = _streams
    _streams = list(generators)
    try:
        yield
    finally:
        _streams = previous


def _standard_normal(gen, shape, dtype):
    if numpy.dtype(dtype) in (numpy.float32, numpy.float64):
        try:
            return gen.standard_normal(shape, dtype=dtype)
        except TypeError:  # a generator without the dtype argument
            pass
    return gen.standard_normal(shape).astype(dtype, copy=False)


def gaussian_noise_array(shape, dtype, xp=numpy):
    """Standard normal noise of ``shape``: from the replica streams when active, else from
    the library generator."""
    if _streams is None:
        return _standard_normal(backend.rng(xp), shape, dtype)
    k = len(_streams)
    if shape[0] % k:
        raise ValueError(f"GaussianNoise: a batch of {shape[0]} cannot be split into {k} replicas")
    block = (shape[0] // k,) + tuple(shape[1:])
    parts = [_standard_normal(g, block, dtype) for g in _streams]
    return parts[0] if k == 1 else xp.concatenate(parts, axis=0)


class GaussianNoise(Module):
    """y = x + sigma * z, z ~ N(0, I) drawn on every call (also in eval mode) unless
    ``enabled`` is False or sigma == 0. dy/dx = I."""

    def __init__(self, sigma, enabled=True):
        super().__init__()
        self.sigma = float(check_number("GaussianNoise: sigma", sigma, minimum=0))
        self.enabled = bool(enabled)

    def forward(self, x):
        if not isinstance(x, Tensor):
            raise TypeError(f"GaussianNoise: expected a minidl Tensor, got {type(x).__name__}")
        if not self.enabled or self.sigma == 0:
            return x
        if x.dtype.kind != "f":
            raise TypeError(f"GaussianNoise: input must be floating point, got dtype {x.dtype}")
        xp = backend.get_array_module(x.array)
        noise = gaussian_noise_array(x.shape, x.dtype, xp)
        noise *= x.dtype.type(self.sigma)
        return x + Tensor(noise)

    def extra_repr(self):
        return f"sigma={self.sigma:g}" + ("" if self.enabled else ", enabled=False")


def noise_layers(model):
    """The GaussianNoise layers of ``model`` in definition order."""
    return [m for m in model.modules() if isinstance(m, GaussianNoise)]


def set_noise(model, enabled):
    """Turn every GaussianNoise layer of ``model`` on or off; returns how many there are."""
    layers = noise_layers(model)
    for m in layers:
        m.enabled = bool(enabled)
    return len(layers)


@contextlib.contextmanager
def noise_disabled(model):
    """Temporarily switch the noise of ``model`` off (restoring each layer's previous state)."""
    layers = noise_layers(model)
    states = [m.enabled for m in layers]
    for m in layers:
        m.enabled = False
    try:
        yield model
    finally:
        for m, s in zip(layers, states):
            m.enabled = s
