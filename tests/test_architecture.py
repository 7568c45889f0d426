"""The package's shape, checked: no import cycles, a data layer that does not
reach up, and no `_private` name imported from another module.

The import graph is read from the source (every `import` / `from ... import`
of a `keras_mtl` module, at module level or inside a function: a lazy import
is still a dependency), so this runs without importing anything.
"""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "keras_mtl"

# What each layer may import besides itself. The data layer (readers, splits,
# tokenization, the tf.data pipeline) sits under the model, training, serving
# and comparison code: it may use the typed config, the errors and the task
# types (which own label parsing), nothing above them.
ALLOWED_BELOW = {
    "keras_mtl.data": ("keras_mtl.data", "keras_mtl.errors", "keras_mtl.config", "keras_mtl.tasks"),
    "keras_mtl.tasks": ("keras_mtl.tasks", "keras_mtl.errors", "keras_mtl.layers"),
    "keras_mtl.layers": ("keras_mtl.layers", "keras_mtl.errors"),
    "keras_mtl.weighting": ("keras_mtl.weighting", "keras_mtl.errors", "keras_mtl.distribute"),
    "keras_mtl.errors": ("keras_mtl.errors",),
}


def _modules(root, prefix):
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        if name.startswith(prefix):
            out[name] = path
    return out


MODULES = _modules(PACKAGE, "keras_mtl")


def _resolve(name):
    """The module `name` refers to (a module, or a name inside one)."""
    parts = name.split(".")
    while parts:
        if ".".join(parts) in MODULES:
            return ".".join(parts)
        parts.pop()
    return None


def _imports(name, path):
    """[(imported module, imported name or None, line)] of the keras_mtl imports in `path`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, None, node.lineno) for a in node.names if a.name.startswith("keras_mtl")]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                module = ".".join(base[: len(base) - node.level + 1] + ([module] if module else []))
            if module.startswith("keras_mtl"):
                found += [(module, a.name, node.lineno) for a in node.names]
    return found


def _graph():
    edges = {}
    for name, path in MODULES.items():
        targets = set()
        for module, imported, _ in _imports(name, path):
            full = f"{module}.{imported}" if imported else module
            target = full if full in MODULES else _resolve(module)
            if target and target != name:
                targets.add(target)
        edges[name] = targets
    return edges


def _cycles(edges):
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in edges.get(v, ()):
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

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_package_has_no_import_cycles():
    assert _cycles(_graph()) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_lower_layers_do_not_import_upper_ones():
    edges = _graph()
    wrong = []
    for module, targets in sorted(edges.items()):
        for layer, allowed in ALLOWED_BELOW.items():
            if module == layer or module.startswith(layer + "."):
                wrong += [f"{module} -> {t}" for t in sorted(targets) if not t.startswith(allowed)]
    assert wrong == []


def test_no_private_name_is_imported_from_another_module():
    """keras_mtl/ and bench/ import only public names of each other's modules."""
    sources = dict(MODULES)
    sources.update({f"bench.{p.stem}": p for p in (REPO / "bench").glob("*.py")})
    wrong = []
    for name, path in sorted(sources.items()):
        for module, imported, line in _imports(name, path):
            if imported and imported.startswith("_") and not imported.startswith("__"):
                if f"{module}.{imported}" not in MODULES:  # a private submodule is not a name
                    wrong.append(f"{path.relative_to(REPO)}:{line}: from {module} import {imported}")
    assert wrong == []


def test_model_code_does_not_reach_into_keras_internals():
    hits = [str(p.relative_to(REPO)) for p in PACKAGE.rglob("*.py") if "keras.src" in p.read_text(encoding="utf-8")]
    assert hits == []
