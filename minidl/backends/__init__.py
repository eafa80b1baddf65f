"""``md.backends``: PyTorch's ``torch.backends`` switches mapped onto minidl (see :mod:`.cudnn`)."""
from . import cudnn

__all__ = ["cudnn"]
