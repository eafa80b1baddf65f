"""In-memory datasets: an image array, a label array and the class names."""
import numpy as np


class ArrayDataset:
    """Images and labels held as whole NumPy arrays.

    ``images``: float32, shape (N, C, H, W), values in [0, 1].
    ``labels``: int64, shape (N,), values in ``range(len(classes))``.
    ``classes``: list of N_classes class names, index = label.
    ``dataset[i]`` is ``(images[i], labels[i])``; ``len(dataset)`` is N.
    """

    def __init__(self, images, labels, classes):
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = labels
        self.classes = list(classes)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, index):
        return self.images[index], self.labels[index]

    def __repr__(self):
        shape = "x".join(str(s) for s in self.images.shape)
        return f"{type(self).__name__}(images={shape} {self.images.dtype}, classes={len(self.classes)})"


def to_unit_float(*parts):
    """uint8 pixel arrays -> one float32 array in [0, 1], the parts joined along axis 0.

    Each part is converted straight into its slice of the preallocated result, so joining
    several batches costs no extra uint8 copy.
    """
    out = np.empty((sum(len(p) for p in parts),) + parts[0].shape[1:], np.float32)
    start = 0
    for p in parts:
        np.divide(p, np.float32(255.0), out=out[start:start + len(p)])
        start += len(p)
    return out


def check_labels(labels, n_classes, source):
    """int64 copy of ``labels``, after checking every value is a valid class index."""
    labels = np.asarray(labels).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= n_classes):
        raise ValueError(f"{source}: labels must lie in [0, {n_classes}), "
                         f"found values from {labels.min()} to {labels.max()}")
    return labels
