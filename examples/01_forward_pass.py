"""Example 1: a forward and a backward pass through a tiny ReLU network, step by step.

The network of the lecture: x = (1.5, -1.0, 1.3), three layers without bias,
h1 = relu(W1 x), h2 = relu(W2 h1), f = relu(W3 h2). Expected: f(x) = 0.489.

Run: python examples/01_forward_pass.py
"""
import numpy as np

import minidl as md
import minidl.functional as F

x = md.tensor([1.5, -1.0, 1.3], requires_grad=True)
W1 = md.tensor([[0.3, 0.4, 0.2], [0.3, 0.5, 0.2], [0.8, 1.0, -1.0]], requires_grad=True)
W2 = md.tensor([[0.0, -1.2, 0.5], [0.9, 1.0, 0.0]], requires_grad=True)
W3 = md.tensor([[-1.0, 1.0]], requires_grad=True)

np.set_printoptions(precision=4, suppress=True)
z1 = W1 @ x
print("z1 = W1 x          =", z1.numpy())
h1 = F.relu(z1)
print("h1 = relu(z1)      =", h1.numpy(), " (the negative pre-activation is cut to 0)")
z2 = W2 @ h1
print("z2 = W2 h1         =", z2.numpy())
h2 = F.relu(z2)
print("h2 = relu(z2)      =", h2.numpy())
f = F.relu(W3 @ h2)
print("f  = relu(W3 h2)   =", f.numpy(), f"-> f(x) = {f.sum().item():.3f}")

# Backward: the chain rule from f down to every weight and to the input.
f.sum().backward()
print("\ndf/dW3 = h2^T (where f > 0)        =", W3.grad.numpy())
print("df/dW2 = (W3^T * relu'(z2)) h1^T    =\n", W2.grad.numpy())
print("df/dW1 =\n", W1.grad.numpy())
print("df/dx  =", x.grad.numpy())
