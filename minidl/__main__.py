"""Command line: ``python -m minidl {info,train,eval,study}``."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
