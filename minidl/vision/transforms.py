"""torchvision's common transforms on NumPy images and minidl Tensors, built on
:mod:`minidl.data.augment`.

An image is a uint8 NumPy array (H, W) or (H, W, C) before :class:`ToTensor` and a float32
Tensor (C, H, W) after it; the random transforms take either. Each random transform draws
from the library generator (``md.manual_seed`` makes it reproducible).

Each transform also has ``batch(images)`` for an (N, C, H, W) float32 array, which the
vision datasets use to transform a whole batch at once when every step of a
:class:`Compose` after ``ToTensor`` has one (the per-image and batch forms draw their random
numbers differently, so they agree in distribution, not image by image).
"""
import numbers

import numpy as np

from .. import backend
from ..data.augment import normalize, random_crop_flip
from ..tensor import Tensor


def _as_batch(img):
    """(1, C, H, W) float or uint8 array for an image, and a function that undoes it."""
    if isinstance(img, Tensor):
        if img.ndim != 3:
            raise ValueError(f"expected a (C, H, W) image tensor, got shape {img.shape}")
        return img.array[None], lambda b: Tensor(b[0])
    a = np.asarray(img)
    if a.ndim == 2:
        return a[None, None], lambda b: b[0, 0]
    if a.ndim == 3:
        return a.transpose(2, 0, 1)[None], lambda b: b[0].transpose(1, 2, 0)
    raise ValueError(f"expected an (H, W) or (H, W, C) image array, got shape {a.shape}")


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms):
        self.transforms = list(transforms)
        for t in self.transforms:
            if not callable(t):
                raise TypeError(f"Compose: {t!r} is not callable")

    def __call__(self, img):
        for t in self.transforms:
            img = t(img)
        return img

    def batch_steps(self):
        """The steps after a leading ToTensor, when each has a batch form; else None."""
        if not self.transforms or not isinstance(self.transforms[0], ToTensor):
            return None
        rest = self.transforms[1:]
        return rest if all(hasattr(t, "batch") for t in rest) else None

    def __repr__(self):
        return "Compose(" + ", ".join(repr(t) for t in self.transforms) + ")"


class ToTensor:
    """uint8 (H, W[, C]) in 0..255 -> float32 Tensor (C, H, W) in [0, 1]; a float array is
    only transposed (as torchvision, which scales only uint8)."""

    def __call__(self, img):
        if isinstance(img, Tensor):
            return img
        a = np.asarray(img)
        if a.ndim == 2:
            a = a[:, :, None]
        if a.ndim != 3:
            raise ValueError(f"ToTensor: expected an (H, W) or (H, W, C) image, got shape {a.shape}")
        a = a.transpose(2, 0, 1)
        out = np.divide(a, np.float32(255.0), dtype=np.float32) if a.dtype == np.uint8 else a.astype(np.float32)
        return Tensor(np.ascontiguousarray(out))

    def __repr__(self):
        return "ToTensor()"


class Normalize:
    """(x - mean[c]) / std[c] per channel of a (C, H, W) Tensor (``minidl.data.normalize``)."""

    def __init__(self, mean, std, inplace=False):
        self.mean, self.std = tuple(mean), tuple(std)

    def __call__(self, img):
        if not isinstance(img, Tensor):
            raise TypeError(f"Normalize: expected a Tensor (use ToTensor first), got {type(img).__name__}")
        return Tensor(self.batch(img.array[None])[0])

    def batch(self, images):
        return normalize(images, self.mean, self.std)

    def __repr__(self):
        return f"Normalize(mean={self.mean}, std={self.std})"


class RandomCrop:
    """A random ``size`` window of the image zero-padded by ``padding`` on every side. Only
    ``size`` equal to the image's own size is supported (the CIFAR recipe: a random shift by
    up to ``padding`` pixels, ``minidl.data.random_crop_flip`` without the flip)."""

    def __init__(self, size, padding=0, pad_if_needed=False, fill=0, padding_mode="constant"):
        self.size = (size, size) if isinstance(size, numbers.Integral) else tuple(size)
        if not isinstance(padding, numbers.Integral) or padding < 0:
            raise ValueError(f"RandomCrop: padding must be an int >= 0, got {padding!r}")
        if fill != 0 or padding_mode != "constant":
            raise ValueError("RandomCrop: only zero padding (fill=0, padding_mode='constant') is supported")
        self.padding = int(padding)

    def __call__(self, img):
        batch, back = _as_batch(img)
        return back(self.batch(batch))

    def batch(self, images):
        if tuple(images.shape[2:]) != self.size:
            raise ValueError(f"RandomCrop: only crops of the image's own size are supported, "
                             f"got size {self.size} for images of {tuple(images.shape[2:])}")
        return random_crop_flip(images, backend.rng(), padding=self.padding, flip=False)

    def __repr__(self):
        return f"RandomCrop(size={self.size}, padding={self.padding})"


class RandomHorizontalFlip:
    """Mirror the image left-right with probability p."""

    def __init__(self, p=0.5):
        if not 0 <= p <= 1:
            raise ValueError(f"RandomHorizontalFlip: p must be in [0, 1], got {p}")
        self.p = p

    def __call__(self, img):
        batch, back = _as_batch(img)
        return back(self.batch(batch))

    def batch(self, images):
        mirror = backend.rng().random(len(images)) < self.p
        xp = backend.get_array_module(images)
        return xp.where(xp.asarray(mirror)[:, None, None, None], images[..., ::-1], images)

    def __repr__(self):
        return f"RandomHorizontalFlip(p={self.p})"
