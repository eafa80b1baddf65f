"""Loss modules (PyTorch's ``nn.CrossEntropyLoss`` and friends): each holds its options and
calls the function of the same name in ``minidl.functional``, where the math is stated.

``reduction`` is ``"mean"`` (default), ``"sum"`` or ``"none"``, checked when the module is
built so that a typo fails at construction, not at the first batch.
"""
from .. import functional as F
from ..ops.loss import REDUCTIONS
from .module import Module


class _Loss(Module):
    def __init__(self, reduction="mean"):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction must be one of {REDUCTIONS}, got {reduction!r}")
        self.reduction = reduction

    def extra_repr(self):
        return f"reduction={self.reduction!r}"


class CrossEntropyLoss(_Loss):
    """-log softmax(logits)[n, target[n]] (``F.cross_entropy``); logits (N, C), target (N,)."""

    def __init__(self, reduction="mean", label_smoothing=0.0):
        super().__init__(reduction)
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, reduction=self.reduction, label_smoothing=self.label_smoothing)


class NLLLoss(_Loss):
    """-w[t_n] input[n, t_n] for log-probabilities ``input`` (``F.nll_loss``)."""

    def __init__(self, weight=None, reduction="mean", ignore_index=-100):
        super().__init__(reduction)
        self.weight, self.ignore_index = weight, ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, reduction=self.reduction,
                          ignore_index=self.ignore_index)


class MSELoss(_Loss):
    """(input - target)^2 (``F.mse_loss``)."""

    def forward(self, input, target):
        return F.mse_loss(input, target, reduction=self.reduction)


class BCELoss(_Loss):
    """-[y log p + (1 - y) log(1 - p)] for probabilities p (``F.binary_cross_entropy``)."""

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, reduction=self.reduction)


class BCEWithLogitsLoss(_Loss):
    """BCELoss of sigmoid(input), computed stably (``F.binary_cross_entropy_with_logits``)."""

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, reduction=self.reduction)
