"""Optimizer base: parameter groups (each with its own hyper-parameters, as PyTorch's
``param_groups``), per-parameter state, and the step loop."""
from .. import backend, version_counter
from ..validation import check_number


class Optimizer:
    """``params`` is an iterable of Parameters, or of dicts ``{"params": [...], "lr": ...}``
    whose missing hyper-parameters come from ``defaults``. Subclasses implement
    ``update(param, grad_array, state, group)``."""

    def __init__(self, params, defaults):
        name = type(self).__name__
        params = list(params)
        if not params:
            raise ValueError(f"{name}: got an empty parameter list")
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        self.param_groups = []
        for i, group in enumerate(groups):
            if not isinstance(group, dict) or "params" not in group:
                raise TypeError(f"{name}: param group {i} must be a dict with 'params', got {type(group).__name__}")
            group = dict(defaults, **group)
            group["params"] = list(group["params"])
            if not group["params"]:
                raise ValueError(f"{name}: param group {i} has no parameters")
            group["lr"] = check_number(f"{name}: lr" if len(groups) == 1 else f"{name}: param group {i} lr",
                                       group["lr"], minimum=0, strict=True)
            self.param_groups.append(group)
        self.params = [p for g in self.param_groups for p in g["params"]]
        self.defaults = defaults
        self.state = [{} for _ in self.params]
        self.steps = 0

    @property
    def lr(self):
        """The first group's learning rate; setting it sets every group's."""
        return self.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value):
        for g in self.param_groups:
            g["lr"] = value

    def zero_grad(self, set_to_none=True):
        for p in self.params:
            if set_to_none or p.grad is None:
                p.grad = None
            else:
                p.grad.array[...] = 0

    def step(self, closure=None):
        """One update of every parameter that has a gradient; ``closure`` (optional) recomputes
        and returns the loss first, as in PyTorch."""
        loss = closure() if closure is not None else None
        self.steps += 1
        i = 0
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    if p.grad.shape != p.shape:  # a gradient set by hand: refuse, never broadcast
                        raise ValueError(f"{type(self).__name__}.step: parameter {i} has shape {p.shape} but its "
                                         f".grad has shape {p.grad.shape}; expected the same shape")
                    self.update(p, p.grad.array, self.state[i], group)
                    version_counter.bump(p.array)  # a graph built before this step is stale
                i += 1
        return loss

    def update(self, param, grad, state, group):
        raise NotImplementedError

    def state_dict(self):
        """Hyper-parameters and per-parameter buffers (host arrays), for checkpoints."""
        out = {"lr": self.lr, "steps": self.steps, "group_lrs": [g["lr"] for g in self.param_groups]}
        for i, state in enumerate(self.state):
            for k, v in state.items():
                out[f"{i}.{k}"] = backend.to_numpy(v).copy()  # a snapshot: updates are in place
        return out

    def load_state_dict(self, state):
        self.lr = float(state["lr"])
        for g, lr in zip(self.param_groups, state.get("group_lrs", [])):
            g["lr"] = float(lr)
        self.steps = int(state["steps"])
        self.state = [{} for _ in self.params]
        for key, value in state.items():
            if key in ("lr", "steps", "group_lrs"):
                continue
            i, name = key.split(".", 1)
            p = self.params[int(i)]
            self.state[int(i)][name] = backend.to_device(value, p.device).astype(p.dtype)
