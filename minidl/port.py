"""Rename a PyTorch script's imports so that it runs on minidl: ``python -m minidl.port
script.py [-o out.py]`` (prints the result without ``-o``).

Only import statements change; the code keeps its names (``torch.zeros`` works because
``import torch`` becomes ``import minidl as torch``). Modules map by their longest prefix:

    torch.nn.functional -> minidl.functional      torch.utils.data -> minidl.utils.data
    torchvision         -> minidl.vision           torch            -> minidl
    torchattacks        -> minidl.compat.torchattacks
    autoattack          -> minidl.compat.autoattack

so ``import torch.nn as nn`` becomes ``import minidl.nn as nn``, ``from torchvision import
datasets, transforms`` becomes ``from minidl.vision import datasets, transforms`` and ``import
torchattacks`` becomes ``import minidl.compat.torchattacks as torchattacks`` (the two attack
libraries map onto adapters over minidl's own attacks). A plain ``import torch.optim``
(binding the name ``torch``) becomes ``import minidl as torch``, which loads every submodule. Lines that are not imports, strings and comments are left alone.
"""
import argparse
import re
import sys

MODULES = [  # longest prefix first
    ("torch.nn.functional", "minidl.functional"),
    ("torch.utils.data", "minidl.utils.data"),
    ("torchvision", "minidl.vision"),
    ("torchattacks", "minidl.compat.torchattacks"),
    ("autoattack", "minidl.compat.autoattack"),
    ("torch", "minidl"),
]

_IMPORT = re.compile(r"^(\s*)import\s+(.+?)\s*(#.*)?$")
_FROM = re.compile(r"^(\s*)from\s+(\S+)\s+import\s+(.+?)\s*(#.*)?$")


def _module(name):
    for old, new in MODULES:
        if name == old or name.startswith(old + "."):
            return new + name[len(old):]
    return None


def _import_item(item):
    """One ``a.b [as c]`` of an ``import`` statement, renamed (None: not torch's)."""
    parts = item.split()
    name, alias = parts[0], parts[2] if len(parts) == 3 and parts[1] == "as" else None
    new = _module(name)
    if new is None:
        return None
    if alias is not None:
        return f"{new} as {alias}"
    top = name.split(".")[0]  # ``import torch.nn`` binds ``torch``: bind it to the renamed top
    return f"{_module(top)} as {top}"


def rename_line(line):
    """The line with torch's module names replaced (unchanged when it imports nothing of torch)."""
    m = _FROM.match(line)
    if m:
        indent, module, names, comment = m.groups()
        new = _module(module)
        if new is None:
            return line
        return f"{indent}from {new} import {names}" + (f"  {comment}" if comment else "")
    m = _IMPORT.match(line)
    if m:
        indent, items, comment = m.groups()
        renamed = [(_import_item(i.strip()) or i.strip()) for i in items.split(",")]
        if all(_import_item(i.strip()) is None for i in items.split(",")):
            return line
        return f"{indent}import " + ", ".join(renamed) + (f"  {comment}" if comment else "")
    return line


def rename_source(source):
    """``source`` with every import line renamed; lines inside triple-quoted strings are kept."""
    out, in_string = [], None
    for line in source.splitlines(keepends=True):
        body = line.rstrip("\n")
        if in_string is None:
            out.append(rename_line(body) + line[len(body):])
        else:
            out.append(line)
        for quote in ('"""', "'''"):
            count = body.count(quote)
            if in_string in (None, quote) and count % 2 == 1:
                in_string = quote if in_string is None else None
    return "".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m minidl.port", description=__doc__.split("\n\n")[0])
    parser.add_argument("script", help="a PyTorch script")
    parser.add_argument("-o", "--output", help="write the renamed script here (default: print it)")
    args = parser.parse_args(argv)
    try:
        with open(args.script, encoding="utf-8") as f:
            source = f.read()
    except OSError as e:
        print(f"minidl.port: cannot read {args.script}: {e.strerror}", file=sys.stderr)
        return 2
    renamed = rename_source(source)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(renamed)
    else:
        sys.stdout.write(renamed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
