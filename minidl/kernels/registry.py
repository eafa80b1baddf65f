"""The kernel table: every kernel has a plain reference and, possibly, faster implementations.

A kernel is a named computation on arrays (``conv2d``, ``batch_norm_stats``, ``matmul``, ...).
Its ``reference`` implementation is plain array code on ``xp`` (NumPy or CuPy), written to be
read; the others compute the same function faster on some device and are registered beside
it by name. Which one runs is decided in one place, :meth:`Kernel.choose`:

* on the ``reference`` tier (``MINIDL_KERNELS=reference`` or ``use("reference")``), the
  reference, always;
* on the ``fast`` tier (the default), the kernel's ``rule``: a fixed function of the
  arguments' device, shapes and dtypes (never of a timing), so the same call on the same
  machine always runs the same code and rounds the same way.

``force(kernel, implementation)`` pins one kernel to one implementation (tests, and the
benchmarks that measure what each implementation buys).

Implementations of a function kernel are callables with the reference's signature; for a kernel
with a forward and a backward pass (convolution, pooling) they are objects with ``forward`` and
``backward``, and the forward's cache names the implementation so that backward finds it again.
"""
import contextlib
import os

TIERS = ("fast", "reference")


def _check_tier(name, what):
    if name not in TIERS:
        raise ValueError(f"{what}: expected one of {', '.join(map(repr, TIERS))}, got {name!r}")
    return name


_tier = _check_tier(os.environ.get("MINIDL_KERNELS", "fast").strip() or "fast", "MINIDL_KERNELS")

KERNELS = {}  # name -> Kernel, in registration order


class Kernel:
    """One kernel: ``implementations`` maps a name to an implementation, ``"reference"`` always
    among them; ``rule(*args, **kwargs)`` names the fast tier's choice for those arguments
    (None: the reference everywhere). Calling the kernel runs :meth:`choose`'s implementation."""

    def __init__(self, name, reference, rule=None):
        if name in KERNELS:
            raise ValueError(f"kernel {name!r} is already registered")
        self.name = name
        self.implementations = {"reference": reference}
        self.rule = rule
        self.forced = None
        KERNELS[name] = self

    def add(self, name, implementation):
        """Register a faster implementation under ``name``; returns it."""
        self.implementations[name] = implementation
        return implementation

    def choose(self, *args, **kwargs):
        """The name of the implementation that runs for these arguments."""
        if _tier == "reference":
            return "reference"
        if self.forced is not None:
            return self.forced
        return self.rule(*args, **kwargs) if self.rule is not None else "reference"

    def __call__(self, *args, **kwargs):
        return self.implementations[self.choose(*args, **kwargs)](*args, **kwargs)

    def __repr__(self):
        return f"<kernel {self.name}: {', '.join(self.implementations)}>"


def tier():
    """The current tier: 'fast' or 'reference'."""
    return _tier


class _Restore(contextlib.AbstractContextManager):
    def __init__(self, undo):
        self._undo = undo

    def __exit__(self, *exc):
        self._undo()
        return False


def use(name):
    """Run every kernel on tier ``name`` ('fast' or 'reference') from now on. The return value
    also works as a context manager that restores the previous tier::

        with minidl.kernels.use("reference"):
            train(...)
    """
    global _tier
    previous, _tier = _tier, _check_tier(name, "kernels.use")

    def undo():
        global _tier
        _tier = previous
    return _Restore(undo)


def force(kernel, implementation):
    """Pin ``kernel`` (a name in ``KERNELS``) to ``implementation`` on the fast tier (None:
    back to its rule). Works as a context manager too, restoring the previous setting."""
    if kernel not in KERNELS:
        raise ValueError(f"kernels.force: unknown kernel {kernel!r}; known: {', '.join(KERNELS)}")
    k = KERNELS[kernel]
    if implementation is not None and implementation not in k.implementations:
        raise ValueError(f"kernels.force: kernel {kernel!r} has no implementation {implementation!r}; "
                         f"it has {', '.join(map(repr, k.implementations))}")
    previous, k.forced = k.forced, implementation

    def undo():
        k.forced = previous
    return _Restore(undo)


def describe():
    """One line per kernel: its implementations and the tier, for ``python -m minidl info``."""
    lines = [f"kernel tier: {_tier} (MINIDL_KERNELS / minidl.kernels.use)"]
    for k in KERNELS.values():
        forced = f" (forced: {k.forced})" if k.forced else ""
        lines.append(f"  {k.name}: {', '.join(k.implementations)}{forced}")
    return lines
