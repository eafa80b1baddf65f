"""Models for 28x28 single-channel images (MNIST). Each takes ``in_channels``, ``image_size``
and ``num_classes`` so that the same architecture runs on other small images in tests."""
from .. import nn


def mlp(in_channels=1, image_size=28, num_classes=10, hidden=(256, 256)):
    """Flatten -> [Linear -> ReLU] * len(hidden) -> Linear."""
    layers, width = [nn.Flatten()], in_channels * image_size * image_size
    for h in hidden:
        layers += [nn.Linear(width, h, init="he"), nn.ReLU()]
        width = h
    return nn.Sequential(*layers, nn.Linear(width, num_classes, init="he"))


def lenet(in_channels=1, image_size=28, num_classes=10):
    """A small LeNet-style CNN: conv 5x5x6 pad 2, max-pool, conv 5x5x16, max-pool, 120, 84, classes."""
    side = ((image_size // 2) - 4) // 2
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5, padding=2, init="he"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, init="he"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * side * side, 120, init="he"), nn.ReLU(),
        nn.Linear(120, 84, init="he"), nn.ReLU(), nn.Linear(84, num_classes, init="he"))


def madry_mnist(in_channels=1, image_size=28, num_classes=10):
    """The MNIST-challenge network of Madry et al. (2018): conv 5x5x32 pad 2, ReLU, max-pool 2,
    conv 5x5x64 pad 2, ReLU, max-pool 2, dense 1024, ReLU, dense 10."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 32, 5, padding=2, init="he"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 5, padding=2, init="he"), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * side * side, 1024, init="he"), nn.ReLU(), nn.Linear(1024, num_classes, init="he"))


def wong_mnist(in_channels=1, image_size=28, num_classes=10):
    """The small MNIST network of Wong and Kolter (2018), used by Wong et al. (2020):
    conv 16 4x4 stride 2 pad 1, ReLU, conv 32 4x4 stride 2 pad 1, ReLU, dense 100, ReLU, dense 10."""
    side = image_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, 16, 4, stride=2, padding=1, init="he"), nn.ReLU(),
        nn.Conv2d(16, 32, 4, stride=2, padding=1, init="he"), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * side * side, 100, init="he"), nn.ReLU(), nn.Linear(100, num_classes, init="he"))
