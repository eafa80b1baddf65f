"""``md.backends.cudnn``: PyTorch's cuDNN switches mapped onto minidl's own kernels.

``benchmark = True`` makes convolutions choose their algorithm by timing the candidates on
the first call of each shape (minidl's ``auto`` mode, :mod:`minidl.kernels.runtime.autotune`);
``benchmark = False`` uses the fixed rule from the shapes (``rule``), which gives the same
result on every run. Reading it says whether the current mode times. ``deterministic`` and
``enabled`` are accepted and kept: minidl's kernels are deterministic whatever they say.

It is a module (``import torch.backends.cudnn as cudnn`` renames to an import of it) whose
``benchmark`` attribute is a property, so that setting it reaches the tuner.
"""
import sys
import types

from ..kernels.runtime import autotune

deterministic = False
enabled = True


def is_available():
    return False  # minidl's GPU convolutions are its own CUDA kernels, not cuDNN


class _Module(types.ModuleType):
    @property
    def benchmark(self):
        return autotune.get_conv_algorithm() == "auto"

    @benchmark.setter
    def benchmark(self, flag):
        autotune.set_conv_algorithm("auto" if flag else "rule")


sys.modules[__name__].__class__ = _Module
