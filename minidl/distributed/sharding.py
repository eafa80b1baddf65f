"""Which part of the data each rank takes.

Rank r of N takes the contiguous block ``[floor(n r / N), floor(n (r + 1) / N))`` of n items:
the blocks are disjoint, cover all n items, differ in size by at most one, and in rank order
they are the items in their original order, so gathering per-item results in rank order gives
back exactly the unsharded array.
"""
from .comm import world


def shard_bounds(n, rank, size):
    """``(start, stop)`` of rank ``rank``'s block of ``n`` items split over ``size`` ranks."""
    for name, value in (("n", n), ("size", size), ("rank", rank)):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"{name}: expected an integer, got {type(value).__name__}")
    if size < 1:
        raise ValueError(f"size: expected >= 1, got {size}")
    if not 0 <= rank < size:
        raise ValueError(f"rank: expected an integer in [0, {size}), got {rank}")
    if n < 0:
        raise ValueError(f"n: expected >= 0, got {n}")
    return n * rank // size, n * (rank + 1) // size


def shard(data, comm=None):
    """This rank's block of ``data``: an (images, labels) pair, or anything sliceable."""
    comm = comm or world()
    if isinstance(data, (tuple, list)):
        images, labels = data
        if len(images) != len(labels):
            raise ValueError(f"data: images and labels differ in length: {len(images)} vs {len(labels)}")
        start, stop = shard_bounds(len(images), comm.rank, comm.size)
        return images[start:stop], labels[start:stop]
    start, stop = shard_bounds(len(data), comm.rank, comm.size)
    return data[start:stop]
