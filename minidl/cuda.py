"""``md.cuda``: PyTorch's ``torch.cuda`` questions answered for minidl's GPU backend (CuPy).

``is_available()`` is True when CuPy imports and a CUDA device answers; ``manual_seed`` seeds
the GPU generator only (``md.manual_seed`` seeds both); without a GPU the seeding functions
do nothing, as in PyTorch, so that CPU-only runs of GPU scripts work.
"""
from . import backend


def is_available():
    return backend.cuda_available()


def device_count():
    """1 with a usable GPU (minidl uses CuPy's current device), else 0."""
    return 1 if backend.cuda_available() else 0


def current_device():
    return 0


def manual_seed(seed):
    """Seed the GPU generator (a no-op without a GPU)."""
    backend.seed_cuda(seed)


manual_seed_all = manual_seed  # one GPU in use, so "all" is the same generator


def synchronize():
    """Wait for the GPU's queued work (nothing to wait for on a CPU)."""
    if backend.cuda_available():
        backend.xp_for("cuda").cuda.Device().synchronize()
