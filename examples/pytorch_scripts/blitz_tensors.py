"""Tensors, in the style of the 60-minute blitz: creation, operations, in place, indexing and
the NumPy bridge. Written for minidl's porting harness (tests/test_porting.py); runs under
PyTorch as it is and under minidl after `python -m minidl.port`."""
import json

import numpy as np
import torch

data = [[1, 2], [3, 4]]
x_data = torch.tensor(data)
np_array = np.array(data)
x_np = torch.from_numpy(np_array)
x_ones = torch.ones_like(x_data)
x_rand = torch.rand_like(x_data, dtype=torch.float)
shape = (2, 3,)
zeros_tensor = torch.zeros(shape)
print(f"Ones Tensor: \n {x_ones} \n")
print(f"Shape of tensor: {x_rand.shape}, datatype: {x_rand.dtype}, device: {x_rand.device}")

device = "cuda" if torch.cuda.is_available() else "cpu"
tensor = torch.ones(4, 4).to(device)
tensor[:, 1] = 0
print(f"First row: {tensor[0]}, first column: {tensor[:, 0]}, last column: {tensor[..., -1]}")
t1 = torch.cat([tensor, tensor, tensor], dim=1)
y1 = tensor @ tensor.T
y2 = tensor.matmul(tensor.T)
y3 = torch.rand_like(y1).sum()
z1 = tensor * tensor
z2 = tensor.mul(tensor)
agg = tensor.sum()
agg_item = agg.item()
tensor.add_(5)

t = torch.ones(5)
n = t.numpy()
t.add_(1)                      # the NumPy array shares the memory
n_after = n.tolist()
np.add(n, 1, out=n)            # and the other way round
x = torch.arange(12, dtype=torch.float32).view(3, 4)
y = x.view(-1, 6)
z = x.permute(1, 0).contiguous().reshape(2, 6)
vals, idx = x.max(dim=1)
top, top_i = x.topk(2, dim=1)
mask = x > 5
x_masked = x.clone()
x_masked[mask] = -1
rows = torch.where(x[:, 0] > 3)[0]
stats = [x.mean().item(), x.std().item(), x.var(dim=0).tolist(), x.norm().item()]

results = {
    "t1_shape": list(t1.shape), "y1": y1.tolist(), "y_equal": bool(torch.equal(y1, y2)),
    "z1": z1.sum().item(), "agg": agg_item, "after_add": tensor[0].tolist(), "n_after": n_after,
    "t_after": t.tolist(), "view": list(y.size()), "z": z.tolist(), "max": [vals.tolist(), idx.tolist()],
    "topk": [top.tolist(), top_i.tolist()], "masked": x_masked.tolist(), "rows": rows.tolist(), "stats": stats,
    "numel": x.numel(), "dim": x.dim(), "size1": x.size(1), "unsqueeze": list(x.unsqueeze(0).shape),
}
print("RESULTS " + json.dumps(results))
