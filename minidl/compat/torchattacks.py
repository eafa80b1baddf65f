"""torchattacks' (3.5.1) interface over :mod:`minidl.adversarial`:

    atk = torchattacks.PGD(model, eps=8/255, alpha=2/255, steps=10, random_start=True)
    adv_images = atk(images, labels)

Inputs are (N, C, H, W) images in [0, 1] and integer labels (Tensors or arrays); the result is
a detached Tensor of adversarial images on the model's device. The attacks, with g = grad_x of
the cross-entropy of model(x):

* ``FGSM(model, eps=8/255)``: x' = clip01(x + eps * sign(g)) (:func:`~minidl.adversarial.fgsm`);
* ``PGD(model, eps=8/255, alpha=2/255, steps=10, random_start=True)``: ``steps`` steps
  x <- clip01(clip_{[x0-eps, x0+eps]}(x + alpha * sign(g))) from x0, or from a uniform random
  point of the eps-ball (:func:`~minidl.adversarial.pgd`, one restart, the last iterate).

PGD returns its last iterate, as torchattacks does (minidl's ``pgd`` by default keeps each
example's worst iterate; the adapter asks it for ``result="last"``).

Supported settings: ``set_normalization_used(mean, std)`` (as in torchattacks 3.5: the images
given and returned are normalised, (x - mean) / std per channel; the attack un-normalises
them, perturbs x in [0, 1] with the model fed (x - mean) / std, and normalises the result),
``set_mode_targeted_by_label()`` (``atk(images, target_labels)`` descends the cross-entropy of
the targets) and ``set_mode_default()``. Other targeted modes, training-mode attacks and the
other attacks of torchattacks raise errors.
"""
import numpy

from .. import backend
from ..adversarial import fgsm, pgd
from ..nn import Module
from ..tensor import Tensor
from ..validation import check_number

__all__ = ["Attack", "FGSM", "PGD"]


class _Normalized(Module):
    """model((x - mean) / std), mean and std per channel (axis 1)."""

    def __init__(self, model, mean, std):
        super().__init__()
        self.model = model
        self.mean, self.std = mean, std

    def forward(self, x):
        xp = backend.get_array_module(x.array)
        shape = (1, -1) + (1,) * (x.array.ndim - 2)
        mean = Tensor(xp.asarray(self.mean, dtype=x.dtype).reshape(shape))
        std = Tensor(xp.asarray(self.std, dtype=x.dtype).reshape(shape))
        return self.model((x - mean) / std)


class Attack:
    """What every attack shares: the model, the normalisation it expects, the mode."""

    def __init__(self, name, model):
        if not callable(model):
            raise TypeError(f"{name}: model must be a callable minidl Module, got {type(model).__name__}")
        self.attack, self.model = name, model
        self.targeted = False
        self._normalization = None

    def set_normalization_used(self, mean, std):
        """From now on the images given to and returned by the attack are normalised,
        (x - mean) / std with one value of mean and std per channel (torchattacks 3.5)."""
        values = []
        for arg, v in (("mean", mean), ("std", std)):
            a = numpy.asarray(backend.to_numpy(v.array) if isinstance(v, Tensor) else v, dtype=numpy.float64).ravel()
            if a.size == 0 or not numpy.isfinite(a).all():
                raise ValueError(f"{self.attack}.set_normalization_used: {arg} must be finite numbers, got {v!r}")
            values.append(a)
        if values[0].size != values[1].size:
            raise ValueError(f"{self.attack}.set_normalization_used: mean and std must have one value per channel "
                             f"each, got {values[0].size} and {values[1].size}")
        if (values[1] <= 0).any():
            raise ValueError(f"{self.attack}.set_normalization_used: std must be > 0, got {std!r}")
        self._normalization = tuple(values)

    def set_mode_default(self):
        self.targeted = False

    def set_mode_targeted_by_label(self, quiet=False):
        """``atk(images, labels)`` takes the target classes as ``labels``."""
        self.targeted = True

    def _unsupported(self, *args, **kwargs):
        raise ValueError(f"{self.attack}: only set_mode_default() and set_mode_targeted_by_label() are supported; "
                         "give the target classes as the labels")

    set_mode_targeted_random = set_mode_targeted_least_likely = set_mode_targeted_by_function = _unsupported

    def set_model_training_mode(self, model_training=False, batchnorm_training=False, dropout_training=False):
        if model_training or batchnorm_training or dropout_training:
            raise ValueError(f"{self.attack}.set_model_training_mode: minidl attacks the model in eval mode only, "
                             f"got model_training={model_training!r}, batchnorm_training={batchnorm_training!r}, "
                             f"dropout_training={dropout_training!r}")

    def __call__(self, images, labels):
        if self._normalization is None:
            return self.forward(self.model, images, labels)
        mean, std = self._normalization
        x = images.array if isinstance(images, Tensor) else numpy.asarray(images, dtype=numpy.float32)
        xp = backend.get_array_module(x)
        shape = (1, -1) + (1,) * (x.ndim - 2)
        mean, std = (xp.asarray(v, dtype=x.dtype).reshape(shape) for v in (mean, std))
        raw = x * std + mean
        lo, hi = float(raw.min()), float(raw.max())
        if lo < -1e-5 or hi > 1 + 1e-5:  # more than rounding: the images were not normalised
            raise ValueError(f"{self.attack}: after set_normalization_used, images must be normalised, "
                             f"(x - mean) / std of x in [0, 1]; they un-normalise to [{lo:.4g}, {hi:.4g}]")
        adv = self.forward(_Normalized(self.model, *self._normalization), Tensor(xp.clip(raw, 0, 1)), labels).array
        # on the model's device, which may not be the one the images came from
        mean, std = (backend.to_device(v, backend.device_of(adv)) for v in (mean, std))
        return Tensor((adv - mean) / std)

    def __repr__(self):
        return f"{self.attack}(model={type(self.model).__name__}, targeted={self.targeted})"


class FGSM(Attack):
    """FGSM (Goodfellow et al. 2015) in L-inf, torchattacks' arguments and default eps."""

    def __init__(self, model, eps=8 / 255):
        super().__init__("FGSM", model)
        check_number("FGSM: eps", eps, minimum=0)
        self.eps = eps

    def forward(self, model, images, labels):
        return fgsm(model, images, labels, self.eps, norm="inf", targeted=self.targeted)


class PGD(Attack):
    """PGD (Madry et al. 2018) in L-inf, torchattacks' arguments and defaults."""

    def __init__(self, model, eps=8 / 255, alpha=2 / 255, steps=10, random_start=True):
        super().__init__("PGD", model)
        check_number("PGD: eps", eps, minimum=0)
        check_number("PGD: alpha", alpha, minimum=0, strict=True)
        check_number("PGD: steps", steps, minimum=1, integer=True)
        if not isinstance(random_start, bool):
            raise TypeError(f"PGD: random_start must be True or False, got {random_start!r}")
        self.eps, self.alpha, self.steps, self.random_start = eps, alpha, steps, random_start

    def forward(self, model, images, labels):
        return pgd(model, images, labels, self.eps, self.alpha, self.steps, norm="inf",
                   random_start=self.random_start, targeted=self.targeted, result="last")


def __getattr__(name):
    if name[:1].isupper():
        raise AttributeError(f"minidl.compat.torchattacks has {', '.join(a for a in __all__ if a != 'Attack')} "
                             f"only; {name} is not ported (minidl.adversarial lists minidl's own attacks)")
    raise AttributeError(f"module 'minidl.compat.torchattacks' has no attribute {name!r}")
