"""Losses: softmax cross-entropy (fused, stable) and mean squared error."""
from ..autograd import Function
from ..backend import get_array_module
from .activation import LogSoftmax, log_softmax_array
from .arithmetic import Sub

REDUCTIONS = ("mean", "sum", "none")


class CrossEntropy(Function):
    """loss_n = -log softmax(z_n)[y_n] = logsumexp(z_n) - z_n[y_n] for logits z (N, C) and
    integer targets y (N,), reduced by mean, sum or none.

    dL/dz_n = g_n * (softmax(z_n) - onehot(y_n))  (divided by N for the mean).
    Fusing softmax with the log avoids log(0) and the cancellation of a separate softmax.
    """
    reads_inputs = False

    def __init__(self, target, reduction="mean"):
        self.target, self.reduction = target, reduction

    def forward(self, z):
        xp = get_array_module(z)
        self.log_p = log_softmax_array(z, axis=1)
        rows = xp.arange(z.shape[0])
        losses = -self.log_p[rows, self.target]
        if self.reduction == "mean":
            return losses.mean()
        if self.reduction == "sum":
            return losses.sum()
        return losses

    def backward(self, g):
        xp = get_array_module(g)
        n = self.log_p.shape[0]
        grad = xp.exp(self.log_p)
        grad[xp.arange(n), self.target] -= 1
        if self.reduction == "mean":
            grad *= g / n
        elif self.reduction == "sum":
            grad *= g
        else:
            grad *= g[:, None]
        return (grad,)

    def backward_graph(self, g):
        xp = get_array_module(self.log_p)
        n = self.log_p.shape[0]
        # softmax(z) as a Tensor of the graph: exp of the log-softmax the forward pass computed
        log_p = self.intermediate_tensor(LogSoftmax, self.log_p, (0,), y=self.log_p, axis=1)
        onehot = xp.zeros(self.log_p.shape, self.log_p.dtype)
        onehot[xp.arange(n), self.target] = 1
        scale = g / n if self.reduction == "mean" else g if self.reduction == "sum" else g.reshape((n, 1))
        return ((log_p.exp() - onehot) * scale,)


class MSELoss(Function):
    """loss = reduce((a - b)^2);  dL/da = 2 (a - b) g (/ count for the mean), dL/db = -dL/da."""
    reads_inputs = False

    def __init__(self, reduction="mean"):
        self.reduction = reduction

    def forward(self, a, b):
        self.diff = a - b
        sq = self.diff * self.diff
        if self.reduction == "mean":
            return sq.mean()
        if self.reduction == "sum":
            return sq.sum()
        return sq

    def backward(self, g):
        scale = 2 * g
        if self.reduction == "mean":
            scale = scale / self.diff.size
        ga = self.diff * scale
        return (ga if self.needs_grad[0] else None, -ga if self.needs_grad[1] else None)

    def backward_graph(self, g):
        diff = self.intermediate_tensor(Sub, self.diff, (0, 1), shapes=self.input_shapes)
        scale = 2 * g
        if self.reduction == "mean":
            scale = scale / self.diff.size
        ga = diff * scale
        return (ga if self.needs_grad[0] else None, -ga if self.needs_grad[1] else None)
