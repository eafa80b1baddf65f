"""PyTorch's ``torch.utils.data`` names: ``Dataset``, ``TensorDataset``, ``Subset`` and a
``DataLoader(dataset, batch_size, shuffle, num_workers, drop_last)`` that yields batches as
PyTorch's default collate does (a list with one stacked Tensor per field of the items).

The batch order comes from :class:`minidl.data.DataLoader` (run over the example indices),
so shuffling is seeded by ``md.manual_seed`` (or ``seed=``) exactly as minidl's own loader.
Datasets that hold whole arrays (``TensorDataset``, the vision datasets without a
transform) are batched by one fancy index per field; other datasets item by item.

``num_workers``, ``pin_memory``, ``persistent_workers`` and ``prefetch_factor`` are accepted
and change nothing: batches are made in the calling process (NumPy releases no work to
worker processes here, and a transform sees the same generator as in a one-process run).
"""
import numbers

import numpy as np

from .. import backend
from ..data import DataLoader as _IndexLoader
from ..tensor import Tensor


class Dataset:
    """Base class: subclasses define ``__len__`` and ``__getitem__(i) -> item``."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __len__(self):
        raise NotImplementedError(f"{type(self).__name__} must implement __len__")


class TensorDataset(Dataset):
    """Item i is ``tuple(t[i] for t in tensors)``; all tensors share their first dimension."""

    def __init__(self, *tensors):
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        for i, t in enumerate(tensors):
            if not isinstance(t, Tensor):
                raise TypeError(f"TensorDataset: argument {i} must be a Tensor, got {type(t).__name__}")
            if t.ndim == 0 or t.shape[0] != tensors[0].shape[0]:
                raise ValueError(f"TensorDataset: every tensor needs the first dimension {tensors[0].shape[0]}, "
                                 f"argument {i} has shape {t.shape}")
        self.tensors = tensors

    def __len__(self):
        return self.tensors[0].shape[0]

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def fields(self, indices):
        """Every field at ``indices`` at once (the loader's fast path)."""
        return [t.array[indices] for t in self.tensors]


class Subset(Dataset):
    """The items of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in (indices.tolist() if hasattr(indices, "tolist") else indices)]
        n = len(dataset)
        bad = [i for i in self.indices if not -n <= i < n]
        if bad:
            raise IndexError(f"Subset: indices {bad[:5]} are out of range for a dataset of {n} items")

    def __len__(self):
        return len(self.indices)

    def __getitem__(self, index):
        return self.dataset[self.indices[index]]

    def fields(self, indices):
        inner = getattr(self.dataset, "fields", None)
        return None if inner is None else inner(np.asarray(self.indices)[indices])


def default_collate(items):
    """Stack a list of items: Tensors and arrays along a new first axis, numbers into a 1-D
    Tensor (int64 for ints, float32 for floats), tuples and lists field by field (a list),
    dicts key by key."""
    first = items[0]
    if isinstance(first, (tuple, list)):
        return [default_collate([it[k] for it in items]) for k in range(len(first))]
    if isinstance(first, dict):
        return {k: default_collate([it[k] for it in items]) for k in first}
    if isinstance(first, Tensor) or backend.is_array(first):
        xp = backend.get_array_module(first.array if isinstance(first, Tensor) else first)
        return Tensor(xp.stack([it.array if isinstance(it, Tensor) else it for it in items]))
    if isinstance(first, numbers.Number):
        dtype = np.int64 if isinstance(first, numbers.Integral) else np.float32
        return Tensor(np.asarray(items, dtype=np.bool_ if isinstance(first, bool) else dtype))
    return items


class DataLoader:
    """Batches of ``dataset`` as PyTorch's DataLoader yields them (see the module docstring).

    ``seed`` (minidl's addition) seeds the order; by default it follows ``md.manual_seed``.
    ``collate_fn`` replaces :func:`default_collate`. ``sampler``/``batch_sampler`` are not
    supported (a clear error).
    """

    def __init__(self, dataset, batch_size=1, shuffle=False, num_workers=0, drop_last=False,
                 collate_fn=None, pin_memory=False, sampler=None, batch_sampler=None,
                 persistent_workers=False, prefetch_factor=None, worker_init_fn=None, generator=None, seed=None):
        if sampler is not None or batch_sampler is not None:
            raise ValueError("DataLoader: sampler and batch_sampler are not supported; use shuffle")
        if not isinstance(num_workers, numbers.Integral) or num_workers < 0:
            raise ValueError(f"DataLoader: num_workers must be an integer >= 0, got {num_workers!r}")
        if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
            raise TypeError(f"DataLoader: dataset needs __len__ and __getitem__, got {type(dataset).__name__}")
        self.dataset, self.batch_size, self.num_workers = dataset, batch_size, num_workers
        self.collate_fn = collate_fn or default_collate
        n = len(dataset)
        positions = np.arange(n)
        self._order = _IndexLoader((positions, positions), batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed)

    def __len__(self):
        return len(self._order)

    def __iter__(self):
        fields = getattr(self.dataset, "fields", None)
        for index, _ in self._order:
            index = index.array
            arrays = fields(index) if fields is not None and self.collate_fn is default_collate else None
            if arrays is not None:
                yield [Tensor(a) for a in arrays]
            else:
                yield self.collate_fn([self.dataset[int(i)] for i in index])
