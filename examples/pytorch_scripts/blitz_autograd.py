"""Autograd, in the style of the 60-minute blitz: requires_grad, grad_fn and next_functions,
backward of a scalar and of a vector (a vector-Jacobian product), no_grad and detach.
Written for minidl's porting harness."""
import json

import torch

x = torch.ones(2, 2, requires_grad=True)
y = x + 2
print(y.grad_fn)
z = y * y * 3
out = z.mean()
print(z, out)
out.backward()
grad_mean = x.grad.tolist()
graph_depth = 0
fn = out.grad_fn
while fn is not None and fn.next_functions:
    graph_depth += 1
    fn = fn.next_functions[0][0]

x = torch.tensor([0.5, -1.0, 2.0], requires_grad=True)
y = x * 2
steps = 0
while y.data.norm() < 1000:
    y = y * 2
    steps += 1
v = torch.tensor([0.1, 1.0, 0.0001], dtype=torch.float)
y.backward(v)
grad_vjp = x.grad.tolist()

print(x.requires_grad, (x ** 2).requires_grad)
with torch.no_grad():
    print((x ** 2).requires_grad)
    no_grad_flag = (x ** 2).requires_grad
d = x.detach()
eq = x.eq(d).all()

a = torch.tensor([2.0, 3.0], requires_grad=True)
b = torch.tensor([6.0, 4.0], requires_grad=True)
Q = 3 * a ** 3 - b ** 2
external_grad = torch.tensor([1.0, 1.0])
Q.backward(gradient=external_grad)
results = {
    "grad_mean": grad_mean, "graph_depth": graph_depth, "steps": steps, "grad_vjp": grad_vjp,
    "no_grad": no_grad_flag, "detach_equal": bool(eq), "a_grad": a.grad.tolist(), "b_grad": b.grad.tolist(),
    "leaf": [x.is_leaf, y.is_leaf, x.grad_fn is None],
}
print("RESULTS " + json.dumps(results))
