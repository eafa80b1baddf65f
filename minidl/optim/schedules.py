"""Learning-rate schedules. Each maps a step count to a learning rate and sets it on the
optimizer when ``step()`` is called (once per batch or per epoch, as the caller decides)."""
import math


class LRSchedule:
    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.base_lr = optimizer.lr
        self.count = 0
        optimizer.lr = self.lr_at(0)

    def lr_at(self, t):
        raise NotImplementedError

    def step(self):
        self.count += 1
        self.optimizer.lr = self.lr_at(self.count)
        return self.optimizer.lr

    def state_dict(self):
        return {"count": self.count, "base_lr": self.base_lr}

    def load_state_dict(self, state):
        self.count, self.base_lr = int(state["count"]), float(state["base_lr"])
        self.optimizer.lr = self.lr_at(self.count)


class StepLR(LRSchedule):
    """lr = base * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1):
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer)

    def lr_at(self, t):
        return self.base_lr * self.gamma ** (t // self.step_size)


class CosineLR(LRSchedule):
    """lr = min + (base - min) * (1 + cos(pi t / total)) / 2, reaching ``min_lr`` at t = total."""

    def __init__(self, optimizer, total_steps, min_lr=0.0):
        self.total, self.min_lr = total_steps, min_lr
        super().__init__(optimizer)

    def lr_at(self, t):
        t = min(t, self.total)
        return self.min_lr + (self.base_lr - self.min_lr) * (1 + math.cos(math.pi * t / self.total)) / 2


class CyclicLR(LRSchedule):
    """Triangular schedule: linear from ``low`` up to ``high`` at ``peak * total``, then linearly
    down to ``low`` at ``total`` (the one-cycle shape used by fast adversarial training).

    The rate after t calls of ``step()`` is the curve at t + ``offset``. With offset = 1 the
    k-th optimizer step (1-based) runs at curve(k), as in Wong et al.'s code, which sets the rate
    of batch i of epoch e to interp(e + (i + 1) / n) before stepping: the first step is not
    wasted at rate ``low`` and the last one runs at ``low``."""

    def __init__(self, optimizer, total_steps, high=None, low=0.0, peak=0.5, offset=0):
        self.total, self.low, self.peak, self.offset = total_steps, low, peak, offset
        self.high = optimizer.lr if high is None else high
        super().__init__(optimizer)

    def lr_at(self, t):
        t = min(t + self.offset, self.total)
        up = self.peak * self.total
        if t <= up:
            return self.low + (self.high - self.low) * t / max(up, 1e-12)
        return self.high - (self.high - self.low) * (t - up) / max(self.total - up, 1e-12)


class OneCycleLR(CyclicLR):
    """One cycle (Smith 2018): up from high/25 to high over the first 30%, down to ~0 after
    (to ``final``, by default high / 25 / 1e4 as in PyTorch's OneCycleLR)."""

    def __init__(self, optimizer, total_steps, high=None, peak=0.3, final=None):
        high = optimizer.lr if high is None else high
        self.final = high / 25 / 1e4 if final is None else final
        super().__init__(optimizer, total_steps, high=high, low=high / 25, peak=peak)

    def lr_at(self, t):
        t = min(t, self.total)
        up = self.peak * self.total
        if t <= up:
            return super().lr_at(t)
        return self.high - (self.high - self.final) * (t - up) / max(self.total - up, 1e-12)
