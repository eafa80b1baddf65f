"""The C heap's two thresholds, fixed at the start instead of left to the process's history.

NumPy takes an array's memory from the C library's ``malloc``. glibc serves a request of at
least ``M_MMAP_THRESHOLD`` bytes with a fresh ``mmap``: its pages are zero-filled by the OS at
the first write to each one (a page fault per 4 KiB) and returned to the OS at ``free``. Smaller
requests come from the heap, which keeps freed memory for the next request and gives its top
back to the OS only when more than ``M_TRIM_THRESHOLD`` bytes are free there.

Both thresholds start at 128 KiB, and glibc raises them on its own each time a mapped block is
freed (the mmap threshold to that block's size, at most 32 MiB on 64-bit systems, the trim
threshold to twice that). So whether a training step's activations and gradients (0.1 to 30 MiB
each, allocated and freed at every step) are recycled, or handed back to the OS and faulted in
afresh at every step, depends on which large arrays the process happened to free earlier: the
same step ran at two speeds in two processes (``benchmarks/README.md``, "The C heap").

:func:`tune` sets the two values glibc's own rule ends at, 32 MiB and 64 MiB, from the first
call on. It changes how memory is reused, never what is computed. It does nothing outside
glibc, when the user has set either threshold in the environment (``MALLOC_MMAP_THRESHOLD_``,
``MALLOC_TRIM_THRESHOLD_``; glibc reads them at start-up), or with ``MINIDL_MALLOC=default``
(``MINIDL_MALLOC=tune``, the same as unset, asks for it).
"""
import ctypes
import ctypes.util
import os

M_TRIM_THRESHOLD = -1   # mallopt parameter numbers, from glibc's <malloc.h>
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit systems
TRIM_THRESHOLD = 2 * MMAP_THRESHOLD  # what glibc sets beside it when it raises the mmap threshold

USER_VARIABLES = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")
CHOICES = ("tune", "default")  # MINIDL_MALLOC's values; unset means "tune"

state = "left to glibc (the fast tier tunes it when minidl is imported)"  # read by `minidl info`
_done = False


def _glibc():
    """glibc's handle, or None on another C library (musl, macOS, Windows)."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None)
        libc.gnu_get_libc_version  # only glibc has it
        return libc
    except (OSError, AttributeError):
        return None


def tune():
    """Fix glibc's mmap and trim thresholds (module docstring); returns :data:`state`.
    Calling it again does nothing more."""
    global state, _done
    if _done:
        return state
    choice = os.environ.get("MINIDL_MALLOC", "").strip() or "tune"
    if choice not in CHOICES:
        raise ValueError(f"MINIDL_MALLOC: expected one of {', '.join(map(repr, CHOICES))}, got {choice!r}")
    _done = True
    if choice == "default":
        state = "left to glibc (MINIDL_MALLOC=default)"
    elif any(v in os.environ for v in USER_VARIABLES):
        state = "left to the environment (" + ", ".join(v for v in USER_VARIABLES if v in os.environ) + ")"
    else:
        libc = _glibc()
        if libc is None:
            state = "left alone (not glibc)"
        elif libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD):
            state = f"tuned (mmap threshold {MMAP_THRESHOLD >> 20} MiB, trim threshold {TRIM_THRESHOLD >> 20} MiB)"
        else:
            state = "left to glibc (mallopt refused)"
    return state
