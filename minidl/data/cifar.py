"""CIFAR-10 (Krizhevsky, Nair & Hinton), from the official "python version" batches.

Looked for, in order (``<root>`` from :func:`minidl.data.data_root`):

1. an extracted folder ``<root>/cifar10/cifar-10-batches-py/`` or ``<root>/cifar-10-batches-py/``
   holding the split's batches (``data_batch_1`` .. ``data_batch_5`` or ``test_batch``);
   these are used as they are (their MD5s are not checked: re-pickled copies are fine);
2. the archive ``cifar-10-python.tar.gz`` in ``<root>/cifar10/`` or ``<root>``, checked
   against its published MD5 and extracted next to itself;
3. a download of that archive into ``<root>/cifar10/``.

Each batch is a pickled dict: ``data`` uint8 (N, 3072) with the 1024 red, then 1024 green,
then 1024 blue values of each 32x32 image in row-major order, and ``labels`` (N ints).
Batches are read with :mod:`minidl.data.safe_pickle`, never with plain ``pickle.load``.
"""
import pickle
import tarfile
import warnings
from pathlib import Path, PurePosixPath

import numpy as np

from ..io import atomic_write
from ..restricted_pickle import UnsafePickleError, kind
from .dataset import ArrayDataset, to_unit_float
from .download import ensure_files
from .paths import data_root
from .safe_pickle import safe_load

CIFAR10_MIRRORS = [
    "https://www.cs.toronto.edu/~kriz/",
    "http://www.cs.toronto.edu/~kriz/",
]
ARCHIVE = "cifar-10-python.tar.gz"
CIFAR10_MD5 = {ARCHIVE: "c58f30108f718f92721af3b95e74349a"}

FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_BATCHES = ["test_batch"]
META = "batches.meta"
OFFICIAL_SIZE = {True: 50000, False: 10000}
# Per-channel mean and standard deviation of the 50,000 training images (values in [0, 1]),
# for ``augment.normalize``.
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_MEMBERS = set(TRAIN_BATCHES + TEST_BATCHES + [META, "readme.html"])


class CIFARFormatError(ValueError):
    """A CIFAR-10 batch, meta file or archive is malformed."""


class CIFARPickleError(CIFARFormatError, pickle.UnpicklingError):
    """A batch or meta file whose pickle is refused (malformed, over budget, forbidden global)."""


def _str_keys(obj, path):
    """The pickled dict with ``bytes`` keys (Python-2 files read with encoding='bytes') as ``str``."""
    if not isinstance(obj, dict):
        raise CIFARFormatError(f"{path}: expected a pickled dict, found {type(obj).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _unpickle(path):
    try:
        obj = safe_load(path)
    except UnsafePickleError as e:  # names the file, the byte and what is wrong with it
        raise CIFARPickleError(str(e)) from None
    return _str_keys(obj, path)


def _check_label_values(labels, n, path):
    """``labels`` (a list or tuple of ints, or a 1-D integer array, as pickled) as int64, after
    checking each value without converting it: a label of 2**70 or a string is one clear error."""
    if isinstance(labels, np.ndarray):
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise CIFARFormatError(f"{path}: 'labels' must be a 1-D integer array, found {labels.dtype} "
                                   f"array of shape {labels.shape}")
        values = labels
    elif isinstance(labels, (list, tuple)):
        bad = next((i for i, v in enumerate(labels) if type(v) is not int), None)
        if bad is not None:
            raise CIFARFormatError(f"{path}: 'labels' must be integers, item {bad} is {kind(labels[bad])}")
        values = labels
    else:
        raise CIFARFormatError(f"{path}: 'labels' must be a list of integers, found {kind(labels)}")
    if len(values) != n:
        raise CIFARFormatError(f"{path}: {n} images but {len(values)} labels")
    bad = next((i for i, v in enumerate(values) if not 0 <= v < len(CLASSES)), None)
    if bad is not None:
        raise CIFARFormatError(f"{path}: 'labels' must lie in [0, {len(CLASSES)}), item {bad} is "
                               f"{kind(int(values[bad]))}")
    return np.asarray(values, dtype=np.int64)


def load_batch(path):
    """``(pixels, labels)`` of one batch file: uint8 (N, 3, 32, 32) and int64 (N,)."""
    batch = _unpickle(path)
    data, labels = batch.get("data"), batch.get("labels")
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        what = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise CIFARFormatError(f"{path}: 'data' must be a uint8 array of shape (N, 3072), found {what}")
    if labels is None:
        raise CIFARFormatError(f"{path}: {len(data)} images but no labels")
    return data.reshape(-1, 3, 32, 32), _check_label_values(labels, len(data), path)


def load_class_names(path):
    """Class names from ``batches.meta`` (``label_names``), or the built-in list if it is absent."""
    if not Path(path).is_file():
        return list(CLASSES)
    names = _unpickle(path).get("label_names")
    if not isinstance(names, list) or len(names) != len(CLASSES) or \
            not all(type(n) in (str, bytes) for n in names):
        raise CIFARFormatError(f"{path}: 'label_names' must be a list of {len(CLASSES)} names (strings), "
                               f"found {kind(names)}")
    return [n.decode("latin1") if isinstance(n, bytes) else n for n in names]


def extract_archive(archive, dest_dir):
    """Extract the batch files of ``archive`` into ``dest_dir/cifar-10-batches-py/``.

    Only regular files with the known batch names are written, each through a temporary
    file renamed into place; an absolute member path or one with ``..`` raises, so the
    archive cannot write outside ``dest_dir``. Returns the batches folder.
    """
    out = Path(dest_dir) / FOLDER
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "r:gz") as tar:
        for member in tar:
            parts = PurePosixPath(member.name).parts
            if member.name.startswith(("/", "\\")) or ".." in parts or any("\\" in p for p in parts):
                raise CIFARFormatError(f"{archive}: unsafe path {member.name!r} in archive")
            if not (member.isfile() and len(parts) == 2 and parts[0] == FOLDER and parts[1] in _MEMBERS):
                continue  # directories, links and anything unexpected are skipped
            with atomic_write(out / parts[1], "wb") as f, tar.extractfile(member) as src:
                for chunk in iter(lambda: src.read(1 << 20), b""):
                    f.write(chunk)
    return out


def _batches_folder(candidates, needed):
    return next((Path(c) for c in candidates if all((Path(c) / b).is_file() for b in needed)), None)


class CIFAR10(ArrayDataset):
    """The CIFAR-10 training set (``train=True``, 50,000 images) or test set (10,000).

    ``images``: float32 (N, 3, 32, 32) in [0, 1], channels RGB; ``labels``: int64 (N,)
    in 0..9; ``classes``: the ten class names from ``batches.meta``.

    N is whatever the batch files hold: a partial copy is loaded as it is (with a warning)
    so that ``len(dataset)`` always tells the truth.

    ``root``, ``download`` and ``mirrors`` work as for :class:`~minidl.data.MNIST`
    (``mirrors`` replaces :data:`CIFAR10_MIRRORS`).
    """

    def __init__(self, root=None, train=True, download=True, mirrors=None, progress=True):
        self.root = data_root(root)
        self.train = bool(train)
        home = self.root / "cifar10"
        needed = TRAIN_BATCHES if self.train else TEST_BATCHES
        folder = _batches_folder([home / FOLDER, self.root / FOLDER], needed)
        if folder is None:
            hint = (f"Alternatively put the extracted folder {FOLDER}/ ({', '.join(needed)}, {META}) "
                    f"in {home}.")
            archive = ensure_files(CIFAR10_MD5, search_dirs=[home, self.root], dest_dir=home,
                                   mirrors=CIFAR10_MIRRORS if mirrors is None else mirrors,
                                   download_missing=download, dataset="CIFAR-10", progress=progress,
                                   hint=hint)[ARCHIVE]
            folder = extract_archive(archive, archive.parent)
            missing = [b for b in needed if not (folder / b).is_file()]
            if missing:
                raise CIFARFormatError(f"{archive}: archive lacks {FOLDER}/{', '.join(missing)}")
        self.folder = folder
        batches = [load_batch(folder / name) for name in needed]
        labels = np.concatenate([lab for _, lab in batches])
        if len(labels) != OFFICIAL_SIZE[self.train]:
            warnings.warn(f"CIFAR-10 {'training' if self.train else 'test'} set in {folder} holds "
                          f"{len(labels)} images, not the official {OFFICIAL_SIZE[self.train]}",
                          UserWarning, stacklevel=2)
        super().__init__(to_unit_float(*[p for p, _ in batches]), labels, load_class_names(folder / META))
