"""Prediction by averaging the softmax of many noisy forward passes (the "self-ensemble" of
Random Self-Ensemble, Liu et al. 2018).

``Ensemble(model, n)(x)`` returns

    log( (1/n) sum_k softmax(model_k(x)) )        shape (N, C)

where ``model_k`` is the k-th noisy pass. Its argmax is the ensemble's prediction and
``cross_entropy`` on it is the negative log-likelihood of the averaged probabilities (the
log-softmax of a log-probability vector is itself), so it can be trained, evaluated and
attacked (also with ``eot_samples``) like any classifier; it is differentiable end to end.

Speed: the batch is replicated n times along the batch axis and run through the model in one
pass, reshaped to (n, N, C), soft-maxed and averaged; when n * N exceeds ``chunk_size``
rows the replicas are split into chunks of at most ``chunk_size // N`` replicas (at least
one).

Exactness: the replicas draw their noise from per-replica generators (see
``minidl.nn.noise.replica_streams``) seeded from minidl's generator, so replica k of the
batched pass gets exactly the noise of a separate pass run with generator k. The output
therefore equals the mean of n separate passes (up to floating-point summation order in
the batched matrix products) and does not depend on ``chunk_size``.
"""
import math

import numpy

from .. import backend
from ..autograd import no_grad
from ..functional import log_softmax
from ..nn.module import Module
from ..nn.noise import replica_generators, replica_seeds, replica_streams
from ..tensor import Tensor, as_tensor, concatenate


class Ensemble(Module):
    """log of the mean softmax of ``n`` forward passes of a randomized ``model``.

    Parameters, train/eval, ``to(device)``, ``state_dict`` and ``load_state_dict`` are those
    of the inner model (same names, so checkpoints move freely between the two).
    """

    def __init__(self, model, n=10, chunk_size=4096):
        super().__init__()
        if not isinstance(model, Module):
            raise TypeError(f"Ensemble: model must be a minidl Module, got {type(model).__name__}")
        if isinstance(n, bool) or not isinstance(n, (int, numpy.integer)) or n < 1:
            raise ValueError(f"Ensemble: n must be a positive integer, got {n!r}")
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, numpy.integer)) or chunk_size < 1:
            raise ValueError(f"Ensemble: chunk_size must be a positive integer, got {chunk_size!r}")
        self.model = model
        self.n = int(n)
        self.chunk_size = int(chunk_size)

    # --- forward -------------------------------------------------------------------------
    def pass_log_probs(self, x):
        """Log-softmax of each of the n noisy passes, a (n, N, C) Tensor (differentiable)."""
        x = as_tensor(x, device=self.device)
        xp = backend.get_array_module(x.array)
        batch = x.shape[0]
        if batch == 0:
            raise ValueError("Ensemble: empty batch")
        generators = replica_generators(replica_seeds(self.n), xp)
        per_chunk = max(1, self.chunk_size // batch)
        chunks = []
        for start in range(0, self.n, per_chunk):
            m = min(per_chunk, self.n - start)
            xr = x if m == 1 else concatenate([x] * m, axis=0)
            with replica_streams(generators[start:start + m]):
                logits = self.model(xr)
            if logits.ndim != 2 or logits.shape[0] != m * batch:
                raise ValueError(f"Ensemble: the model must return logits of shape ({m * batch}, C) for a "
                                 f"batch of {m * batch}, got {logits.shape}")
            chunks.append(log_softmax(logits, axis=1).reshape(m, batch, logits.shape[1]))
        return chunks[0] if len(chunks) == 1 else concatenate(chunks, axis=0)

    def forward(self, x):
        lp = self.pass_log_probs(x)                      # (n, N, C)
        if self.n == 1:
            return lp.reshape(lp.shape[1:])
        shift = lp.array.max(axis=0)                      # log-sum-exp over passes, stably;
        s = (lp - Tensor(shift[None])).exp().sum(axis=0)  # the shift is a constant (its
        return s.log() + Tensor(shift - lp.dtype.type(math.log(self.n)))  # gradient cancels)

    def predict_proba(self, x):
        """Averaged class probabilities (N, C) as a Tensor, without recording a graph."""
        with no_grad():
            return self.forward(x).exp()

    def pass_probs(self, x):
        """Class probabilities of each noisy pass, (n, N, C) host array (for variance/uncertainty)."""
        with no_grad():
            return backend.to_numpy(self.pass_log_probs(x).exp().array)

    # --- delegation to the inner model ----------------------------------------------------
    def named_parameters(self, prefix=""):
        return self.model.named_parameters(prefix)

    def named_buffers(self, prefix=""):
        return self.model.named_buffers(prefix)

    def state_dict(self):
        return self.model.state_dict()

    def load_state_dict(self, state):
        self.model.load_state_dict(state)
        return self

    def extra_repr(self):
        return f"n={self.n}, chunk_size={self.chunk_size}"

    def __repr__(self):
        inner = repr(self.model).replace("\n", "\n  ")
        return f"Ensemble(n={self.n}, chunk_size={self.chunk_size},\n  (model): {inner}\n)"
