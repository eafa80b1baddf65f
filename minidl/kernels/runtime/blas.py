"""The BLAS behind NumPy (OpenBLAS, MKL, ...), seen and steered at run time through threadpoolctl.

BLAS libraries read their thread count from environment variables once, when they load;
threadpoolctl calls the library's own setter instead, so the count can change at any
time, e.g. one BLAS thread inside the PGD loop while the other core runs the kernels'
copies (an idle OpenBLAS worker keeps spinning on its core for a while after each product,
and competes with anything else started there).

:func:`describe` names the library, its version, the CPU kernel it picked (OpenBLAS's
``architecture``: e.g. Haswell when ``OPENBLAS_CORETYPE=Haswell`` is set, else what it
detects) and its thread count; ``python -m minidl info`` and the benchmarks print it.
"""
import contextlib

import numpy  # noqa: F401  (loads the BLAS that threadpoolctl is to find)
import threadpoolctl

_selected = None


def _blas():
    """threadpoolctl's controller of the loaded BLAS libraries, found once (the search is
    slow; the kernels switch the count around every large product)."""
    global _selected
    if _selected is None:
        _selected = threadpoolctl.ThreadpoolController().select(user_api="blas")
    return _selected


def info():
    """threadpoolctl's description of each loaded BLAS library (a list of dicts)."""
    return _blas().info()


def describe():
    """One line per BLAS: library, version, CPU kernel and threads, e.g.
    ``openblas 0.3.31 (kernel SkylakeX, 2 threads, pthreads)``."""
    lines = []
    for lib in info():
        extra = [f"kernel {lib['architecture']}"] if lib.get("architecture") else []
        extra.append(f"{lib['num_threads']} threads")
        if lib.get("threading_layer"):
            extra.append(lib["threading_layer"])
        lines.append(f"{lib['internal_api']} {lib.get('version') or '?'} ({', '.join(extra)})")
    return "; ".join(lines) or "no BLAS found by threadpoolctl"


class _Library:
    """One loaded BLAS: its thread count read and set through its own C functions where
    threadpoolctl can name them (OpenBLAS), looked up once. threadpoolctl looks the symbol up on
    every call, which costs more than a small matrix product, and the kernels switch the count
    around their products on every call (a forward pass at batch 1 is mostly such calls)."""

    def __init__(self, controller):
        self.controller = controller
        self.get = self.set = None
        if controller.internal_api == "openblas":
            try:  # threadpoolctl's own symbol lookup (prefixes such as scipy_openblas_...)
                self.get = controller._get_symbol("openblas_get_num_threads")
                self.set = controller._get_symbol("openblas_set_num_threads")
            except Exception:  # another threadpoolctl: its public setter below
                self.get = self.set = None

    def num_threads(self):
        return self.get() if self.get is not None else self.controller.num_threads

    def set_num_threads(self, n):
        if self.set is not None:
            self.set(n)
        else:
            self.controller.set_num_threads(n)


_libraries = None


def _libs():
    global _libraries
    if _libraries is None:
        _libraries = [_Library(c) for c in _blas().lib_controllers]
    return _libraries


def get_num_threads():
    """The BLAS thread count (the largest, if several BLAS libraries are loaded); 1 if none."""
    return max((lib.num_threads() for lib in _libs()), default=1)


def set_num_threads(n):
    """Let every loaded BLAS use ``n`` (>= 1) threads; returns the previous count."""
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"blas.set_num_threads: n must be an integer >= 1, got {n!r}")
    previous = get_num_threads()
    for lib in _libs():
        if lib.num_threads() != n:  # each library on its own: they may differ
            lib.set_num_threads(n)
    return previous


@contextlib.contextmanager
def num_threads(n):
    """``with num_threads(1): ...`` runs the block with ``n`` BLAS threads, then restores the count."""
    previous = set_num_threads(n)
    try:
        yield
    finally:
        set_num_threads(previous)
