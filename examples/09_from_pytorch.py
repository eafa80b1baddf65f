"""Example 9: the classic PyTorch MNIST training script, ported by renaming the imports.

    python examples/09_from_pytorch.py --data-dir ../shared/data [--epochs 1] [--limit 6000]

The code below is written in the style of the pytorch/examples MNIST script (a two-conv Net with
dropout, log_softmax + nll_loss, Adadelta with StepLR, train and test loops). Only the imports
differ from PyTorch:

    torch -> minidl as md,  torch.nn -> minidl.nn,  torch.nn.functional -> minidl.functional,
    torch.optim -> minidl.optim,  torchvision's MNIST + DataLoader -> minidl.data.

`--synthetic N` trains on N random images instead (the test suite's smoke test).
"""
import argparse

import numpy as np

import minidl as md
import minidl.nn as nn
import minidl.functional as F
import minidl.optim as optim
from minidl.optim.lr_scheduler import StepLR
from minidl.data import MNIST, ArrayDataset, DataLoader


class Net(nn.Module):
    def __init__(self):
        super(Net, self).__init__()
        self.conv1 = nn.Conv2d(1, 32, 3, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(9216, 128)
        self.fc2 = nn.Linear(128, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = md.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


def train(args, model, device, train_loader, optimizer, epoch):
    model.train()
    for batch_idx, (data, target) in enumerate(train_loader):
        data, target = data.to(device), target.to(device)
        optimizer.zero_grad()
        output = model(data)
        loss = F.nll_loss(output, target)
        loss.backward()
        optimizer.step()
        if batch_idx % args.log_interval == 0:
            print('Train Epoch: {} [{}/{} ({:.0f}%)]\tLoss: {:.6f}'.format(
                epoch, batch_idx * len(data), len(train_loader.dataset),
                100. * batch_idx / len(train_loader), loss.item()))


def test(model, device, test_loader):
    model.eval()
    test_loss = 0
    correct = 0
    with md.no_grad():
        for data, target in test_loader:
            data, target = data.to(device), target.to(device)
            output = model(data)
            test_loss += F.nll_loss(output, target, reduction='sum').item()  # sum up batch loss
            pred = output.argmax(dim=1, keepdim=True)  # get the index of the max log-probability
            correct += pred.eq(target.view_as(pred)).sum().item()

    test_loss /= len(test_loader.dataset)
    print('\nTest set: Average loss: {:.4f}, Accuracy: {}/{} ({:.2f}%)\n'.format(
        test_loss, correct, len(test_loader.dataset),
        100. * correct / len(test_loader.dataset)))
    return correct / len(test_loader.dataset)


def datasets(args):
    """torchvision's ToTensor + Normalize((0.1307,), (0.3081,)), done once on the arrays."""
    if args.synthetic:
        rng = np.random.default_rng(0)
        images = rng.random((args.synthetic, 1, 28, 28), dtype=np.float32)
        labels = rng.integers(0, 10, args.synthetic)
        train_set = test_set = ArrayDataset(images, labels, classes=range(10))
    else:
        train_set, test_set = MNIST(root=args.data_dir, train=True), MNIST(root=args.data_dir, train=False)
    out = []
    for ds, n in ((train_set, args.limit), (test_set, args.test_limit)):
        n = n or len(ds)
        out.append(ArrayDataset((ds.images[:n] - 0.1307) / 0.3081, ds.labels[:n], classes=range(10)))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description='minidl MNIST Example (ported from PyTorch)')
    parser.add_argument('--batch-size', type=int, default=64, metavar='N')
    parser.add_argument('--test-batch-size', type=int, default=1000, metavar='N')
    parser.add_argument('--epochs', type=int, default=14, metavar='N')
    parser.add_argument('--lr', type=float, default=1.0, metavar='LR')
    parser.add_argument('--gamma', type=float, default=0.7, metavar='M')
    parser.add_argument('--seed', type=int, default=1, metavar='S')
    parser.add_argument('--log-interval', type=int, default=10, metavar='N')
    parser.add_argument('--save-model', action='store_true')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--data-dir', default=None)
    parser.add_argument('--limit', type=int, default=None, help='train on the first N images only')
    parser.add_argument('--test-limit', type=int, default=None, help='test on the first N images only')
    parser.add_argument('--synthetic', type=int, default=0, help='N random images instead of MNIST')
    args = parser.parse_args(argv)

    md.manual_seed(args.seed)
    device = args.device
    train_set, test_set = datasets(args)
    train_loader = DataLoader(train_set, batch_size=args.batch_size, shuffle=True, seed=args.seed)
    test_loader = DataLoader(test_set, batch_size=args.test_batch_size)

    model = Net().to(device)
    optimizer = optim.Adadelta(model.parameters(), lr=args.lr)

    scheduler = StepLR(optimizer, step_size=1, gamma=args.gamma)
    for epoch in range(1, args.epochs + 1):
        train(args, model, device, train_loader, optimizer, epoch)
        accuracy = test(model, device, test_loader)
        scheduler.step()

    if args.save_model:
        md.save(model.state_dict(), "mnist_cnn.npz")
    return accuracy


if __name__ == '__main__':
    main()
