"""The package's layering, read from its import statements (ast): no module imports one on a
higher floor, the packages import each other without cycles, no private name crosses from one
package into another, and imports sit at the top of each file except deliberately lazy heavy ones,
each with a comment giving the reason. The README's layout section states the same floors."""
import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1] / "convbench"

#: Floors from the bottom; a module may import its own floor and those below.
FLOORS = {
    1: ("convbench.errors", "convbench.threads", "convbench.timing", "convbench.stats",
        "convbench.env", "convbench.lazy", "convbench.files", "convbench.memory"),
    2: ("convbench.ops", "convbench.result", "convbench.cases"),
    3: ("convbench.kernels", "convbench.backends"),
    4: ("convbench.verify", "convbench.api", "convbench.machine", "convbench"),
    5: ("convbench.harness", "convbench.autotune", "convbench.train", "convbench.filters",
        "convbench.tcn", "convbench.suites"),
    6: ("convbench.cli",),
}
FLOOR = {unit: floor for floor, units in FLOORS.items() for unit in units}
#: Third-party modules a function may import on first use (heavy or optional), with a comment.
LAZY = ("torch", "matplotlib", "numba", "llvmlite", "dask", "distributed", "onnx", "sklearn",
        "scipy.sparse")
#: Modules whose functions import convbench modules on demand (the CLI's commands, so that
#: `convbench --help` loads nothing heavy), again each with a comment.
LAZY_INTERNAL = ("convbench.cli",)


def unit(module: str) -> str:
    """convbench.backends.numba_cpu.conv -> convbench.backends; convbench -> convbench."""
    return ".".join(module.split(".")[:2])


def _is_module(name: str, root: Path) -> bool:
    path = root.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(tree, module: str, is_package: bool, root: Path):
    """(node, imported module, names) for every import; `from a import b` of a submodule b
    counts as importing a.b."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node, alias.name, [alias.asname or alias.name.split(".")[0]]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = module.split(".")
                parts = parts[:len(parts) - node.level + (1 if is_package else 0)]
                base = ".".join(parts + ([node.module] if node.module else []))
            for alias in node.names:
                full = f"{base}.{alias.name}"
                if base.startswith("convbench") and _is_module(full, root):
                    yield node, full, []
                else:
                    yield node, base, [alias.name]


def _parents(tree):
    parent = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parent[child] = node
    return parent


def _in_function(node, parent) -> bool:
    while node in parent:
        node = parent[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def check_module(source: str, module: str, is_package: bool = False, root: Path = ROOT):
    """The layering problems of one module's source, as readable strings; and its package-level
    import edges."""
    tree = ast.parse(source)
    lines = source.splitlines()
    parent = _parents(tree)
    here = unit(module)
    problems, edges = [], set()
    module_aliases = {}
    for node, target, names in _imports(tree, module, is_package, root):
        where = f"{module}:{node.lineno}"
        if _in_function(node, parent):
            allowed = (target.startswith(LAZY) or
                       (target.startswith("convbench") and module in LAZY_INTERNAL))
            text = lines[node.lineno - 1]
            if not allowed:
                problems.append(f"{where}: imports {target} inside a function")
            elif "#" not in text:
                problems.append(f"{where}: lazy import of {target} without a comment saying why")
        if not target.startswith("convbench"):
            continue
        there = unit(target)
        if there != here:
            edges.add((here, there))
            if there not in FLOOR or here not in FLOOR:
                problems.append(f"{where}: {here} or {there} has no floor in the layering")
            elif FLOOR[there] > FLOOR[here]:
                problems.append(f"{where}: {here} (floor {FLOOR[here]}) imports {target} "
                                f"(floor {FLOOR[there]})")
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            private += [p for p in target.split(".")[2:] if p.startswith("_")]
            if private:
                problems.append(f"{where}: private {', '.join(private)} of {there} used in {here}")
            if not names or isinstance(node, ast.Import):
                for alias in node.names:
                    module_aliases[alias.asname or alias.name.split(".")[-1]] = there
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in module_aliases and node.attr.startswith("_")
                and not node.attr.startswith("__") and module_aliases[node.value.id] != here):
            problems.append(f"{module}:{node.lineno}: private {node.attr} of "
                            f"{module_aliases[node.value.id]} used in {here}")
    return problems, edges


def _modules():
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        parts = list(rel.parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts = parts[:-1]
        yield ".".join(parts), is_package, path.read_text()


def _cycle(edges):
    graph = defaultdict(set)
    for a, b in edges:
        graph[a].add(b)
    state = {}

    def visit(n, path):
        state[n] = "open"
        for m in graph[n]:
            if state.get(m) == "open":
                return path[path.index(m):] + [m]
            if m not in state:
                found = visit(m, path + [m])
                if found:
                    return found
        state[n] = "done"
        return None

    for n in list(graph):
        if n not in state:
            found = visit(n, [n])
            if found:
                return found
    return None


def test_no_upward_imports_no_private_names_no_unexplained_lazy_imports():
    problems, edges = [], set()
    for module, is_package, source in _modules():
        p, e = check_module(source, module, is_package)
        problems += p
        edges |= e
    assert not problems, "\n".join(problems)
    assert _cycle(edges) is None, f"import cycle between packages: {_cycle(edges)}"


def test_every_package_has_a_floor():
    units = {unit(module) for module, _, _ in _modules()} - {"convbench.data"}
    assert units <= set(FLOOR), units - set(FLOOR)


@pytest.mark.parametrize("source,module,expected", [
    ("from convbench.harness.runner import Runner\n", "convbench.ops.conv", "floor 5"),
    ("from convbench.machine import _cpu\n", "convbench.autotune", "private _cpu"),
    ("from convbench.backends import _numba_cuda_kernels\n", "convbench.machine",
     "private _numba_cuda_kernels"),
    ("import convbench.backends.numba_cuda as nc\nnc._cuda()\n", "convbench.machine",
     "private _cuda"),
    ("def f():\n    from convbench.backends import get_backend\n", "convbench.verify",
     "inside a function"),
    ("def f():\n    import torch\n", "convbench.backends.torch_peer", "without a comment"),
    ("def f():\n    import pandas  # fast enough\n", "convbench.harness.report",
     "inside a function"),
])
def test_the_checker_catches_each_kind_of_violation(source, module, expected):
    problems, _ = check_module(source, module)
    assert any(expected in p for p in problems), problems


def test_the_checker_finds_cycles():
    assert _cycle({("a", "b"), ("b", "c"), ("c", "a")})
    assert _cycle({("a", "b"), ("b", "c")}) is None


def test_readme_states_the_floors():
    readme = (ROOT.parent / "README.md").read_text()
    layout = readme[readme.index("## Layout"):]
    for floor, units in FLOORS.items():
        for u in units:
            if u != "convbench":
                assert u.split(".", 1)[1] in layout, (floor, u)


def test_the_references_share_no_code_with_the_backends():
    """ops.reference imports NumPy and the problem types only, and no backend imports it."""
    source = (ROOT / "ops" / "reference.py").read_text()
    tree = ast.parse(source)
    imported = {(t, tuple(n)) for _, t, n in _imports(tree, "convbench.ops.reference", False, ROOT)
                if t.startswith("convbench")}
    assert imported == {("convbench.ops.conv", ("Conv2dProblem",))}, imported
    for module, is_package, text in _modules():
        if unit(module) == "convbench.backends":
            targets = {t for _, t, _ in _imports(ast.parse(text), module, is_package, ROOT)}
            assert "convbench.ops.reference" not in targets, module
