"""Random Self-Ensemble (Liu, Cheng, Zhang and Hsieh, "Towards Robust Neural Networks via
Random Self-ensemble", ECCV 2018).

RSE puts a Gaussian noise layer in front of every convolution: ``init_sigma`` before the
first one (noise on the input image) and ``inner_sigma`` before the others. It trains with
the noise on, keeps it on at test time and predicts with the mean softmax of many noisy
passes (:class:`minidl.models.ensemble.Ensemble`).

Warning: randomness makes single-pass gradient attacks look weaker than they are (Athalye,
Carlini and Wagner 2018); evaluate with expectation over transformation
(``minidl.adversarial.rse_eval.evaluate_rse`` reports both numbers).

Default noise levels (inputs in [0, 1]):

* CIFAR-10 (``rse_cifar_cnn``): init 0.2, inner 0.1, the values of the authors' code.
* MNIST (``rse_madry_mnist``, ``rse_wong_mnist``): init 0.3, inner 0.1. MNIST digits are
  nearly binary, high-contrast strokes, so a classifier trained with noise keeps high clean
  accuracy under much larger input noise than on CIFAR-10 (the 0.2 of CIFAR-10 would be a
  weak randomisation for MNIST); 0.3 matches the usual L-inf budget eps = 0.3 on MNIST,
  i.e. the noise is of the size of the perturbations it is meant to drown. Inner layers get
  0.1 as in the paper: their inputs are post-ReLU activations of order one.
"""
import copy

from .. import nn
from ..nn.noise import GaussianNoise
from ..validation import check_number
from .cifar import cifar_cnn
from .mnist import madry_mnist, wong_mnist


def rse(model_or_builder, init_sigma, inner_sigma, **builder_kwargs):
    """A copy of a model (or the model a builder returns) with a GaussianNoise layer before
    every Conv2d: ``init_sigma`` before the first (in definition order, which is forward
    order for Sequential models and the zoo's ResNets) and ``inner_sigma`` before the others.

    Sequential containers are rebuilt with the noise layer inserted before each conv (so
    parameter names shift by the inserted positions); a conv held as an attribute of another
    module (e.g. ``PreActBlock.conv1``) is replaced by ``Sequential(GaussianNoise, conv)``.
    The original model is not modified. Raises ValueError when there is no Conv2d or when the
    model already has noise layers.
    """
    for name, s in (("init_sigma", init_sigma), ("inner_sigma", inner_sigma)):
        check_number(f"rse: {name}", s, minimum=0)
    if isinstance(model_or_builder, nn.Module):
        if builder_kwargs:
            raise TypeError("rse: keyword arguments are for a builder, not a built model")
        model = copy.deepcopy(model_or_builder)
    elif callable(model_or_builder):
        model = model_or_builder(**builder_kwargs)
        if not isinstance(model, nn.Module):
            raise TypeError(f"rse: the builder returned a {type(model).__name__}, not a Module")
    else:
        raise TypeError(f"rse: expected a Module or a model builder, got {type(model_or_builder).__name__}")
    if any(isinstance(m, GaussianNoise) for m in model.modules()):
        raise ValueError("rse: the model already has GaussianNoise layers")
    seen = [0]

    def noisy(conv):
        sigma = init_sigma if seen[0] == 0 else inner_sigma
        seen[0] += 1
        return [GaussianNoise(sigma), conv]

    def rebuild(module):
        if isinstance(module, nn.Conv2d):
            return nn.Sequential(*noisy(module))
        if isinstance(module, nn.Sequential):
            layers = []
            for child in module.children():
                layers += noisy(child) if isinstance(child, nn.Conv2d) else [rebuild(child)]
            return nn.Sequential(*layers)
        for name, child in list(module.named_children()):
            setattr(module, name, rebuild(child))
        return module

    was_training = model.training
    model = rebuild(model).train(was_training)
    if seen[0] == 0:
        raise ValueError(f"rse: {type(model).__name__} has no Conv2d layer to put noise in front of")
    return model


def _zoo_doc(fn, base):
    fn.__doc__ = (f"``{base.__name__}`` with Random Self-Ensemble noise before every conv "
                  f"(defaults init_sigma={fn.__defaults__[0]}, inner_sigma={fn.__defaults__[1]}; "
                  "see the module docstring for the choice).")
    return fn


def rse_madry_mnist(init_sigma=0.3, inner_sigma=0.1, **kwargs):
    return rse(madry_mnist, init_sigma, inner_sigma, **kwargs)


def rse_wong_mnist(init_sigma=0.3, inner_sigma=0.1, **kwargs):
    return rse(wong_mnist, init_sigma, inner_sigma, **kwargs)


def rse_cifar_cnn(init_sigma=0.2, inner_sigma=0.1, **kwargs):
    return rse(cifar_cnn, init_sigma, inner_sigma, **kwargs)


for _fn, _base in ((rse_madry_mnist, madry_mnist), (rse_wong_mnist, wong_mnist), (rse_cifar_cnn, cifar_cnn)):
    _zoo_doc(_fn, _base)
