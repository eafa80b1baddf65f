"""``python -m minidl info``: versions, usable backends and the BLAS behind NumPy."""
import platform

import numpy

from . import __version__, backend, functional, kernels
from .kernels.runtime import allocator, autotune, blas, parallel
from .models import get_model
from .tensor import tensor
from .validation import check_number

# A warm-up step is a measurement, not a workload: a larger batch times nothing new, and
# 10^9 images would ask for terabytes.
MAX_WARM_UP_BATCH = 4096


def blas_name():
    """The BLAS library NumPy is linked against, as NumPy reports it."""
    try:
        config = numpy.show_config(mode="dicts")
        blas = config.get("Build Dependencies", {}).get("blas", {})
        name = blas.get("name", "unknown")
        version = blas.get("version")
        return f"{name} {version}" if version else name
    except Exception:  # older NumPy without mode="dicts"
        return "unknown"


def describe():
    lines = [f"minidl {__version__}",
             f"python {platform.python_version()} ({platform.machine()})",
             f"numpy {numpy.__version__}, BLAS: {blas_name()}"]
    for name in ("scipy", "matplotlib", "tqdm", "hypothesis", "torch"):
        try:
            module = __import__(name)
            lines.append(f"{name} {module.__version__}")
        except Exception:
            lines.append(f"{name}: not installed")
    lines.append(f"backend cpu (numpy): available; kernel threads: {parallel.get_num_threads()} "
                 f"(MINIDL_NUM_THREADS, else OMP_NUM_THREADS / OPENBLAS_NUM_THREADS, else the cores)")
    lines.append(f"BLAS at run time (threadpoolctl): {blas.describe()}")
    lines.append(kernels.describe()[0])
    lines.append(autotune.describe()[0])
    lines.append(f"C heap (glibc malloc thresholds): {allocator.state}")
    lines.append(cuda_line())
    return "\n".join(lines)


def warm_up(model_name, batch):
    """Run one CPU forward and backward pass of ``model_name`` on random data (batch ``batch``, float32), so
    that ``auto`` mode measures its convolutions; returns the lines describing the algorithm cache.
    ``batch`` is at most :data:`MAX_WARM_UP_BATCH`."""
    check_number("warm_up: batch", batch, minimum=1, maximum=MAX_WARM_UP_BATCH, integer=True)
    model = get_model(model_name)
    # MNIST models take 1x28x28 images, the others 3x32x32 (CIFAR-10).
    shape = (1, 28, 28) if ("mnist" in model_name or model_name in ("mlp", "lenet")) else (3, 32, 32)
    rng = numpy.random.default_rng(0)
    x = tensor(rng.random((batch,) + shape, dtype=numpy.float32))
    y = tensor(rng.integers(0, 10, batch))
    loss = functional.cross_entropy(model(x), y)
    loss.backward()
    return [f"after one forward and backward pass of {model_name} (batch {batch}):"] + autotune.describe()[1:]


def nvrtc_state():
    """NVRTC's version, or why it cannot be loaded. NVRTC compiles the CUDA kernels on the host,
    so it can work on a machine without a GPU (tests/test_nvrtc.py relies on that)."""
    try:
        from cupy_backends.cuda.libs import nvrtc
        major, minor = nvrtc.getVersion()
        return f"NVRTC {major}.{minor}"
    except Exception as e:  # CuPy without the NVRTC shared library (nvidia-cuda-nvrtc-cu12)
        return f"NVRTC not loadable ({type(e).__name__}: {e})"


def cuda_line():
    """One line on the CUDA backend: CuPy missing; installed but unusable, and why (the driver's
    own error); or usable, with GPU 0's name and compute capability."""
    cupy = backend.cupy
    if cupy is None:
        return "backend cuda (cupy): not installed (pip install 'minidl[gpu]')"
    head = f"backend cuda (cupy {cupy.__version__}, {nvrtc_state()})"
    if not backend.cuda_available():
        try:
            reason = f"{cupy.cuda.runtime.getDeviceCount()} devices"
        except Exception as e:
            reason = f"{type(e).__name__}: {e}"
        return f"{head}: installed, but no usable CUDA device ({reason}); --device cuda is refused"
    props = cupy.cuda.runtime.getDeviceProperties(0)
    gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
    return f"{head}: available, GPU 0: {gpu} (compute capability {props['major']}.{props['minor']})"
