"""Training-step time of a zoo model in minidl and in the same network in PyTorch, in one run.

    python benchmarks/bench_models.py --model madry_mnist|cifar_cnn|preact_resnet18 [--batch 128]
                                      [--device cpu|cuda] [--repeat 5]

A step is forward, cross-entropy, backward and SGD with momentum 0.9, float32, on random inputs
of the model's dataset shape. The two libraries are timed in alternating rounds (see
``common.paired_best_times``). The last line is ``json: {...}`` with the figures, for
``gpu_validate.py``.
"""
import json
import os
import sys

# BLAS thread counts are read when NumPy loads, so --threads must act before the import.
if "--threads" in sys.argv:
    _n = sys.argv[sys.argv.index("--threads") + 1]
    for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = _n

import numpy  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import minidl as md  # noqa: E402
import minidl.functional as F  # noqa: E402
from minidl import backend  # noqa: E402
from minidl.models import get_model  # noqa: E402

from bench_attacks import torch_madry  # noqa: E402
from common import benchmark_parser, paired_best_times, try_import_torch  # noqa: E402

SHAPES = {"madry_mnist": (1, 28, 28), "cifar_cnn": (3, 32, 32), "preact_resnet18": (3, 32, 32)}


def torch_cifar_cnn(torch, width=24):
    """minidl.models.cifar_cnn in PyTorch."""
    nn = torch.nn
    layers, cin = [], 3
    for cout in (width, 2 * width, 4 * width):
        for c in (cin, cout):
            layers += [nn.Conv2d(c, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
        layers.append(nn.MaxPool2d(2))
        cin = cout
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


def torch_preact_resnet18(torch, width=64):
    """minidl.models.preact_resnet18 in PyTorch (same blocks, same shortcut rule)."""
    nn = torch.nn

    class Block(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.bn1, self.bn2 = nn.BatchNorm2d(cin), nn.BatchNorm2d(cout)
            self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
            self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
            self.shortcut = (nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
                             if stride != 1 or cin != cout else None)

        def forward(self, x):
            out = torch.relu(self.bn1(x))
            shortcut = self.shortcut(out) if self.shortcut is not None else x
            return self.conv2(torch.relu(self.bn2(self.conv1(out)))) + shortcut

    blocks, cin = [], width
    for stage in range(4):
        cout = width * 2 ** stage
        for i in range(2):
            blocks.append(Block(cin, cout, 2 if (i == 0 and stage > 0) else 1))
            cin = cout
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1, bias=False), *blocks, nn.BatchNorm2d(cin), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, 10))


TORCH_MODELS = {"madry_mnist": torch_madry, "cifar_cnn": torch_cifar_cnn, "preact_resnet18": torch_preact_resnet18}


def minidl_step(name, x, y, device):
    model = get_model(name, in_channels=x.shape[1], image_size=x.shape[2]).to(device)
    opt = md.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    xd, yd = md.tensor(x, device=device), md.tensor(y, device=device)

    def step():
        loss = F.cross_entropy(model(xd), yd)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def torch_step(torch, name, x, y, device):
    model = TORCH_MODELS[name](torch).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    tx, ty = torch.tensor(x, device=device), torch.tensor(y, device=device)

    def step():
        loss = torch.nn.functional.cross_entropy(model(tx), ty)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    parser = benchmark_parser(__doc__, repeat=5)
    parser.add_argument("--model", choices=sorted(SHAPES), required=True)
    args = parser.parse_args(argv)
    device = backend.normalize_device(args.device)
    xp = backend.xp_for(device)
    sync = (lambda: xp.cuda.Stream.null.synchronize()) if device == "cuda" else None
    rng = numpy.random.default_rng(0)
    x = rng.random((args.batch,) + SHAPES[args.model]).astype(numpy.float32)
    y = rng.integers(0, 10, args.batch)
    torch = try_import_torch()
    ref_fn = tsync = None
    if torch is not None:
        if device == "cpu":
            torch.set_num_threads(args.threads or os.cpu_count() or 1)
        tdev = "cuda" if device == "cuda" else "cpu"
        ref_fn = torch_step(torch, args.model, x, y, tdev)
        tsync = torch.cuda.synchronize if device == "cuda" else None
    print(f"device {device}; {args.model} training step (SGD momentum), batch {args.batch}, float32; best of "
          f"{args.repeat} alternating rounds of 2 calls; reference: "
          f"{'PyTorch ' + torch.__version__ if torch else 'none (PyTorch not installed)'}")
    ours, ref = paired_best_times(minidl_step(args.model, x, y, device), ref_fn, rounds=args.repeat, sync=sync,
                                  ref_sync=tsync)
    print(f"minidl : {ours * 1e3:9.2f} ms")
    if ref is not None:
        print(f"PyTorch: {ref * 1e3:9.2f} ms\nminidl / PyTorch time = {ours / ref:.2f}x")
    print("json: " + json.dumps({"model": args.model, "batch": args.batch, "device": device, "minidl_ms": ours * 1e3,
                                 "torch_ms": None if ref is None else ref * 1e3,
                                 "ratio": None if ref is None else ours / ref}))


if __name__ == "__main__":
    main()
