"""Choosing a convolution's algorithm by timing the candidates: opt-in, like
``torch.backends.cudnn.benchmark = True``.

By default (``rule``) the algorithm is a fixed function of the shapes (``conv.choose_algorithm``),
so the same command on the same machine runs the same code and gives the same bits whether the
machine is idle or busy. Fixed size thresholds encode one machine's trade-offs, though (its BLAS
kernel, cores, caches); ``auto`` measures instead, at the price of results (float rounding) that
depend on the machine's load at the moment of tuning. In ``auto`` mode, the first call for a key (op, shapes, stride, padding, dtype, device, thread
counts, which gradients will be needed) runs every applicable candidate on the real
arguments, twice in alternation (the first run of each pays for fresh buffers), keeps the
fastest by its better run (unless it beats the fixed rule's choice by less than ``MARGIN``;
a candidate that keeps more than the caller's memory limit for its backward pass is not
eligible), and caches the winner's name for the rest of the process. Every
later call with that key runs the winner only. Each candidate is deterministic and computes
the same function (they differ by float rounding), so the choice changes speed, not results
beyond rounding.

The mode comes from ``MINIDL_CONV_ALGO`` (read when this module loads) or
:func:`set_conv_algorithm` / the :class:`conv_algorithm` context manager:

* ``rule`` (default): the fixed rule from the shapes (``use_fft`` in ``conv.py``,
  ``choose_layout`` in ``conv_im2col.py``).
* ``auto``: measure, as above. Problems below ``MIN_TUNE_FLOPS`` use the rule, because their
  timings are noise and tuning would cost more than it saves.
* an algorithm name (``im2col``, ``im2col_cnhw``, ``im2col_chwn``, ``im2col_nhwc``, ``fft``): that
  algorithm wherever it applies (fft: stride 1), the rule elsewhere.

All of this is the fast tier's business: on the reference tier (``registry``) every convolution
runs ``reference.py``.

:func:`cache_items` lists the decisions so far (``python -m minidl info --warm-up`` prints them).
"""
import contextlib
import os
import threading
import time

MODES = ("rule", "auto", "im2col", "im2col_cnhw", "im2col_chwn", "im2col_nhwc", "fft")

# Below this many multiply-adds x 2 (forward), a convolution is not worth timing.
MIN_TUNE_FLOPS = 20e6


def _check_mode(mode, what):
    if mode not in MODES:
        raise ValueError(f"{what}: expected one of {', '.join(MODES)}, got {mode!r}")
    return mode


_mode = _check_mode(os.environ.get("MINIDL_CONV_ALGO", "rule").strip() or "rule", "MINIDL_CONV_ALGO")
_cache = {}
_over_limit = {}           # key -> names that kept more than the memory limit
_lock = threading.Lock()


def get_conv_algorithm():
    """The current mode: 'auto', 'rule' or a forced algorithm name."""
    return _mode


def set_conv_algorithm(mode):
    """Set the mode (see the module docstring); returns the previous one."""
    global _mode
    previous, _mode = _mode, _check_mode(mode, "set_conv_algorithm")
    return previous


@contextlib.contextmanager
def conv_algorithm(mode):
    """``with conv_algorithm('fft'): ...`` runs the block in that mode, then restores the old one."""
    previous = set_conv_algorithm(mode)
    try:
        yield
    finally:
        set_conv_algorithm(previous)


def cache_items():
    """The decisions so far: a list of (key, winner name, {candidate: best seconds})."""
    with _lock:
        return [(key, winner, dict(times)) for key, (winner, times) in _cache.items()]


def clear_cache():
    """Forget every decision (the next call of each key measures again)."""
    with _lock:
        _cache.clear()
        _over_limit.clear()


def lookup(key):
    """The cached winner's name for ``key``, or None."""
    entry = _cache.get(key)
    return entry[0] if entry is not None else None


# A candidate must beat the rule's own choice by this fraction to replace it: a single timing on
# a busy machine can be off by more than the real difference between two close algorithms.
MARGIN = 0.1


def choose(best, prefer=None, margin=MARGIN):
    """The name with the smallest time in ``best`` ({name: seconds}), except that ``prefer`` (the
    rule's choice) is kept unless the fastest is more than ``margin`` faster than it."""
    fastest = min(best, key=best.get)
    if prefer in best and best[fastest] > (1 - margin) * best[prefer]:
        return prefer
    return fastest


def tune(key, candidates, prefer=None, rounds=2, memory_limit=None):
    """Time ``candidates`` ({name: run}, each a callable) in alternating rounds, cache the
    winner (:func:`choose`) for ``key`` and return its name.

    A run may return the bytes its algorithm keeps for the backward pass (else None): with
    ``memory_limit``, a candidate that keeps more may not win (like cuDNN's workspace limit),
    unless no candidate is under it. A run's arrays are dropped at once, so that tuning never
    holds more than one candidate's buffers at a time."""
    best = {name: float("inf") for name in candidates}
    kept = {}
    for _ in range(rounds):
        for name, run in candidates.items():
            t0 = time.perf_counter()
            nbytes = run()
            best[name] = min(best[name], time.perf_counter() - t0)
            if nbytes is not None:
                kept[name] = nbytes
    over = {name for name, nbytes in kept.items() if memory_limit is not None and nbytes > memory_limit}
    allowed = {name: t for name, t in best.items() if name not in over} or best
    winner = choose(allowed, prefer)
    with _lock:
        _cache[key] = (winner, best)
        _over_limit[key] = over
    return winner


def describe():
    """Lines describing the mode and the cached decisions, for ``python -m minidl info``."""
    lines = [f"conv algorithm: {_mode} (MINIDL_CONV_ALGO / minidl.kernels.set_conv_algorithm)"]
    for key, winner, times in cache_items():
        over = _over_limit.get(key, ())
        ms = ", ".join(f"{n} {t * 1e3:.1f} ms{' (over the memory limit)' if n in over else ''}"
                       for n, t in sorted(times.items(), key=lambda kv: kv[1]))
        lines.append(f"  {format_key(key)} -> {winner}   ({ms})")
    return lines


def format_key(key):
    op, x_shape, w_shape, stride, padding, dtype, device, threads, grads = key
    need = "+".join(n for n, g in zip(("dx", "dw"), grads) if g) or "forward only"
    return (f"{op} x{x_shape} w{w_shape} stride {stride} pad {padding} {dtype} {device} "
            f"threads {threads} [{need}]")
