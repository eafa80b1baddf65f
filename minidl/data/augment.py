"""Batch augmentations, written for whole (N, C, H, W) batches with no loop over images.

Each has the DataLoader ``transform`` signature ``f(images, rng) -> images``, where ``rng``
is a ``numpy.random.Generator``; they also accept CuPy arrays (random draws stay on the
host, only the small index arrays are moved).
"""
import numpy as np

from .. import backend


def random_crop_flip(images, rng=None, padding=4, flip=True):
    """Random ``padding``-pixel shift with zero fill, then a horizontal flip with probability 1/2.

    Equivalent, per image, to zero-padding by ``padding`` on every side, cutting out an
    H x W window at a random offset ``(dy, dx)`` in ``[0, 2 * padding]`` and, with
    probability 1/2, mirroring it left-right. Offset ``(padding, padding)`` without flip
    returns the image unchanged.

    images: (N, C, H, W) array; returns a new array of the same shape and dtype.
    rng: ``numpy.random.Generator`` (default: ``minidl.backend.rng()``).
    """
    if images.ndim != 4:
        raise ValueError(f"random_crop_flip expects (N, C, H, W) images, got shape {images.shape}")
    if int(padding) != padding or padding < 0:
        raise ValueError(f"padding must be a non-negative integer, got {padding!r}")
    padding = int(padding)
    rng = backend.rng() if rng is None else rng
    xp = backend.get_array_module(images)
    n, c, h, w = images.shape
    dy = rng.integers(0, 2 * padding + 1, size=n)
    dx = rng.integers(0, 2 * padding + 1, size=n)
    mirror = rng.random(n) < 0.5 if flip else np.zeros(n, bool)
    rows = dy[:, None] + np.arange(h)                        # (N, H) rows of the padded image
    cols = dx[:, None] + np.arange(w)                        # (N, W) columns ...
    cols = np.where(mirror[:, None], cols[:, ::-1], cols)    # ... read backwards = flipped
    padded = xp.pad(images, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    # One gather: the four index arrays broadcast to (N, C, H, W).
    return padded[xp.arange(n)[:, None, None, None],
                  xp.arange(c)[None, :, None, None],
                  xp.asarray(rows)[:, None, :, None],
                  xp.asarray(cols)[:, None, None, :]]


def normalize(images, mean, std):
    """Per-channel standardisation ``(images - mean[c]) / std[c]`` of (N, C, H, W) images.

    ``mean`` and ``std`` are length-C sequences (e.g. the training set's channel
    statistics); the result is float32.
    """
    xp = backend.get_array_module(images)
    mean = xp.asarray(mean, dtype=xp.float32).reshape(1, -1, 1, 1)
    std = xp.asarray(std, dtype=xp.float32).reshape(1, -1, 1, 1)
    if mean.shape[1] != images.shape[1] or std.shape[1] != images.shape[1]:
        raise ValueError(f"mean and std need {images.shape[1]} values (one per channel), "
                         f"got {mean.shape[1]} and {std.shape[1]}")
    if bool((std <= 0).any()):
        raise ValueError("std must be positive")
    return (images.astype(xp.float32, copy=False) - mean) / std
