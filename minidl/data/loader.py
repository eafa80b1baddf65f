"""Mini-batches of a dataset as Tensors, in a reproducible (and resumable) order."""
import numbers

import numpy as np

from .. import backend
from ..tensor import Tensor


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _as_arrays(data):
    """``(images, labels, dataset)`` for the accepted kinds of ``data``.

    * an object with ``.images`` and ``.labels`` arrays (MNIST, CIFAR10, ArrayDataset):
      batches are cut from those arrays directly;
    * an ``(images, labels)`` tuple or list of arrays;
    * any other object with ``__len__`` and ``__getitem__`` returning ``(image, label)``:
      ``images`` and ``labels`` are None and each batch is stacked from its items.
    """
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)):
        if len(data) != 2:
            raise ValueError(f"expected an (images, labels) pair, got a sequence of {len(data)} items")
        images, labels = data
    elif hasattr(data, "__len__") and hasattr(data, "__getitem__"):
        return None, None, data
    else:
        raise TypeError(f"DataLoader needs a dataset or an (images, labels) pair, got {type(data).__name__}")
    if not backend.is_array(images):
        images = np.asarray(images)
    if not backend.is_array(labels):
        labels = np.asarray(labels)
    if images.ndim < 1 or labels.ndim < 1:
        raise ValueError("images and labels must have a leading example axis")
    if len(images) != len(labels):
        raise ValueError(f"images and labels differ in length: {len(images)} vs {len(labels)}")
    return images, labels, data


class DataLoader:
    """Iterate over ``data`` in batches of ``(Tensor images, Tensor labels)`` on ``device``.

    data: a dataset (``.images``/``.labels`` arrays, e.g. :class:`~minidl.data.MNIST`),
        an ``(images, labels)`` pair of arrays, or any ``len()``/``[i] -> (x, y)`` object.
    batch_size: examples per batch (>= 1); the last batch is smaller unless ``drop_last``.
    shuffle: visit the examples in a new random order each epoch.
    seed: seeds the loader's own ``numpy.random.Generator``; None seeds it from
        ``minidl.backend.rng()`` (so ``minidl.manual_seed`` makes it reproducible too).
    device: ``"cpu"`` or ``"cuda"``: where the yielded Tensors live.
    transform: ``f(images, rng) -> images``, applied to each host (NumPy) image batch
        before it is moved to ``device``, e.g. :func:`~minidl.data.random_crop_flip`.

    Each ``iter(loader)`` (one epoch) draws, at once, the epoch's permutation and a seed
    for that epoch's augmentation from the loader's generator. So the sequence of epochs
    depends only on ``seed``, and :meth:`state_dict` / :meth:`load_state_dict` (the
    generator state) resume it exactly at an epoch boundary; a state saved mid-epoch
    resumes at the start of the next epoch.
    """

    def __init__(self, data, batch_size, shuffle=False, drop_last=False, seed=None, device="cpu",
                 transform=None):
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if seed is not None and (not _is_int(seed) or seed < 0):
            raise ValueError(f"seed must be None or a non-negative integer, got {seed!r}")
        if transform is not None and not callable(transform):
            raise TypeError(f"transform must be callable (images, rng) -> images, got {type(transform).__name__}")
        self.images, self.labels, self.dataset = _as_arrays(data)
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.device = backend.normalize_device(device)
        self.transform = transform
        self.seed = seed
        if seed is None:
            seed = int(backend.rng().integers(2**63))
        self._rng = np.random.default_rng(int(seed))

    @property
    def num_examples(self):
        return len(self.dataset) if self.images is None else len(self.images)

    def __len__(self):
        """Number of batches per epoch."""
        n, b = self.num_examples, self.batch_size
        return n // b if self.drop_last else -(-n // b)

    def __iter__(self):
        # Draw now (not lazily inside the generator) so iter() alone fixes the epoch.
        n = self.num_examples
        order = self._rng.permutation(n) if self.shuffle else np.arange(n)
        augment_seed = int(self._rng.integers(2**63))  # drawn even without transform: same orders
        return self._epoch(order, np.random.default_rng(augment_seed))

    def _epoch(self, order, augment_rng):
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            images, labels = self._gather(order[start:start + self.batch_size])
            if self.transform is not None:
                count = len(images)
                images = self.transform(backend.to_numpy(images), augment_rng)
                if not backend.is_array(images) or len(images) != count:
                    raise ValueError(f"transform must return an array of {count} images, "
                                     f"got {type(images).__name__} of length {len(images)}")
            yield (Tensor(backend.to_device(images, self.device)),
                   Tensor(backend.to_device(labels, self.device)))

    def _gather(self, index):
        """The examples at ``index``, as fresh arrays (never views of the dataset)."""
        if self.images is None:
            items = [self.dataset[int(i)] for i in index]
            return (np.stack([backend.to_numpy(x) for x, _ in items]),
                    np.asarray([backend.to_numpy(y) for _, y in items]))
        xp = backend.get_array_module(self.images)
        return self.images[xp.asarray(index)], self.labels[backend.get_array_module(self.labels).asarray(index)]

    def state_dict(self):
        """The generator state (a plain dict), enough to replay all following epochs."""
        return {"bit_generator": self._rng.bit_generator.state}

    def load_state_dict(self, state):
        """Restore a state from :meth:`state_dict` (of a loader built the same way)."""
        if not isinstance(state, dict) or "bit_generator" not in state:
            raise ValueError("not a DataLoader state: expected a dict with key 'bit_generator'")
        self._rng.bit_generator.state = state["bit_generator"]

    def __repr__(self):
        return (f"DataLoader(examples={self.num_examples}, batch_size={self.batch_size}, "
                f"batches={len(self)}, shuffle={self.shuffle}, device={self.device!r})")
