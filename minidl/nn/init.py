"""Weight initialisers. Each fills a Parameter in place from the library generator.

fan_in = in_features (dense) or C * kh * kw (conv); fan_out likewise with the outputs.
* He (Kaiming) normal: N(0, 2 / fan_in), keeps the variance of ReLU activations constant.
* Glorot (Xavier) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), for tanh/sigmoid.
"""
import math

from .. import backend


def fans(shape):
    """(fan_in, fan_out) of a dense (out, in) or conv (out, in, kh, kw) weight."""
    if len(shape) < 2:
        raise ValueError(f"init: fan-in/fan-out need a weight with at least 2 dimensions, got shape {shape}")
    receptive = 1
    for n in shape[2:]:
        receptive *= n
    return shape[1] * receptive, shape[0] * receptive


def _fill(param, sample):
    xp = backend.get_array_module(param.data)
    param.data = sample(backend.rng(xp), param.shape).astype(param.dtype)
    return param


def he_normal(param):
    std = math.sqrt(2.0 / fans(param.shape)[0])
    return _fill(param, lambda r, s: r.standard_normal(s) * std)


def he_uniform(param):
    bound = math.sqrt(6.0 / fans(param.shape)[0])
    return _fill(param, lambda r, s: r.uniform(-bound, bound, s))


def glorot_uniform(param):
    fan_in, fan_out = fans(param.shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(param, lambda r, s: r.uniform(-bound, bound, s))


def glorot_normal(param):
    fan_in, fan_out = fans(param.shape)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(param, lambda r, s: r.standard_normal(s) * std)


def uniform_fan_in(param, fan_in):
    """U(-1/sqrt(fan_in), 1/sqrt(fan_in)), the usual default for biases."""
    bound = 1.0 / math.sqrt(fan_in)
    return _fill(param, lambda r, s: r.uniform(-bound, bound, s))


def zeros(param):
    param.data = backend.get_array_module(param.data).zeros_like(param.data)
    return param


def ones(param):
    param.data = backend.get_array_module(param.data).ones_like(param.data)
    return param
