"""Binary cross-entropy on logits, fused with the sigmoid so that it never overflows."""
from ..autograd import Function
from ..backend import get_array_module


class BCEWithLogits(Function):
    """loss = max(z, 0) - z y + log(1 + e^-|z|)  (= -[y log s(z) + (1-y) log(1-s(z))], s the
    sigmoid, without overflow);  dL/dz = g (s(z) - y), dL/dy = -g z."""

    def forward(self, z, y):
        xp = get_array_module(z)
        self.z, self.y = z, y
        return xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))

    def backward(self, g):
        xp = get_array_module(g)
        z = self.z
        e = xp.exp(-xp.abs(z))
        s = xp.where(z >= 0, 1 / (1 + e), e / (1 + e))
        return (g * (s - self.y) if self.needs_grad[0] else None,
                -g * z if self.needs_grad[1] else None)

    def backward_graph(self, g):
        z, y = self.input_tensor(0, self.z), self.input_tensor(1, self.y)
        return (g * (z.sigmoid() - y) if self.needs_grad[0] else None,
                -g * z if self.needs_grad[1] else None)
