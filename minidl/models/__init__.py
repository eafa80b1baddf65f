"""Model zoo: ``get_model(name, **kwargs)`` or the builders directly."""
from .mnist import mlp, lenet, madry_mnist, wong_mnist
from .cifar import cifar_cnn, preact_resnet18, PreActBlock
from .rse import rse, rse_madry_mnist, rse_wong_mnist, rse_cifar_cnn
from .ensemble import Ensemble

MODELS = {
    "mlp": mlp,
    "lenet": lenet,
    "madry_mnist": madry_mnist,
    "wong_mnist": wong_mnist,
    "cifar_cnn": cifar_cnn,
    "preact_resnet18": preact_resnet18,
    "rse_madry_mnist": rse_madry_mnist,
    "rse_wong_mnist": rse_wong_mnist,
    "rse_cifar_cnn": rse_cifar_cnn,
}


def get_model(name, **kwargs):
    """Build the model called ``name`` (see ``MODELS``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


__all__ = ["MODELS", "get_model", "mlp", "lenet", "madry_mnist", "wong_mnist", "cifar_cnn",
           "preact_resnet18", "PreActBlock", "rse", "rse_madry_mnist", "rse_wong_mnist", "rse_cifar_cnn",
           "Ensemble"]
