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
from .tensor import where, bool_
long, double, int, float, bool = int64, float64, int32, float32, bool_  # torch.long, torch.float, ...
from .torch_functions import (cat, clamp, clip, sign, abs, exp, log, sqrt, flatten, sum, mean, norm, max, min,
                              maximum, minimum, argmax, argmin, permute, unsqueeze, squeeze, numel, ones_like,
                              full_like, rand_like, randn_like, full, arange, linspace, eye, topk, sort, argsort,
                              std, var, nonzero, softmax, log_softmax, sigmoid, tanh, relu, matmul, mm, pow,
                              is_tensor, allclose, equal, from_numpy, empty, randint, randperm, add, sub,
                              mul, div, chunk, split)
from . import functional, nn, optim
from . import cuda, backends, utils
from .backend import Device as device

__all__ = ["Tensor", "tensor", "as_tensor", "zeros", "ones", "randn", "rand", "zeros_like", "concatenate",
           "stack", "manual_seed", "no_grad", "enable_grad", "is_grad_enabled", "cuda_available", "save", "load",
           "functional", "nn", "optim", "cuda", "backends", "device", "utils", "float32", "float64", "int32", "int64",
           # PyTorch's names (minidl.torch_functions)
           "where", "bool_", "long", "double", "int", "float", "bool", "cat", "clamp", "clip", "sign", "abs", "exp", "log", "sqrt", "flatten", "sum", "mean",
           "norm", "max", "min", "maximum", "minimum", "argmax", "argmin", "permute", "unsqueeze", "squeeze",
           "numel", "ones_like", "full_like", "rand_like", "randn_like", "full", "arange", "linspace", "eye",
           "topk", "sort", "argsort", "std", "var", "nonzero", "softmax", "log_softmax", "sigmoid", "tanh",
           "relu", "matmul", "mm", "pow", "is_tensor", "allclose", "equal", "from_numpy", "empty", "randint",
           "randperm", "add", "sub", "mul", "div", "chunk", "split"]
