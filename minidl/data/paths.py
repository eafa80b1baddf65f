"""Where datasets live on disk.

The data folder is chosen, in order, from the ``root`` argument, the ``MINIDL_DATA``
environment variable and ``~/.cache/minidl``. Inside it each dataset has its own
subfolder (``mnist/``, ``cifar10/``); the loaders also accept files placed directly
in the data folder, see :mod:`minidl.data.mnist` and :mod:`minidl.data.cifar`.
"""
import os
from pathlib import Path

ENV_VAR = "MINIDL_DATA"
DEFAULT_ROOT = Path("~/.cache/minidl")


def data_root(root=None):
    """The data folder as an absolute :class:`pathlib.Path` (not created here).

    ``root`` (a str or path) wins; then ``$MINIDL_DATA`` when set and non-empty;
    then ``~/.cache/minidl``. ``~`` is expanded in all three.
    """
    if root is None:
        root = os.environ.get(ENV_VAR) or DEFAULT_ROOT
    return Path(root).expanduser().absolute()
