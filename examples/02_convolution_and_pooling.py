"""Example 2: convolution and pooling on the lecture's small images, one window at a time.

conv:   (x * k)[i, j] = sum_pq x[i+p, j+q] k[p, q]  (cross-correlation, stride 1, no padding)
max:    y[i, j] = max over the 2x2 window at (i, j)   (stride 1: windows overlap)
avg:    y[i, j] = mean over the 2x2 window at (i, j)

Run: python examples/02_convolution_and_pooling.py
"""
import numpy as np

import minidl as md
import minidl.functional as F

image = np.array([[1, 0.5, 20], [0.25, 0, 0], [0, 0, 20]])
kernel = np.array([[1, 0.2], [0.2, 0]])
print("image:\n", image, "\nkernel:\n", kernel)
for i in range(2):
    for j in range(2):
        window = image[i:i + 2, j:j + 2]
        terms = " + ".join(f"{a:g}*{b:g}" for a, b in zip(window.ravel(), kernel.ravel()))
        print(f"y[{i},{j}] = {terms} = {(window * kernel).sum():g}")
x = md.tensor(image[None, None], dtype="float64", requires_grad=True)
k = md.tensor(kernel[None, None], dtype="float64", requires_grad=True)
y = F.conv2d(x, k)
print("F.conv2d ->\n", y.numpy()[0, 0], " (expected [[1.15, 4.5], [0.25, 0]])")
y.sum().backward()
print("d sum(y) / d kernel = sum of the windows:\n", k.grad.numpy()[0, 0])

pool_in = np.array([[4, 10, 5], [5, 7, 4], [-2, 3, 7]], dtype=np.float64)
print("\npooling input:\n", pool_in)
p = md.tensor(pool_in[None, None], requires_grad=True)
mx = F.max_pool2d(p, kernel_size=2, stride=1)
av = F.avg_pool2d(p, kernel_size=2, stride=1)
print("max pool 2x2, stride 1 ->\n", mx.numpy()[0, 0], " (expected [[10, 10], [7, 7]])")
print("avg pool 2x2, stride 1 ->\n", av.numpy()[0, 0], " (expected [[6.5, 6.5], [3.25, 5.25]])")
mx.sum().backward()
print("gradient of sum(max pool): each window sends 1 to its maximum; 10 wins two windows:\n",
      p.grad.numpy()[0, 0])
