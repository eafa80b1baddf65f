"""minidl: a deep-learning engine written from scratch on NumPy (CPU) and CuPy (GPU),
with an adversarial-robustness toolkit on top.

    import minidl as md
    import minidl.functional as F
    x = md.tensor([[1.0, 2.0]], requires_grad=True)
"""
__version__ = "0.1.0"

from .backend import cuda_available, manual_seed
from .autograd import no_grad, enable_grad, is_grad_enabled
from .tensor import (Tensor, tensor, as_tensor, zeros, ones, randn, rand, zeros_like, concatenate, stack,
                     float32, float64, int32, int64)
from .serialization import save, load
from . import functional, nn, optim

__all__ = ["Tensor", "tensor", "as_tensor", "zeros", "ones", "randn", "rand", "zeros_like", "concatenate",
           "stack", "manual_seed", "no_grad", "enable_grad", "is_grad_enabled", "cuda_available", "save", "load",
           "functional", "nn", "optim", "float32", "float64", "int32", "int64"]
