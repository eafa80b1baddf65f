"""Adapters that give other libraries' attack APIs over minidl's own attacks, so that scripts
written for them run after ``python -m minidl.port`` renames their imports:
``torchattacks`` -> :mod:`minidl.compat.torchattacks`, ``autoattack`` ->
:mod:`minidl.compat.autoattack`."""
