"""Array backends: NumPy on the CPU, CuPy on an NVIDIA GPU.

Every op is written once against an "array module" ``xp`` (``numpy`` or
``cupy``) obtained from its inputs with :func:`get_array_module`, the way
Chainer does it, instead of ``if gpu:`` branches scattered through the code.

Devices are named ``"cpu"`` and ``"cuda"`` (``"cuda:0"`` is accepted and means
the current CuPy device).
"""
import numbers

import numpy

try:  # CuPy is the optional ``gpu`` extra; importing it must never be required.
    import cupy
    try:
        _CUDA_OK = cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # driver missing, no device, ...
        _CUDA_OK = False
except Exception:
    cupy = None
    _CUDA_OK = False


def cuda_available():
    """True when CuPy imports and at least one CUDA device answers."""
    return _CUDA_OK


def get_array_module(*arrays):
    """Return ``cupy`` if any argument is a CuPy array, else ``numpy``."""
    if cupy is not None:
        for a in arrays:
            if isinstance(a, cupy.ndarray):
                return cupy
    return numpy


def is_array(a):
    return isinstance(a, numpy.ndarray) or (cupy is not None and isinstance(a, cupy.ndarray))


def normalize_device(device):
    """Map user spellings to ``"cpu"`` or ``"cuda"``; reject anything else."""
    if device is None:
        return "cpu"
    name = str(device).lower()
    if name == "cpu":
        return "cpu"
    if name == "cuda" or name == "gpu" or name.startswith("cuda:"):
        if not _CUDA_OK:
            raise RuntimeError(
                f"device={device!r} was requested but no usable CUDA device was found "
                "(install the 'gpu' extra, e.g. `pip install minidl[gpu]`, on a machine with an NVIDIA GPU)")
        return "cuda"
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")


def device_of(array):
    """``"cuda"`` for a CuPy array, ``"cpu"`` for anything else."""
    return "cuda" if get_array_module(array) is not numpy else "cpu"


def xp_for(device):
    """The array module that holds arrays on ``device``."""
    return cupy if normalize_device(device) == "cuda" else numpy


def to_device(array, device):
    """Move an array to ``device`` (no copy when it is already there)."""
    device = normalize_device(device)
    if device == "cpu":
        return to_numpy(array)
    return cupy.asarray(array)


def to_numpy(array):
    """A host NumPy array for a NumPy or CuPy array (or anything array-like)."""
    if cupy is not None and isinstance(array, cupy.ndarray):
        return cupy.asnumpy(array)
    return numpy.asarray(array)


# --- making arrays from user data -------------------------------------------------------------
def resolve_dtype(dtype):
    """``numpy.dtype(dtype)``, or None for None; a clear TypeError for anything else."""
    if dtype is None:
        return None
    try:
        return numpy.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected a NumPy dtype or its name (e.g. 'float32'), got {dtype!r}") from None


def new_array(data, dtype=None, device="cpu"):
    """A new array on ``device`` holding a copy of ``data`` (list, scalar, NumPy/CuPy array).

    Python floats become float32 (the library default); NumPy arrays keep their dtype;
    Python ints become int64.
    """
    device = normalize_device(device)
    dtype = resolve_dtype(dtype)
    if is_array(data):
        array = data
    else:
        array = numpy.asarray(data)
        if array.dtype == numpy.float64:
            array = array.astype(numpy.float32)
        if array.dtype.kind not in "biuf":
            raise TypeError(f"tensor(data): cannot make a numeric tensor from {type(data).__name__} "
                            f"(NumPy dtype {array.dtype})")
    xp = xp_for(device)
    return xp.array(array if device_of(array) == device else to_device(array, device), dtype=dtype, copy=True)


def as_array(data, dtype=None, device="cpu"):
    """``data`` as an array on ``device``, not copied when it is already an array there.

    A floating array is cast to a floating ``dtype``; other data goes through :func:`new_array`.
    """
    dtype = resolve_dtype(dtype)
    if is_array(data):
        array = to_device(data, device)
        if dtype is not None and array.dtype.kind == "f" and dtype.kind == "f":
            array = array.astype(dtype, copy=False)
        return array
    if isinstance(data, numbers.Number) and dtype is not None and dtype.kind == "f":
        return xp_for(device).asarray(data, dtype=dtype)
    return new_array(data, dtype=dtype, device=device)


# --- random numbers -------------------------------------------------------------------------
# One generator per backend, both reseeded by ``manual_seed`` so that dropout, noise layers,
# random starts of attacks, initialisation and data shuffling are reproducible together.
_np_rng = numpy.random.default_rng(0)
_cp_rng = None


def manual_seed(seed):
    """Seed every random source of minidl (NumPy generator and, if present, CuPy's)."""
    global _np_rng, _cp_rng
    if not isinstance(seed, (int, numpy.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    _np_rng = numpy.random.default_rng(int(seed))
    _cp_rng = cupy.random.default_rng(int(seed)) if _CUDA_OK else None


def seed_cuda(seed):
    """Seed only the GPU generator (CuPy's); nothing to do without a GPU."""
    global _cp_rng
    if not isinstance(seed, (int, numpy.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if _CUDA_OK:
        _cp_rng = cupy.random.default_rng(int(seed))


class Device(str):
    """A device name as PyTorch's ``torch.device``: ``Device("cuda:0")``, ``Device("cuda", 0)``
    or ``Device("cpu")``; a str (so it goes wherever a device name goes) with ``.type`` and
    ``.index``. Making one does not need the device to exist; using it does."""

    def __new__(cls, type, index=None):
        if isinstance(type, Device):
            return type
        name = str(type).lower()
        kind, _, number = name.partition(":")
        if kind not in ("cpu", "cuda") or (number and not number.isdecimal()) or (number and index is not None):
            raise ValueError(f"device: expected 'cpu', 'cuda' or 'cuda:N', got {type!r}"
                             + (f" with index {index!r}" if index is not None else ""))
        if index is not None and (not isinstance(index, (int, numpy.integer)) or index < 0):
            raise ValueError(f"device: index must be an integer >= 0, got {index!r}")
        idx = int(number) if number else (None if index is None else int(index))
        self = super().__new__(cls, kind if idx is None else f"{kind}:{idx}")
        self.type, self.index = kind, idx
        return self

    def __repr__(self):
        return f"device(type={self.type!r}" + ("" if self.index is None else f", index={self.index}") + ")"


def rng(xp=numpy):
    """The library's random generator for the array module ``xp``."""
    global _cp_rng
    if xp is numpy:
        return _np_rng
    if _cp_rng is None:
        _cp_rng = cupy.random.default_rng(0)
    return _cp_rng


def as_generator(seed_or_rng=None):
    """A NumPy Generator: the library's (None), a fresh one from an integer seed, or the given one."""
    if seed_or_rng is None:
        return _np_rng
    if isinstance(seed_or_rng, (int, numpy.integer)) and not isinstance(seed_or_rng, bool):
        return numpy.random.default_rng(int(seed_or_rng))
    if isinstance(seed_or_rng, numpy.random.Generator):
        return seed_or_rng
    raise TypeError("rng must be None, an integer seed or a numpy.random.Generator, "
                    f"got {type(seed_or_rng).__name__}")


def seeded_generator(seed, xp=numpy):
    """A fresh generator of the array module ``xp`` from an integer seed: a NumPy ``Generator``
    on the CPU, a CuPy ``RandomState`` with the Philox counter-based cuRAND generator on the GPU
    (cheap to create, unlike the XORWOW states behind ``cupy.random.default_rng``). Both have
    ``standard_normal(size, dtype)``."""
    if xp is numpy:
        return numpy.random.default_rng(seed)
    from cupy.cuda import curand
    return xp.random.RandomState(seed, method=curand.CURAND_RNG_PSEUDO_PHILOX4_32_10)


def get_rng_state():
    """Serializable state of the CPU generator (for checkpoints)."""
    return _np_rng.bit_generator.state


def set_rng_state(state):
    _np_rng.bit_generator.state = state


def reseed_cupy(seed):
    """Reseed CuPy's generator alone, when CUDA is there: its state cannot be saved, so a
    resumed evaluation (``adversarial.journal``) restarts it from a seed instead."""
    global _cp_rng
    if _CUDA_OK:
        _cp_rng = cupy.random.default_rng(int(seed))
