"""torchvision's ``datasets.MNIST`` and ``datasets.CIFAR10`` over :mod:`minidl.data`'s loaders.

``MNIST(root, train=True, transform=None, target_transform=None, download=False)``: item i
is ``(transform(image), target_transform(label))`` with the image a uint8 NumPy array
(28, 28) for MNIST, (32, 32, 3) for CIFAR-10 (what ``numpy.asarray`` of torchvision's PIL
image gives) and the label an int. ``root`` is the data folder as for minidl's loaders: the
files are found in ``root/mnist``, ``root/cifar10`` or ``root`` itself.

With a transform that starts with ``ToTensor`` and whose later steps all have a batch form
(``Normalize``, ``RandomCrop``, ``RandomHorizontalFlip``), :class:`minidl.utils.data.DataLoader`
transforms whole batches at once (the fast path), starting from minidl's float32 images,
which equal ``ToTensor``'s output bit for bit.
"""
import numpy as np

from .. import data
from ..tensor import Tensor


class _VisionDataset:
    _loader = None

    def __init__(self, root, train=True, transform=None, target_transform=None, download=False):
        self._source = self._loader(root=root, train=train, download=download, progress=False)
        self.root, self.train = root, bool(train)
        self.transform, self.target_transform = transform, target_transform
        self.classes = self._source.classes
        self.targets = [int(y) for y in self._source.labels]

    def __len__(self):
        return len(self._source)

    def _raw(self, i):
        img = np.rint(self._source.images[i] * 255).astype(np.uint8)  # exact: images are k / 255
        return img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0)

    def __getitem__(self, index):
        img, target = self._raw(int(index)), int(self._source.labels[int(index)])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def fields(self, indices):
        """(images, labels) at ``indices`` transformed as a batch, or None when the transform
        has no batch form (the loader then goes item by item)."""
        steps = getattr(self.transform, "batch_steps", lambda: None)()
        if steps is None or self.target_transform is not None:
            return None
        images = self._source.images[indices]
        for step in steps:
            images = step.batch(images)
        return [images, self._source.labels[indices]]

    @property
    def data(self):
        """All images as uint8 (N, H, W) (MNIST, a Tensor) or (N, H, W, C) (CIFAR-10, an array)."""
        raw = np.rint(self._source.images * 255).astype(np.uint8)
        return Tensor(raw[:, 0]) if raw.shape[1] == 1 else raw.transpose(0, 2, 3, 1)

    def __repr__(self):
        return (f"Dataset {type(self).__name__}\n    Number of datapoints: {len(self)}\n"
                f"    Split: {'Train' if self.train else 'Test'}\n    Transform: {self.transform!r}")


class MNIST(_VisionDataset):
    _loader = data.MNIST


class CIFAR10(_VisionDataset):
    _loader = data.CIFAR10
