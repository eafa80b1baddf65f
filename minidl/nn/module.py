"""Module: a layer that owns parameters (trained), buffers (state such as running means)
and sub-modules, found by walking its attributes in definition order."""
import contextlib
import inspect
from collections import OrderedDict

import numpy

from .. import backend
from ..tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight of a Module (requires_grad by default)."""

    def __init__(self, data, requires_grad=True):
        if isinstance(data, Tensor):
            data = data.array
        super().__init__(data, requires_grad=requires_grad)


class Module:
    """Base class of layers and models. Subclasses assign Parameters, buffers (via
    :meth:`register_buffer`) and sub-Modules as attributes and implement ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "training", True)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} must implement forward()")

    def __call__(self, *args, **kwargs):
        for i, a in enumerate(args):
            if backend.is_array(a):  # as PyTorch: autograd needs a Tensor, and a quiet copy hides the device
                raise TypeError(self._raw_array_message(i, a))
        return self.forward(*args, **kwargs)

    def _raw_array_message(self, position, array):
        names = [n for n in inspect.signature(self.forward).parameters if n not in ("args", "kwargs")]
        name = names[position] if position < len(names) else f"argument {position}"
        return (f"{type(self).__name__}: {name}: expected a minidl Tensor, got a {type(array).__module__}."
                f"{type(array).__name__} of shape {tuple(array.shape)} (wrap it: minidl.tensor(x))")

    def __setattr__(self, name, value):
        if "_buffers" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}.__init__ must call super().__init__() first")
        if name in self._buffers:  # ``self.mean = ...`` replaces a registered buffer
            self.register_buffer(name, value)
            return
        object.__setattr__(self, name, value)

    def __getattr__(self, name):
        """A registered buffer read as an attribute (``bn.running_mean``, ``self.mean``): a
        Tensor sharing the buffer's memory, as in PyTorch. Called only when ``name`` is no
        ordinary attribute."""
        buffers = self.__dict__.get("_buffers")
        if buffers is not None and name in buffers:
            value = buffers[name]
            return None if value is None else Tensor(value)
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    # --- traversal --------------------------------------------------------------------------
    def named_children(self):
        for name, value in self.__dict__.items():
            if isinstance(value, Module):
                yield name, value

    def children(self):
        return (m for _, m in self.named_children())

    def named_modules(self, prefix=""):
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return (m for _, m in self.named_modules())

    def named_parameters(self, prefix=""):
        for name, value in self.__dict__.items():
            if isinstance(value, Parameter):
                yield (f"{prefix}.{name}" if prefix else name), value
        for name, child in self.named_children():
            yield from child.named_parameters(f"{prefix}.{name}" if prefix else name)

    def parameters(self):
        """Each Parameter once, even when shared by several layers (tied weights), so that an
        optimizer updates it once per step."""
        unique = {}
        for _, p in self.named_parameters():
            unique.setdefault(id(p), p)
        return list(unique.values())

    def apply(self, fn):
        """Call ``fn(module)`` on every sub-module (children first) and on self; returns self."""
        for child in self.children():
            child.apply(fn)
        fn(self)
        return self

    def register_buffer(self, name, array, persistent=True):
        """Keep ``array`` (an array or a Tensor, stored as its array) as state saved with the
        model but not trained (e.g. running means); it reads back as ``self.<name>``, a
        Tensor. ``persistent=False`` is accepted; the buffer is still saved."""
        if isinstance(array, Tensor):
            array = array.array
        elif not backend.is_array(array):
            raise TypeError(f"register_buffer({name!r}): expected a Tensor or an array, got {type(array).__name__}")
        self._buffers[name] = array

    def named_buffers(self, prefix=""):
        for name, value in self._buffers.items():
            yield (f"{prefix}.{name}" if prefix else name), value
        for name, child in self.named_children():
            yield from child.named_buffers(f"{prefix}.{name}" if prefix else name)

    # --- modes and devices ------------------------------------------------------------------
    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    @contextlib.contextmanager
    def mode(self, training=None, requires_grad=None):
        """Within the ``with`` block every sub-module is in ``training`` mode and every
        parameter has ``requires_grad`` (None leaves that one as it is); afterwards each
        sub-module gets back its own mode and each parameter its own flag, not the root's.
        ``with model.mode(training=False, requires_grad=False):`` is how attacks and
        evaluation loops run a model that may be training, with a frozen layer inside."""
        modes = [(m, m.training) for m in self.modules()]
        params = self.parameters()
        flags = [p.requires_grad for p in params]
        if training is not None:
            self.train(training)
        if requires_grad is not None:
            for p in params:
                p.requires_grad = requires_grad
        try:
            yield self
        finally:
            for p, flag in zip(params, flags):
                p.requires_grad = flag
            for m, was in modes:
                object.__setattr__(m, "training", was)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def to(self, device=None, dtype=None):
        """Move every parameter and buffer to ``device`` in place; returns self. PyTorch's
        ``model.to(dtype)`` is not supported (a clear error): minidl models are float32."""
        if dtype is not None or device is not None and not isinstance(device, str):
            raise TypeError(f"Module.to: expected a device name such as 'cpu' or 'cuda', got "
                            f"{dtype if dtype is not None else device!r} (changing a model's dtype is not supported)")
        device = backend.normalize_device(device)
        for m in self.modules():
            for name, value in list(m.__dict__.items()):
                if isinstance(value, Parameter) and value.device != device:
                    value.array = backend.to_device(value.array, device)
                    if value.grad is not None:
                        value.grad = Tensor(backend.to_device(value.grad.array, device))
            for name, value in list(m._buffers.items()):
                m._buffers[name] = backend.to_device(value, device)
        return self

    def cuda(self, device=None):
        """``to('cuda')`` (``device`` may name one GPU; minidl uses CuPy's current one)."""
        return self.to("cuda")

    def cpu(self):
        return self.to("cpu")

    @property
    def device(self):
        params = self.parameters()
        return params[0].device if params else "cpu"

    # --- state ------------------------------------------------------------------------------
    def state_dict(self):
        """Parameters and buffers by dotted name, as host NumPy arrays (copies), in PyTorch's
        order: each module's parameters, then its buffers, then its children's."""
        state = OrderedDict()
        for prefix, m in self.named_modules():
            dot = f"{prefix}." if prefix else ""
            for k, v in m.__dict__.items():
                if isinstance(v, Parameter):
                    state[dot + k] = v.numpy().copy()
            for k, b in m._buffers.items():
                state[dot + k] = backend.to_numpy(b).copy()
        return state

    _optional_state = ()  # buffer names that may be absent from a state dict (old checkpoints)

    def load_state_dict(self, state, strict=True):
        """Copy values from ``state`` (arrays or Tensors by dotted name, as ``state_dict`` or
        PyTorch's ``state_dict`` write them) into this module. Missing, unexpected or
        mis-shaped keys are all reported together and nothing is changed. With
        ``strict=False`` missing and unexpected keys are skipped (shapes are still checked)
        and returned as ``(missing, unexpected)``."""
        if not isinstance(state, dict):
            raise TypeError(f"load_state_dict: state must be a dict of arrays, got {type(state).__name__}")
        targets = dict(self.named_parameters())
        buffers = {name: (m, key) for prefix, m in self.named_modules()
                   for key in m._buffers for name in [f"{prefix}.{key}" if prefix else key]}
        expected = set(targets) | set(buffers)
        optional = {name for name, (m, key) in buffers.items() if key in m._optional_state}
        missing = sorted(expected - set(state) - optional)
        unexpected = sorted(set(state) - expected)
        wrong = []
        for name in sorted(expected & set(state)):
            have = targets[name].shape if name in targets else buffers[name][0]._buffers[buffers[name][1]].shape
            got = tuple(numpy.shape(state[name]))
            if got != tuple(have):
                wrong.append(f"{name}: expected {tuple(have)}, got {got}")
        if (strict and (missing or unexpected)) or wrong:
            parts = []
            if missing and strict:
                parts.append(f"missing keys {missing}")
            if unexpected and strict:
                parts.append(f"unexpected keys {unexpected}")
            if wrong:
                parts.append("mis-shaped keys [" + "; ".join(wrong) + "]")
            raise KeyError(f"load_state_dict({type(self).__name__}): " + ", ".join(parts))
        # Every value is converted before any is assigned, so that a bad one changes nothing.
        converted = {}
        for name in sorted(expected & set(state)):
            old = targets[name].array if name in targets else buffers[name][0]._buffers[buffers[name][1]]
            converted[name] = self._state_value(name, state[name], old)
        for name, p in targets.items():
            if name in converted:
                p.array = converted[name]
        for name, (m, key) in buffers.items():
            if name in converted:
                m._buffers[key] = converted[name]
        return self if strict else (missing, unexpected)

    def _state_value(self, name, value, old):
        """``value`` (the state entry ``name``) as an array like ``old`` (its dtype and device),
        or TypeError naming the entry when it holds no numbers."""
        try:
            array = numpy.asarray(value)
        except (TypeError, ValueError) as e:
            raise TypeError(f"load_state_dict({type(self).__name__}): {name!r}: expected a numeric array, "
                            f"got {type(value).__name__} ({e})") from None
        if array.dtype.kind not in "biuf":
            raise TypeError(f"load_state_dict({type(self).__name__}): {name!r}: expected a numeric array, "
                            f"got dtype {array.dtype}")
        return backend.to_device(array.astype(old.dtype), backend.device_of(old))

    def extra_repr(self):
        return ""

    def __repr__(self):
        children = list(self.named_children())
        if not children:
            return f"{type(self).__name__}({self.extra_repr()})"
        lines = [f"  ({n}): " + repr(m).replace("\n", "\n  ") for n, m in children]
        return f"{type(self).__name__}(\n" + "\n".join(lines) + "\n)"


class Sequential(Module):
    """Applies its modules in order: Sequential(a, b)(x) = b(a(x))."""

    def __init__(self, *modules):
        super().__init__()
        named = modules[0].items() if len(modules) == 1 and isinstance(modules[0], OrderedDict) \
            else ((str(i), m) for i, m in enumerate(modules))  # Sequential(OrderedDict(name=module))
        for name, m in named:
            if not isinstance(m, Module):
                raise TypeError(f"Sequential: argument {name} is a {type(m).__name__}, not a Module")
            setattr(self, name, m)

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i):
        return list(self.children())[i]

    def __len__(self):
        return len(list(self.children()))

    def forward(self, x):
        for m in self.children():
            x = m(x)
        return x


class ModuleList(Module):
    """A list of Modules, registered as children ``0``, ``1``, ... (their parameters are found)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self)), module)
        return self

    def extend(self, modules):
        for m in modules:
            self.append(m)
        return self

    def __iter__(self):
        return iter(self.children())

    def __getitem__(self, i):
        items = list(self.children())
        return ModuleList(items[i]) if isinstance(i, slice) else items[i]

    def __len__(self):
        return sum(1 for _ in self.children())

    def forward(self, *args):
        raise NotImplementedError("ModuleList has no forward(); iterate over its modules")


class ModuleDict(Module):
    """A dict of Modules by name, registered as children of those names."""

    def __init__(self, modules=None):
        super().__init__()
        for k, m in dict(modules or {}).items():
            self[k] = m

    def __setitem__(self, key, module):
        if not isinstance(key, str) or not key.isidentifier() or key in dir(Module):
            raise KeyError(f"ModuleDict: key must be an identifier that is no Module attribute, got {key!r}")
        if not isinstance(module, Module):
            raise TypeError(f"ModuleDict: expected a Module for {key!r}, got {type(module).__name__}")
        setattr(self, key, module)

    def __getitem__(self, key):
        children = dict(self.named_children())
        if key not in children:
            raise KeyError(f"ModuleDict: no module {key!r}; have {sorted(children)}")
        return children[key]

    def __contains__(self, key):
        return key in dict(self.named_children())

    def __len__(self):
        return sum(1 for _ in self.children())

    def __iter__(self):
        return iter(self.keys())

    def keys(self):
        return [k for k, _ in self.named_children()]

    def values(self):
        return list(self.children())

    def items(self):
        return list(self.named_children())

    def forward(self, *args):
        raise NotImplementedError("ModuleDict has no forward(); index it by name")
