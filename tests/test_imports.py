"""The package's imports point down the layers, with no cycle and no hidden (function-level) imports.

Every module of ``minidl/`` is parsed with ``ast`` (nothing is imported), its imports of
minidl's own modules become edges of a graph, and three rules are checked:

1. a module imports only modules of its own layer or below (``LAYERS``);
2. the graph has no cycle (function-level imports count as edges too);
3. imports of minidl's own modules sit at module level, never inside a function or
   class, except in the files listed in ``PENDING`` (owned by other work in progress).

Third-party imports may be deferred only for the packages in ``DEFERRED`` (optional or
heavy ones: CuPy, torch, matplotlib, ...). A failure names the file and line of each
violation. A new module needs a layer here: add its prefix to LAYERS.
"""
import ast
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parent.parent / "minidl"

# Lowest first. A dotted prefix covers a module and, for a package, everything inside it;
# the longest matching prefix wins.
LAYERS = [
    ("minidl.backend", "minidl.io", "minidl.validation", "minidl.version_counter", "minidl.torch_format",
     "minidl.restricted_pickle"),
    ("minidl.kernels", "minidl.autograd"),
    ("minidl.ops", "minidl.tensor_methods"),
    ("minidl.tensor",),
    ("minidl.functional", "minidl.torch_functions", "minidl.cuda", "minidl.backends"),
    ("minidl.nn", "minidl.optim", "minidl.serialization", "minidl.testing", "minidl.distributed"),
    ("minidl.data", "minidl.models", "minidl.train", "minidl.run_folder", "minidl.utils", "minidl.vision"),
    ("minidl.adversarial",),
    ("minidl.compat",),
    ("minidl.study", "minidl.experiment", "minidl.cli", "minidl.info", "minidl.__main__", "minidl",
     "minidl.port"),
]

# Files whose function-level imports of minidl modules are known and left to their owners'
# issues; remove an entry once its file is clean.
PENDING = {
}

# Third-party packages that may be imported inside a function, and why.
DEFERRED = {
    "cupy": "optional (extra 'gpu'); absent on CPU-only machines",
    "cupyx": "optional, part of CuPy",
    "cupy_backends": "optional, part of CuPy (NVRTC's version for `minidl info`)",
    "torch": "optional reference for benchmarks and cross-checks, never a runtime dependency",
    "torchattacks": "optional reference, as torch",
    "mpi4py": "optional (extra 'distributed')",
    "matplotlib": "heavy, and it must pick the Agg backend first; only the plots need it",
    "tqdm": "progress bars, needed only while downloading",
}


def _module_name(path):
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules():
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(importer, is_package, node, known):
    """The minidl modules an import statement names (empty for third-party imports)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names if a.name.split(".")[0] == "minidl"]
    if node.level == 0:
        if not (node.module or "").startswith("minidl"):
            return []
        base = node.module
    else:
        parts = importer.split(".")
        parts = parts if is_package else parts[:-1]
        parts = parts[:len(parts) - (node.level - 1)]
        base = ".".join(parts + ([node.module] if node.module else []))
    # ``from pkg import name``: ``name`` is a submodule when such a module exists.
    targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
    return sorted(set(targets))


def _imports(modules):
    """(importer, imported, path, line, function-level?) for every import of a minidl module."""
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        nested = set()
        for scope in ast.walk(tree):
            if isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                nested.update(id(n) for n in ast.walk(scope) if n is not scope)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in _resolve(name, path.name == "__init__.py", node, modules):
                    edges.append((name, target, path, node.lineno, id(node) in nested))
    return edges


def _layer(module):
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > len(best[1]):
                    best = (rank, prefix)
    return None if best is None else best[0]


def _where(path, line):
    return f"{path.relative_to(PACKAGE.parent)}:{line}"


MODULES = _modules()
EDGES = _imports(MODULES)


def test_every_module_has_a_layer():
    missing = [name for name in MODULES if _layer(name) is None]
    assert not missing, f"modules without a layer (add them to LAYERS in tests/test_imports.py): {missing}"


def test_imports_point_down_the_layers():
    upward = [f"{_where(path, line)}: {src} (layer {_layer(src)}) imports {dst} (layer {_layer(dst)})"
              for src, dst, path, line, _ in EDGES
              if _layer(src) is not None and _layer(dst) is not None and _layer(dst) > _layer(src)
              and not dst == "minidl" and not src.startswith(dst + ".")]
    assert not upward, "imports that point up the layers:\n" + "\n".join(upward)


def test_no_function_level_imports_of_minidl_modules():
    hidden = [f"{_where(path, line)}: {src} imports {dst} inside a function or class"
              for src, dst, path, line, nested in EDGES
              if nested and str(path.relative_to(PACKAGE.parent)) not in PENDING]
    assert not hidden, ("move these imports to the top of the module (a cycle they hid must be "
                        "broken instead):\n" + "\n".join(hidden))


def test_pending_entries_are_still_needed():
    nested_files = {str(path.relative_to(PACKAGE.parent)) for _, _, path, _, nested in EDGES if nested}
    stale = sorted(set(PENDING) - nested_files)
    assert not stale, (f"PENDING lists files without function-level imports of minidl modules (clean, "
                       f"moved or gone): {stale}; remove them from PENDING in tests/test_imports.py")


def test_deferred_third_party_imports_are_optional_ones():
    found = []
    for path in MODULES.values():
        tree = ast.parse(path.read_text(), str(path))
        for scope in ast.walk(tree):
            if not isinstance(scope, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            for node in ast.walk(scope):
                if isinstance(node, ast.Import):
                    found += [(path, node.lineno, a.name) for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0:
                    found.append((path, node.lineno, node.module))
    bad = sorted({f"{_where(path, line)}: imports {name} inside a function or class"
                  for path, line, name in found
                  if name.split(".")[0] not in DEFERRED and name.split(".")[0] != "minidl"})
    assert not bad, ("import these at the top of the module, or add the package to DEFERRED with "
                     "the reason:\n" + "\n".join(bad))


def _find_cycle(graph):
    """One cycle of ``graph`` (a list of nodes, first == last) or None; iterative DFS."""
    state = {}
    for start in graph:
        if start in state:
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        state[start] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                stack.pop()
                path.pop()
                state[node] = "done"
            elif state.get(child) == "open":
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(sorted(graph.get(child, ())))))
                path.append(child)
    return None


def test_import_graph_is_acyclic():
    graph, where = {name: set() for name in MODULES}, {}
    for src, dst, path, line, _ in EDGES:
        # A package's modules all run its __init__ first; that is Python, not a cycle.
        if src.startswith(dst + ".") or dst == "minidl":
            continue
        graph[src].add(dst)
        where.setdefault((src, dst), _where(path, line))
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle) + "\n" + "\n".join(
        f"  {where[(a, b)]}: {a} imports {b}" for a, b in zip(cycle, cycle[1:]))


# --- the checker itself must catch what it is meant to catch ------------------------------
def test_checker_finds_a_cycle_and_a_nested_import(tmp_path):
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert _find_cycle(graph) in (["a", "b", "c", "a"], ["b", "c", "a", "b"], ["c", "a", "b", "c"])
    assert _find_cycle({"a": {"b"}, "b": set()}) is None
    source = "import numpy\nfrom . import backend\n\ndef f():\n    from .tensor import Tensor\n    import cupy\n"
    tree = ast.parse(source)
    known = {"minidl.backend": None, "minidl.tensor": None, "minidl.functional": None}
    found = [(t, n.lineno) for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))
             for t in _resolve("minidl.functional", False, n, known)]
    assert sorted(found) == [("minidl.backend", 2), ("minidl.tensor", 5)]


@pytest.mark.parametrize("module, layer", [("minidl.kernels.conv", 1), ("minidl.ops.conv", 2),
                                           ("minidl.nn.layers", 5), ("minidl.adversarial.uap", 7)])
def test_layers_of_known_modules(module, layer):
    assert _layer(module) == layer
