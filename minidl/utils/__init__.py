"""``minidl.utils.data``: PyTorch's ``torch.utils.data`` names on minidl's loader."""
from . import data

__all__ = ["data"]
