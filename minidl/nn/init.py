"""Weight initialisers. Each fills a Parameter in place from the library generator.

fan_in = in_features (dense) or C * kh * kw (conv); fan_out likewise with the outputs.
* He (Kaiming) normal: N(0, 2 / fan_in), keeps the variance of ReLU activations constant.
* Glorot (Xavier) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), for tanh/sigmoid.
* fan-in uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases alike, the
  default of PyTorch's Linear and Conv2d (its kaiming_uniform with a = sqrt(5) reduces to
  this bound). Its weights are sqrt(6) times smaller in standard deviation than He normal.
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
    xp = backend.get_array_module(param.array)
    param.array = sample(backend.rng(xp), param.shape).astype(param.dtype)
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
    param.array = backend.get_array_module(param.array).zeros_like(param.array)
    return param


def ones(param):
    param.array = backend.get_array_module(param.array).ones_like(param.array)
    return param


SCHEMES = ("he", "fan_in_uniform")


def init_model(model, scheme):
    """Re-initialise every weighted layer of ``model`` (anything with a ``weight`` of at
    least 2 dimensions and an optional ``bias``) by ``scheme``:

    * ``"he"``: weights He normal, biases zero (the layers' own default);
    * ``"fan_in_uniform"``: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as
      PyTorch initialises them; reference implementations written in PyTorch, such as
      Wong et al.'s fast adversarial training, were tuned with it.

    Normalisation layers (1-D weights) are left alone. Returns the model.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"init_model: scheme must be one of {SCHEMES}, got {scheme!r}")
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or len(weight.shape) < 2:
            continue
        bias = getattr(module, "bias", None)
        fan_in = fans(weight.shape)[0]
        if scheme == "he":
            he_normal(weight)
            if bias is not None:
                zeros(bias)
        else:
            uniform_fan_in(weight, fan_in)
            if bias is not None:
                uniform_fan_in(bias, fan_in)
    return model
