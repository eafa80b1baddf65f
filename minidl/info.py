"""``python -m minidl info``: versions, usable backends and the BLAS behind NumPy."""
import platform

import numpy

from . import __version__, backend
from .kernels import parallel


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
    if backend.cupy is None:
        lines.append("backend cuda (cupy): not installed (pip install 'minidl[gpu]')")
    elif backend.cuda_available():
        props = backend.cupy.cuda.runtime.getDeviceProperties(0)
        gpu = props["name"].decode() if isinstance(props["name"], bytes) else props["name"]
        lines.append(f"backend cuda (cupy {backend.cupy.__version__}): available, GPU 0: {gpu}")
    else:
        lines.append(f"backend cuda (cupy {backend.cupy.__version__}): installed, but no usable CUDA device")
    return "\n".join(lines)
