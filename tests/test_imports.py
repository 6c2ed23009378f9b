"""The package's own imports form a one-way graph: no cycles, no hidden ones.

Data flows one way: audio -> features -> frames/template -> engine (models)
-> pipeline/stream -> cli. A module may import what comes before it, never
what comes after, so the import graph of ``synctalk_fast.*`` has no cycles.
An import of a package module placed inside a function to dodge a circle is
still an edge of that circle, so every import counts wherever it is written;
only those under ``if TYPE_CHECKING:`` are left out (they never run). And
such imports belong at module level: a function-level import of a package
module fails the second test unless ``LAZY_ALLOWED`` lists it.

The source is read with ``ast``; nothing from the package is imported.
Compiled extensions (``_core``, only a ``.pyi`` in the source tree) import no
Python module, cannot close a circle, and are not nodes of the graph.
"""

from __future__ import annotations

import ast
import importlib.machinery
import importlib.util
from pathlib import Path

PACKAGE = "synctalk_fast"

# (importing module, imported module) pairs allowed inside a function body:
# for lazy optional pieces only, each with a comment saying why.
LAZY_ALLOWED: set[tuple[str, str]] = {
    # the PyTorch reference loop of the benchmark: torch is an optional extra
    ("synctalk_fast.benchmark.loops", "synctalk_fast.reference.torch_nets"),
    # each command imports its application when it runs, so that `synctalk-fast info` (or a
    # parse error) loads no server (Starlette, uvicorn, aiortc), Ray, quantizer or benchmark
    ("synctalk_fast.cli.serve", "synctalk_fast.serve"),
    ("synctalk_fast.cli.serve", "synctalk_fast.serve.config"),
    ("synctalk_fast.cli.batch", "synctalk_fast.batch"),
    ("synctalk_fast.cli.quantize", "synctalk_fast.quantize"),
    ("synctalk_fast.cli.bench", "synctalk_fast.benchmark"),
    ("synctalk_fast.cli.loadtest", "synctalk_fast.loadtest"),
    ("synctalk_fast.cli.loadtest", "synctalk_fast.loadtest.report"),
}


def package_root() -> Path:
    root = Path(__file__).resolve().parents[1] / PACKAGE
    if root.is_dir():
        return root
    spec = importlib.util.find_spec(PACKAGE)  # top-level: runs no package code
    assert spec is not None and spec.origin, f"cannot locate {PACKAGE}"
    return Path(spec.origin).parent


def source_modules(root: Path) -> dict[str, Path]:
    """Dotted module name -> .py file, for every module of the package."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = (PACKAGE,) + path.relative_to(root).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(node: ast.AST, in_function: bool = False):
    """Yield (import node, in_function), skipping ``if TYPE_CHECKING:`` bodies."""
    if isinstance(node, (ast.Import, ast.ImportFrom)):
        yield node, in_function
        return
    if isinstance(node, ast.If) and _is_type_checking(node.test):
        children = node.orelse
    else:
        children = list(ast.iter_child_nodes(node))
    in_function = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
    for child in children:
        yield from _imports(child, in_function)


def _is_submodule(root: Path, dotted: str) -> bool:
    """True if ``dotted`` names a module or package (source, stub or extension)."""
    if not dotted.startswith(PACKAGE + "."):
        return False
    base = root.joinpath(*dotted.split(".")[1:])
    suffixes = [".py", ".pyi", *importlib.machinery.EXTENSION_SUFFIXES]
    package = (base / "__init__.py").exists()
    return package or any(base.with_name(base.name + s).exists() for s in suffixes)


def import_edges(root: Path, modules: dict[str, Path]):
    """Yield (importer, imported, file, line, in_function) per package import."""
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node, in_function in _imports(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:  # resolve against the importer's package
                    anchor = package.rsplit(".", node.level - 1)[0]
                    base = f"{anchor}.{base}" if base else anchor
                # ``from pkg import name``: the submodule pkg.name if there is one.
                subs = [f"{base}.{alias.name}" for alias in node.names]
                targets = [sub if _is_submodule(root, sub) else base for sub in subs]
            for target in dict.fromkeys(targets):
                if target == PACKAGE or target.startswith(PACKAGE + "."):
                    yield name, target, path, node.lineno, in_function


def import_graph(root: Path, modules: dict[str, Path]):
    """Adjacency sets of the package's modules, plus where each edge comes from."""
    graph = {name: set() for name in modules}
    sites: dict[tuple[str, str], list[str]] = {}
    for src, dst, path, line, _ in import_edges(root, modules):
        parts = dst.split(".")
        implied = [".".join(parts[:i]) for i in range(1, len(parts))]
        # An ancestor of the importer is already importing: not a new edge.
        implied = [a for a in implied if not (src == a or src.startswith(a + "."))]
        for target in [dst, *implied]:
            if target in modules and target != src:
                graph[src].add(target)
                sites.setdefault((src, target), []).append(f"{path.relative_to(root.parent)}:{line}")
    return graph, sites


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's algorithm: the components of more than one module."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_cycles():
    root = package_root()
    graph, sites = import_graph(root, source_modules(root))
    problems = []
    for component in strongly_connected(graph):
        lines = [f"cycle among {', '.join(component)}:"]
        for src in component:
            for dst in sorted(graph[src] & set(component)):
                lines.append(f"    {src} -> {dst}  ({', '.join(sites[src, dst])})")
        problems.append("\n".join(lines))
    assert not problems, "import cycles in the package:\n" + "\n".join(problems)


def test_no_package_imports_inside_functions():
    root = package_root()
    modules = source_modules(root)
    offenders = [
        f"{path.relative_to(root.parent)}:{line}: {src} imports {dst} inside a function"
        for src, dst, path, line, in_function in import_edges(root, modules)
        if in_function and dst in modules and (src, dst) not in LAZY_ALLOWED
    ]
    assert not offenders, "package imports belong at module level:\n" + "\n".join(offenders)


# The layers, bottom first: a module imports only from its own layer or
# those before it. This list is the one statement of the package's layering
# (the README and the package docstring point here). Modules of a subpackage
# take its entry.
LAYERS: list[set[str]] = [
    {"_version", "errors", "_filters", "_util", "_validate", "_backend", "_numpy_kernels", "_numba_kernels"},
    {"shapes"},
    {"audio"},
    {"features"},
    {"live_features", "frames", "template", "demo"},
    {"runtime"},
    {"models"},
    {"engine"},
    {"sinks"},
    {"video"},  # a shim re-exporting sinks names
    {"stream"},
    {"pipeline", "replay", "reference", "_config", "types"},  # replay: a shim of stream.replay
    # quantization, server, webrtc: shims
    {"quantize", "quantization", "batch", "serve", "server", "webrtc", "loadtest"},
    {"integrations"},  # voice-agent plug-ins (Pipecat, LiveKit): applications on the stream
    {"benchmark"},
    {"cli", "__main__", ""},
]


def _layer(module: str) -> int:
    name = module[len(PACKAGE) + 1 :].split(".")[0] if module != PACKAGE else ""
    for k, layer in enumerate(LAYERS):
        if name in layer:
            return k
    raise AssertionError(f"{module} is in no layer of test_imports.LAYERS: add it where it belongs")


def test_imports_point_down_the_layers():
    root = package_root()
    modules = source_modules(root)
    upward = sorted(
        f"{path.relative_to(root.parent)}:{line}: {src} imports {dst}, a later layer"
        for src, dst, path, line, _ in import_edges(root, modules)
        if dst in modules and _layer(dst) > _layer(src)
    )
    assert not upward, "imports must point down (audio -> features -> ... -> cli):\n" + "\n".join(upward)
