"""Datasets, batching and augmentation.

    from minidl.data import MNIST, DataLoader
    train = MNIST(train=True)                 # float32 (60000, 1, 28, 28) in [0, 1]
    for x, y in DataLoader(train, 128, shuffle=True, seed=0):
        ...

Files are found in (or downloaded to) :func:`data_root`: the ``root`` argument, else
``$MINIDL_DATA``, else ``~/.cache/minidl``.
"""
from .augment import normalize, random_crop_flip
from .cifar import CIFAR10
from .dataset import ArrayDataset
from .download import DataNotFoundError, DownloadError
from .loader import DataLoader
from .mnist import MNIST
from .paths import data_root

__all__ = ["MNIST", "CIFAR10", "ArrayDataset", "DataLoader", "random_crop_flip", "normalize",
           "data_root", "DataNotFoundError", "DownloadError"]
