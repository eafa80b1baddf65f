"""Weight initialisers. Each fills a Parameter in place from the library generator.

fan_in = in_features (dense) or C * kh * kw (conv); fan_out likewise with the outputs.
* He (Kaiming) normal: N(0, 2 / fan_in), keeps the variance of ReLU activations constant.
* Glorot (Xavier) uniform: U(-a, a), a = sqrt(6 / (fan_in + fan_out)), for tanh/sigmoid.
* fan-in uniform: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases alike, the
  default of PyTorch's Linear and Conv2d and so of minidl's (its kaiming_uniform with
  a = sqrt(5) reduces to this bound). Its weights are sqrt(6) times smaller in standard
  deviation than He normal.

PyTorch's in-place names (``kaiming_uniform_``, ``xavier_normal_``, ``zeros_`` ...) are at
the end; they draw from the same generator, so ``kaiming_uniform_(w, a=math.sqrt(5))`` gives
exactly the weights of ``uniform_fan_in(w, fan_in)``.
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

    * ``"he"``: weights He normal, biases zero (the model zoo's choice);
    * ``"fan_in_uniform"``: weights and biases U(-1/sqrt(fan_in), 1/sqrt(fan_in)), as
      PyTorch initialises them (the layers' own default); reference implementations
      written in PyTorch, such as Wong et al.'s fast adversarial training, were tuned with it.

    Normalisation layers (1-D weights) are left alone. Returns the model.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"init_model: scheme must be one of {SCHEMES}, got {scheme!r}")
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if weight is None or len(weight.shape) < 2:
            continue
        init_layer(weight, getattr(module, "bias", None), scheme)
    return model


def init_layer(weight, bias, scheme):
    """Initialise one layer's ``weight`` (and ``bias``, may be None) by ``scheme`` (see
    :func:`init_model`); what Linear and Conv2d do when built."""
    if scheme not in SCHEMES:
        raise ValueError(f"init: scheme must be one of {SCHEMES}, got {scheme!r}")
    fan_in = fans(weight.shape)[0]
    if scheme == "he":
        he_normal(weight)
        if bias is not None:
            zeros(bias)
    else:
        uniform_fan_in(weight, fan_in)
        if bias is not None:
            uniform_fan_in(bias, fan_in)


# --- PyTorch's names: fill a tensor in place and return it ----------------------------------
def calculate_gain(nonlinearity, param=None):
    """The gain g that keeps activations' variance: linear/conv/sigmoid 1, tanh 5/3, relu
    sqrt(2), leaky_relu sqrt(2 / (1 + slope^2)) (slope ``param``, default 0.01), selu 3/4."""
    if nonlinearity in ("linear", "conv1d", "conv2d", "conv3d", "sigmoid"):
        return 1.0
    if nonlinearity == "tanh":
        return 5.0 / 3
    if nonlinearity == "relu":
        return math.sqrt(2.0)
    if nonlinearity == "leaky_relu":
        slope = 0.01 if param is None else param
        return math.sqrt(2.0 / (1 + slope ** 2))
    if nonlinearity == "selu":
        return 3.0 / 4
    raise ValueError(f"calculate_gain: unsupported nonlinearity {nonlinearity!r}")


def _fan(tensor, mode):
    if mode not in ("fan_in", "fan_out"):
        raise ValueError(f"init: mode must be 'fan_in' or 'fan_out', got {mode!r}")
    fan_in, fan_out = fans(tensor.shape)
    return fan_in if mode == "fan_in" else fan_out


def uniform_(tensor, a=0.0, b=1.0):
    """U(a, b)."""
    return _fill(tensor, lambda r, s: r.uniform(a, b, s))


def normal_(tensor, mean=0.0, std=1.0):
    """N(mean, std^2)."""
    return _fill(tensor, lambda r, s: r.standard_normal(s) * std + mean)


def constant_(tensor, val):
    tensor.array = backend.get_array_module(tensor.array).full_like(tensor.array, val)
    return tensor


def zeros_(tensor):
    return zeros(tensor)


def ones_(tensor):
    return ones(tensor)


def kaiming_uniform_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """U(-b, b), b = gain * sqrt(3 / fan), gain = calculate_gain(nonlinearity, a)."""
    bound = calculate_gain(nonlinearity, a) * math.sqrt(3.0 / _fan(tensor, mode))
    return _fill(tensor, lambda r, s: r.uniform(-bound, bound, s))


def kaiming_normal_(tensor, a=0, mode="fan_in", nonlinearity="leaky_relu"):
    """N(0, std^2), std = gain / sqrt(fan)."""
    std = calculate_gain(nonlinearity, a) / math.sqrt(_fan(tensor, mode))
    return _fill(tensor, lambda r, s: r.standard_normal(s) * std)


def xavier_uniform_(tensor, gain=1.0):
    """U(-b, b), b = gain * sqrt(6 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(tensor.shape)
    bound = gain * math.sqrt(6.0 / (fan_in + fan_out))
    return _fill(tensor, lambda r, s: r.uniform(-bound, bound, s))


def xavier_normal_(tensor, gain=1.0):
    """N(0, std^2), std = gain * sqrt(2 / (fan_in + fan_out))."""
    fan_in, fan_out = fans(tensor.shape)
    std = gain * math.sqrt(2.0 / (fan_in + fan_out))
    return _fill(tensor, lambda r, s: r.standard_normal(s) * std)
