"""Learning-rate schedulers with PyTorch's names and semantics (``minidl.optim.lr_scheduler``).

A scheduler reads each parameter group's learning rate as its base (``initial_lr``), sets
the rate for step 0 when it is made, and ``step()`` (called by the user, once per batch or
per epoch) advances ``last_epoch`` by one and sets the rate for it. Every rate is computed
in closed form from ``last_epoch``, so a scheduler restored with ``load_state_dict``
continues exactly.
"""
import bisect
import math


class LRScheduler:
    def __init__(self, optimizer, last_epoch=-1):
        self.optimizer = optimizer
        for g in optimizer.param_groups:
            if last_epoch == -1:
                g.setdefault("initial_lr", g["lr"])
            elif "initial_lr" not in g:
                raise KeyError(f"{type(self).__name__}: last_epoch={last_epoch} needs 'initial_lr' in every "
                               "param group (set when a scheduler was first made)")
        self.base_lrs = [g["initial_lr"] for g in optimizer.param_groups]
        self.last_epoch = last_epoch
        self.step()

    def lr_at(self, base_lr, t, group_index):
        """The rate of a group with base rate ``base_lr`` at step ``t``."""
        raise NotImplementedError

    def _apply(self):
        for i, (g, base) in enumerate(zip(self.optimizer.param_groups, self.base_lrs)):
            g["lr"] = self.lr_at(base, self.last_epoch, i)
        self._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def step(self):
        self.last_epoch += 1
        self._apply()
        return self._last_lr[0]

    def get_last_lr(self):
        return list(self._last_lr)

    def state_dict(self):
        return {"last_epoch": self.last_epoch, "base_lrs": list(self.base_lrs)}

    def load_state_dict(self, state):
        if "count" in state:  # checkpoints of minidl's earlier schedules: only the step count carries over
            state = {"last_epoch": state["count"], "base_lrs": self.base_lrs}
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = [float(b) for b in state["base_lrs"]]
        self._apply()


class LambdaLR(LRScheduler):
    """lr = base * lr_lambda(t); ``lr_lambda`` may be a list, one function per group."""

    def __init__(self, optimizer, lr_lambda, last_epoch=-1):
        n = len(optimizer.param_groups)
        self.lr_lambdas = list(lr_lambda) if isinstance(lr_lambda, (list, tuple)) else [lr_lambda] * n
        if len(self.lr_lambdas) != n:
            raise ValueError(f"LambdaLR: expected {n} lr_lambdas, got {len(self.lr_lambdas)}")
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, t, i):
        return base * self.lr_lambdas[i](t)


class StepLR(LRScheduler):
    """lr = base * gamma ** (t // step_size)."""

    def __init__(self, optimizer, step_size, gamma=0.1, last_epoch=-1):
        if not isinstance(step_size, int) or step_size < 1:
            raise ValueError(f"StepLR: step_size must be an int >= 1, got {step_size!r}")
        self.step_size, self.gamma = step_size, gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, t, i):
        return base * self.gamma ** (t // self.step_size)


class MultiStepLR(LRScheduler):
    """lr = base * gamma ** (number of milestones <= t)."""

    def __init__(self, optimizer, milestones, gamma=0.1, last_epoch=-1):
        self.milestones, self.gamma = sorted(milestones), gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, t, i):
        return base * self.gamma ** bisect.bisect_right(self.milestones, t)


class ExponentialLR(LRScheduler):
    """lr = base * gamma ** t."""

    def __init__(self, optimizer, gamma, last_epoch=-1):
        self.gamma = gamma
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, t, i):
        return base * self.gamma ** t


class CosineAnnealingLR(LRScheduler):
    """lr = eta_min + (base - eta_min) (1 + cos(pi t / T_max)) / 2: eta_min at t = T_max (and,
    as PyTorch's, rising again after it)."""

    def __init__(self, optimizer, T_max, eta_min=0.0, last_epoch=-1):
        if not T_max > 0:
            raise ValueError(f"CosineAnnealingLR: T_max must be > 0, got {T_max!r}")
        self.T_max, self.eta_min = T_max, eta_min
        super().__init__(optimizer, last_epoch)

    def lr_at(self, base, t, i):
        return self.eta_min + (base - self.eta_min) * (1 + math.cos(math.pi * t / self.T_max)) / 2


def _momentum_key(group):
    return "momentum" if "momentum" in group else ("betas" if "betas" in group else None)


def _set_momentum(group, value):
    if "momentum" in group:
        group["momentum"] = value
    else:
        group["betas"] = (value,) + tuple(group["betas"][1:])


class CyclicLR(LRScheduler):
    """Triangular cycles between base_lr and max_lr (Smith, 2017): up over ``step_size_up``
    steps, down over ``step_size_down`` (default: the same). ``mode`` "triangular2" halves the
    amplitude every cycle, "exp_range" scales it by gamma ** t. With ``cycle_momentum`` the
    momentum (or Adam's beta1) moves inversely, between max_momentum and base_momentum."""

    def __init__(self, optimizer, base_lr, max_lr, step_size_up=2000, step_size_down=None, mode="triangular",
                 gamma=1.0, scale_fn=None, scale_mode="cycle", cycle_momentum=True, base_momentum=0.8,
                 max_momentum=0.9, last_epoch=-1):
        n = len(optimizer.param_groups)
        self.max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * n
        base_lrs = list(base_lr) if isinstance(base_lr, (list, tuple)) else [base_lr] * n
        if last_epoch == -1:
            for g, b in zip(optimizer.param_groups, base_lrs):
                g["lr"] = g["initial_lr"] = b
        up = float(step_size_up)
        down = float(step_size_down) if step_size_down is not None else up
        if not up > 0 or not down >= 0:
            raise ValueError(f"CyclicLR: step sizes must be > 0, got up={step_size_up!r}, down={step_size_down!r}")
        self.total_size, self.step_ratio = up + down, up / (up + down)
        if mode not in ("triangular", "triangular2", "exp_range") and scale_fn is None:
            raise ValueError(f"CyclicLR: mode must be 'triangular', 'triangular2' or 'exp_range', got {mode!r}")
        self.mode, self.gamma, self.scale_mode = mode, gamma, scale_mode
        if scale_fn is None:
            self.scale_fn = {"triangular": lambda x: 1.0, "triangular2": lambda x: 1 / 2.0 ** (x - 1),
                             "exp_range": lambda x: gamma ** x}[mode]
            self.scale_mode = "iterations" if mode == "exp_range" else "cycle"
        else:
            self.scale_fn = scale_fn
        self.cycle_momentum = cycle_momentum
        if cycle_momentum:
            if any(_momentum_key(g) is None for g in optimizer.param_groups):
                raise ValueError("CyclicLR: cycle_momentum needs an optimizer with momentum or betas")
            self.base_momentum, self.max_momentum = base_momentum, max_momentum
        super().__init__(optimizer, last_epoch)

    def _scale(self, t):
        cycle = math.floor(1 + t / self.total_size)
        x = 1.0 + t / self.total_size - cycle
        factor = x / self.step_ratio if x <= self.step_ratio else (x - 1) / (self.step_ratio - 1)
        return factor, self.scale_fn(cycle if self.scale_mode == "cycle" else t)

    def lr_at(self, base, t, i):
        factor, scale = self._scale(t)
        return base + (self.max_lrs[i] - base) * factor * scale

    def _apply(self):
        super()._apply()
        if self.cycle_momentum:
            factor, scale = self._scale(self.last_epoch)
            for g in self.optimizer.param_groups:
                _set_momentum(g, self.max_momentum - (self.max_momentum - self.base_momentum) * factor * scale)


class OneCycleLR(LRScheduler):
    """One cycle (Smith and Topin, 2019): from max_lr / div_factor up to max_lr over the first
    ``pct_start`` of ``total_steps``, then down to max_lr / div_factor / final_div_factor,
    annealed by cosine (or linearly). With ``cycle_momentum`` the momentum (or beta1) goes the
    other way, from max_momentum to base_momentum and back. Stepping past total_steps is an error."""

    def __init__(self, optimizer, max_lr, total_steps=None, epochs=None, steps_per_epoch=None, pct_start=0.3,
                 anneal_strategy="cos", cycle_momentum=True, base_momentum=0.85, max_momentum=0.95,
                 div_factor=25.0, final_div_factor=1e4, three_phase=False, last_epoch=-1):
        if total_steps is None:
            if epochs is None or steps_per_epoch is None:
                raise ValueError("OneCycleLR: give total_steps, or epochs and steps_per_epoch")
            total_steps = epochs * steps_per_epoch
        if not isinstance(total_steps, int) or total_steps < 1:
            raise ValueError(f"OneCycleLR: total_steps must be an int >= 1, got {total_steps!r}")
        if not 0 <= pct_start <= 1:
            raise ValueError(f"OneCycleLR: pct_start must be in [0, 1], got {pct_start!r}")
        if anneal_strategy not in ("cos", "linear"):
            raise ValueError(f"OneCycleLR: anneal_strategy must be 'cos' or 'linear', got {anneal_strategy!r}")
        n = len(optimizer.param_groups)
        max_lrs = list(max_lr) if isinstance(max_lr, (list, tuple)) else [max_lr] * n
        self.total_steps = total_steps
        up = float(pct_start * total_steps) - 1
        if three_phase:
            self.phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (2 * up, "max_lr", "initial_lr", "base_momentum", "max_momentum"),
                           (total_steps - 1, "initial_lr", "min_lr", "max_momentum", "max_momentum")]
        else:
            self.phases = [(up, "initial_lr", "max_lr", "max_momentum", "base_momentum"),
                           (total_steps - 1, "max_lr", "min_lr", "base_momentum", "max_momentum")]
        self.anneal = self._cos if anneal_strategy == "cos" else self._linear
        self.cycle_momentum = cycle_momentum
        if cycle_momentum and any(_momentum_key(g) is None for g in optimizer.param_groups):
            raise ValueError("OneCycleLR: cycle_momentum needs an optimizer with momentum or betas "
                             "(pass cycle_momentum=False)")
        self.points = []
        for g, top in zip(optimizer.param_groups, max_lrs):
            p = {"initial_lr": top / div_factor, "max_lr": top, "min_lr": top / div_factor / final_div_factor,
                 "max_momentum": max_momentum, "base_momentum": base_momentum}
            self.points.append(p)
            if last_epoch == -1:
                g["initial_lr"] = p["initial_lr"]
        super().__init__(optimizer, last_epoch)

    @staticmethod
    def _cos(start, end, pct):
        return end + (start - end) / 2.0 * (math.cos(math.pi * pct) + 1)

    @staticmethod
    def _linear(start, end, pct):
        return (end - start) * pct + start

    def _at(self, t, point, lr):
        if t > self.total_steps:
            raise ValueError(f"OneCycleLR: stepped {t} times, more than total_steps={self.total_steps}")
        start = 0.0
        for i, (end, a, b, ma, mb) in enumerate(self.phases):
            if t <= end or i == len(self.phases) - 1:
                pct = (t - start) / (end - start) if end != start else 1.0
                return self.anneal(point[a], point[b], pct) if lr else self.anneal(point[ma], point[mb], pct)
            start = end

    def lr_at(self, base, t, i):
        return self._at(t, self.points[i], lr=True)

    def _apply(self):
        super()._apply()
        if self.cycle_momentum:
            for g, point in zip(self.optimizer.param_groups, self.points):
                _set_momentum(g, self._at(self.last_epoch, point, lr=False))


_LRScheduler = LRScheduler
