"""``minidl.vision``: torchvision's names for the two datasets and the common transforms, so
that ``from torchvision import datasets, transforms`` becomes one renamed import.

Images are NumPy arrays before ``ToTensor`` (uint8, H x W or H x W x C, as
``numpy.asarray(pil_image)``) and Tensors (float32, C x H x W) after it; no PIL.
"""
from . import datasets, transforms

__all__ = ["datasets", "transforms"]
