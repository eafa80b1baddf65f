"""Every CUDA kernel source of minidl compiled by NVRTC, without a GPU.

NVRTC is a library: it turns CUDA C++ into PTX/cubin on the host, so CI can catch a kernel that
does not compile (or compiles with a warning) before anyone runs it on a GPU. The sources are
compiled for compute capabilities 8.0 (A100) and 9.0 (H100/H200), each dtype, with the options
``cupy.RawKernel`` would pass at run time (``runtime_options``). ``cupy.RawKernel`` itself cannot
be used here: it asks the driver for the device's architecture.

Skipped when CuPy or the NVRTC library is missing (``.ci/run`` installs ``cupy-cuda12x`` and
``nvidia-cuda-nvrtc-cu12`` so that it runs in CI).
"""
import os
import re

import numpy as np
import pytest

from minidl.kernels import cuda_sources

nvrtc = pytest.importorskip("cupy_backends.cuda.libs.nvrtc", reason="CuPy is not installed")
try:
    NVRTC_VERSION = nvrtc.getVersion()
except Exception as e:  # CuPy without the NVRTC shared library
    pytest.skip(f"the NVRTC library cannot be loaded: {e}", allow_module_level=True)

ARCHS = ("80", "90")
DTYPES = (np.float32, np.float64)
PROGRAM = "minidl_kernels.cu"


class NVRTCFailure(AssertionError):
    """A compilation that failed or printed anything (an error or a warning): carries the log."""


def runtime_options(arch):
    """The NVRTC options of ``cupy.RawKernel(source, name, options=cuda_sources.OPTIONS)`` on a GPU
    of compute capability ``arch``, as CuPy 13/14 assembles them (``compile_with_cache`` then
    ``_compile_with_cache_cuda``): its include paths and C++ standard, flush-to-zero, the real
    architecture (cubin), and device code as the default execution space."""
    options = tuple(cuda_sources.OPTIONS)
    try:
        from cupy._core.core import assemble_cupy_compiler_options
        options = assemble_cupy_compiler_options(options)
    except (ImportError, AttributeError):  # a CuPy that moved it: our sources need no include
        options += ("--std=c++17",)
    options += ("-ftz=true", f"-arch=sm_{arch}", "--device-as-default-execution-space")
    from cupy.cuda import compiler
    if getattr(compiler, "_use_pch", False) and NVRTC_VERSION >= (12, 8):
        options += ("--pch",)
    return options


def compile_source(source, arch, options=None):
    """PTX text of ``source`` compiled for ``arch``; raises NVRTCFailure with NVRTC's log on an
    error, and also when the log is not empty (NVRTC prints only warnings and errors)."""
    options = runtime_options(arch) if options is None else options
    program = nvrtc.createProgram(source, PROGRAM, (), ())
    try:
        try:
            nvrtc.compileProgram(program, options)
        except nvrtc.NVRTCError as e:
            raise NVRTCFailure(f"NVRTC {NVRTC_VERSION} failed for sm_{arch} ({e}):\n"
                               f"{nvrtc.getProgramLog(program)}\noptions: {' '.join(options)}") from None
        log = nvrtc.getProgramLog(program).strip()
        if log:
            raise NVRTCFailure(f"NVRTC {NVRTC_VERSION} printed for sm_{arch}:\n{log}")
        ptx = nvrtc.getPTX(program)
        return ptx.decode() if isinstance(ptx, bytes) else ptx
    finally:
        nvrtc.destroyProgram(program)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float32", "float64"])
def test_kernels_compile_cleanly(arch, dtype):
    ptx = compile_source(cuda_sources.kernel_source(dtype), arch)
    entries = set(re.findall(r"\.entry\s+(\w+)\s*\(", ptx))
    # get_kernel looks kernels up by these names: each must be an unmangled entry point.
    assert set(cuda_sources.KERNEL_NAMES) <= entries, sorted(entries)
    real = "f64" if dtype == np.float64 else "f32"
    assert f".{real}" in ptx


def test_error_is_reported_with_its_line():
    source = cuda_sources.kernel_source(np.float32)
    broken = source.replace("real_t acc = 0;", "real_t acc = not_declared;", 1)
    assert broken != source
    line = broken.splitlines().index(next(s for s in broken.splitlines() if "not_declared" in s)) + 1
    with pytest.raises(NVRTCFailure, match=rf"{PROGRAM}\({line}\): error: .*not_declared"):
        compile_source(broken, "80")


def test_warning_fails_too():
    source = cuda_sources.kernel_source(np.float64) + (
        'extern "C" __global__ void minidl_unused(double* y) { int never_read = 1; y[0] = 0; }\n')
    with pytest.raises(NVRTCFailure, match=r"warning.*never_read"):
        compile_source(source, "90")


def test_every_cuda_source_is_compiled_here():
    """CUDA C anywhere else in the package would escape the test above: name it here first."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(cuda_sources.__file__)))
    markers = re.compile(r"__global__|RawKernel\(|RawModule\(|ElementwiseKernel\(|ReductionKernel\(")
    found = []
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            if name.endswith(".py") and path != os.path.abspath(cuda_sources.__file__):
                if markers.search(open(path, encoding="utf-8").read()):
                    found.append(os.path.relpath(path, root))
    assert not found, f"CUDA sources outside kernels/cuda_sources.py, not compiled by this test: {found}"


def test_cupy_without_a_gpu_is_not_usable():
    """Installing CuPy and NVRTC on a machine without a GPU must not switch the GPU path on:
    the GPU tests skip and ``device='cuda'`` is a clear error."""
    from minidl import backend
    try:
        import cupy
        gpus = cupy.cuda.runtime.getDeviceCount()
    except Exception:
        gpus = 0
    if gpus:
        pytest.skip("a GPU is present")
    assert not backend.cuda_available()
    with pytest.raises(RuntimeError, match="no usable CUDA device"):
        backend.normalize_device("cuda")
    from minidl import info
    line = info.cuda_line()
    assert "installed, but no usable CUDA device" in line and "refused" in line
    assert f"NVRTC {NVRTC_VERSION[0]}.{NVRTC_VERSION[1]}" in line


def test_info_without_cupy(monkeypatch):
    from minidl import backend, info
    monkeypatch.setattr(backend, "cupy", None)
    assert info.cuda_line() == "backend cuda (cupy): not installed (pip install 'minidl[gpu]')"
