"""Optimizer base: a list of parameters, a learning rate, and per-parameter state."""
from .. import backend
from ..validation import check_number


class Optimizer:
    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        self.lr = check_number(f"{type(self).__name__}: lr", lr, minimum=0, strict=True)
        self.state = [{} for _ in self.params]
        self.steps = 0

    def zero_grad(self):
        for p in self.params:
            p.grad = None

    def step(self):
        self.steps += 1
        for p, state in zip(self.params, self.state):
            if p.grad is not None:
                self.update(p, p.grad.data, state)

    def update(self, param, grad, state):
        raise NotImplementedError

    def state_dict(self):
        """Hyper-parameters and per-parameter buffers (host arrays), for checkpoints."""
        out = {"lr": self.lr, "steps": self.steps}
        for i, state in enumerate(self.state):
            for k, v in state.items():
                out[f"{i}.{k}"] = backend.to_numpy(v).copy()  # a snapshot: updates are in place
        return out

    def load_state_dict(self, state):
        self.lr = float(state["lr"])
        self.steps = int(state["steps"])
        self.state = [{} for _ in self.params]
        for key, value in state.items():
            if key in ("lr", "steps"):
                continue
            i, name = key.split(".", 1)
            p = self.params[int(i)]
            self.state[int(i)][name] = backend.to_device(value, p.device).astype(p.dtype)
