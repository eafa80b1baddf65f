"""Data-parallel training: every rank holds the same weights, computes the gradient on its
shard of each global batch, and the ranks average those gradients before the same step.

For a global batch B split into disjoint shards B_r (|B_r| = n_r, sum n_r = n), rank r's loss
is the mean over its shard, so its gradient is g_r = (1/n_r) sum_{i in B_r} grad l_i. The
gradient of the mean loss over the whole batch is

    g = (1/n) sum_i grad l_i = sum_r (n_r / n) g_r,

which :func:`allreduce_gradients` computes: each rank scales its gradient by its share
n_r / n, and the scaled gradients are summed over ranks. With equal shards this is the plain
mean of the per-rank gradients. Since every rank then applies the same optimizer step to the
same weights, the weights stay identical on all ranks (the sum is computed once and
broadcast, see :mod:`.comm`), and an N-rank run follows the one-process run up to the order
in which the per-example gradients are summed.

Gradients are summed in buckets: the gradients of consecutive parameters of one dtype and
device are copied into one contiguous buffer of at most ``bucket_bytes``, so a network with
many small tensors costs a few large messages instead of one message per tensor.
"""
from .. import backend
from .comm import world


def broadcast_parameters(model, comm=None, root=0):
    """Copy rank ``root``'s parameters and buffers into every rank's ``model`` (in place)."""
    comm = comm or world()
    for _, p in model.named_parameters():
        comm.broadcast(p.array, root=root)
    for prefix, module in model.named_modules():
        for key, value in module._buffers.items():
            comm.broadcast(value, root=root)
    return model


def _buckets(params, bucket_bytes):
    """Consecutive parameters with a gradient, grouped by (device, dtype), each group at most
    ``bucket_bytes`` (a single larger gradient is a bucket of its own)."""
    bucket, size, key = [], 0, None
    for p in params:
        if p.grad is None:
            continue
        g = p.grad.array
        k = (backend.device_of(g), g.dtype)
        if bucket and (k != key or size + g.nbytes > bucket_bytes):
            yield bucket
            bucket, size = [], 0
        bucket.append(p)
        size += g.nbytes
        key = k
    if bucket:
        yield bucket


def allreduce_gradients(params, share, comm=None, bucket_bytes=25 * 2**20):
    """Replace each parameter's ``.grad`` by ``sum over ranks of share_r * grad_r``.

    params: the parameters (every rank passes the same list, in the same order).
    share: this rank's weight, n_r / n for the data-parallel mean (see the module docstring);
        a finite number in [0, 1]. A rank with share 0 (no examples in this batch) adds zeros,
        whatever its gradients hold.
    Every rank must have gradients for the same parameters: the ranks run the same model on
    the same kind of data, so a parameter without a gradient on one rank has none anywhere.
    """
    share = float(share)
    if not 0.0 <= share <= 1.0:  # also False for NaN
        raise ValueError(f"share: expected a number in [0, 1], got {share!r}")
    if bucket_bytes < 1:
        raise ValueError(f"bucket_bytes: expected >= 1, got {bucket_bytes!r}")
    comm = comm or world()
    params = list(params)
    present = [p.grad is not None for p in params]
    if comm.size > 1:
        agreed = comm.allgather_object(present)
        if any(a != present for a in agreed):
            raise RuntimeError("allreduce_gradients: the ranks have gradients for different parameters")
    for bucket in _buckets(params, bucket_bytes):
        xp = backend.get_array_module(bucket[0].grad.array)
        grads = [p.grad.array for p in bucket]
        flat = xp.concatenate([g.reshape(-1) for g in grads])
        flat *= flat.dtype.type(share)
        if share == 0.0:
            flat[...] = 0  # an empty shard's gradient may be NaN (mean over nothing): 0 * NaN is NaN
        comm.allreduce_sum(flat)
        start = 0
        for p, g in zip(bucket, grads):
            p.grad.array = flat[start:start + g.size].reshape(g.shape)
            start += g.size


class DistributedOptimizer:
    """Wraps an optimizer so that ``step()`` first averages the gradients over the ranks.

    optimizer: any minidl optimizer; every other attribute (``lr``, ``steps``, ``state_dict``
        ...) is the wrapped optimizer's, so schedules and checkpoints see the real one.
    share: a callable giving this rank's share n_r / n of the batch just computed (the
        sharded loader's :meth:`~minidl.data.DataLoader.batch_share`).
    """

    def __init__(self, optimizer, share, comm=None, bucket_bytes=25 * 2**20):
        if not callable(share):
            raise TypeError(f"share: expected a callable returning this rank's share, got {type(share).__name__}")
        object.__setattr__(self, "optimizer", optimizer)
        object.__setattr__(self, "_share", share)
        object.__setattr__(self, "_comm", comm or world())
        object.__setattr__(self, "_bucket_bytes", bucket_bytes)

    def step(self):
        allreduce_gradients(self.optimizer.params, self._share(), self._comm, self._bucket_bytes)
        return self.optimizer.step()

    def __getattr__(self, name):
        return getattr(self.optimizer, name)

    def __setattr__(self, name, value):
        setattr(self.optimizer, name, value)

    def __repr__(self):
        return f"DistributedOptimizer({self.optimizer!r}, comm={self._comm!r})"
