"""MNIST handwritten digits (LeCun, Cortes & Burges), from the official IDX gzip files.

Files looked for, first in ``<root>/mnist/`` and then directly in ``<root>`` (see
:func:`minidl.data.data_root`); missing or corrupt ones (wrong MD5) are downloaded into
``<root>/mnist/``::

    train-images-idx3-ubyte.gz  train-labels-idx1-ubyte.gz   (60,000 examples)
    t10k-images-idx3-ubyte.gz   t10k-labels-idx1-ubyte.gz    (10,000 examples)
"""
from .dataset import ArrayDataset, check_labels, to_unit_float
from .download import ensure_files
from .idx import IDXFormatError, read_idx
from .paths import data_root

# Base URLs tried in turn; tests (or users behind a proxy cache) may replace this list.
MNIST_MIRRORS = [
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
    "http://yann.lecun.com/exdb/mnist/",
]

# Published MD5s of the gzip files (the same ones torchvision and TensorFlow check).
MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}

_SPLITS = {
    True: ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    False: ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}

IMAGES_MAGIC = 2051  # uint8, 3 dimensions (N, rows, cols)
LABELS_MAGIC = 2049  # uint8, 1 dimension (N,)
CLASSES = [str(d) for d in range(10)]


def load_mnist_files(images_path, labels_path):
    """``(images, labels)`` from an IDX image file and its IDX label file.

    images: float32 (N, 1, rows, cols) in [0, 1]; labels: int64 (N,).
    Raises :class:`IDXFormatError` naming the file for malformed or truncated input.
    """
    pixels = read_idx(images_path, IMAGES_MAGIC)
    labels = read_idx(labels_path, LABELS_MAGIC)
    if len(labels) != len(pixels):
        raise IDXFormatError(f"{labels_path} holds {len(labels)} labels but {images_path} "
                             f"holds {len(pixels)} images")
    return to_unit_float(pixels[:, None]), check_labels(labels, len(CLASSES), labels_path)


class MNIST(ArrayDataset):
    """The MNIST training set (``train=True``, 60,000 images) or test set (10,000).

    ``images``: float32 (N, 1, 28, 28) in [0, 1]; ``labels``: int64 (N,) in 0..9;
    ``classes``: ``['0', ..., '9']``.

    ``root``: data folder (default ``$MINIDL_DATA`` or ``~/.cache/minidl``).
    ``download``: fetch missing or corrupt files; when False they raise
    :class:`~minidl.data.download.DataNotFoundError` instead.
    ``mirrors``: base URLs to try instead of :data:`MNIST_MIRRORS`.
    """

    def __init__(self, root=None, train=True, download=True, mirrors=None, progress=True):
        self.root = data_root(root)
        self.train = bool(train)
        folder = self.root / "mnist"
        images_name, labels_name = _SPLITS[self.train]
        paths = ensure_files({name: MNIST_MD5[name] for name in (images_name, labels_name)},
                             search_dirs=[folder, self.root], dest_dir=folder,
                             mirrors=MNIST_MIRRORS if mirrors is None else mirrors,
                             download_missing=download, dataset="MNIST", progress=progress)
        images, labels = load_mnist_files(paths[images_name], paths[labels_name])
        super().__init__(images, labels, CLASSES)
