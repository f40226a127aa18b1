"""The module structure, read from the source with `ast`: no import cycles between mediscan's
modules (imports inside functions included), no function longer than `MAX_FUNCTION_LINES`."""

import ast
from pathlib import Path

import mediscan

PACKAGE_ROOT = Path(mediscan.__file__).parent
MAX_FUNCTION_LINES = 50


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the package at `root`."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [root.name, *path.relative_to(root).with_suffix("").parts]
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imported_names(module: str, path: Path) -> set[str]:
    """Every dotted name an import statement anywhere in the file may load (relative ones resolved)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(parent + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports."""
    modules = module_files(root)
    return {name: (imported_names(name, path) & modules.keys()) - {name} for name, path in modules.items()}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as a path [a, b, ..., a], or None (iterative depth-first search)."""
    state: dict[str, str] = {}
    for start in sorted(graph):
        if start in state:
            continue
        stack, path = [(start, iter(sorted(graph[start])))], [start]
        state[start] = "open"
        while stack:
            node, children = stack[-1]
            child = next(children, None)
            if child is None:
                state[node] = "done"
                stack.pop()
                path.pop()
            elif state.get(child) == "open":
                return path[path.index(child):] + [child]
            elif child not in state:
                state[child] = "open"
                stack.append((child, iter(sorted(graph[child]))))
                path.append(child)
    return None


def write_package(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cycle_through_a_function_level_import_is_found(tmp_path):
    pkg = write_package(tmp_path / "pkg", {
        "__init__.py": "", "sub/__init__.py": "",
        "a.py": "from pkg.sub import b\n",
        "sub/b.py": "def late():\n    from ..c import f\n",
        "c.py": "import pkg.a\n",
        "d.py": "from pkg import c\n"})
    assert find_cycle(import_graph(pkg)) == ["pkg.a", "pkg.sub.b", "pkg.c", "pkg.a"]


def test_no_cycle_is_reported_for_a_tree(tmp_path):
    pkg = write_package(tmp_path / "pkg", {"__init__.py": "", "a.py": "from pkg import b\n",
                                           "b.py": "import os\n"})
    assert import_graph(pkg) == {"pkg": set(), "pkg.a": {"pkg", "pkg.b"}, "pkg.b": set()}
    assert find_cycle(import_graph(pkg)) is None


def test_mediscan_has_no_import_cycles():
    graph = import_graph(PACKAGE_ROOT)
    assert len(graph) > 50 and "mediscan.predict" in graph["mediscan.evaluation.runner"]
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def long_functions(root: Path, limit: int) -> list[str]:
    """'file:line name (N lines)' for every function or method longer than `limit` lines."""
    found = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > limit:
                    found.append(f"{path.relative_to(root)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def test_long_functions_are_found(tmp_path):
    pkg = write_package(tmp_path / "pkg", {"a.py": "def short():\n    pass\n\n\nclass A:\n"
                                                    "    def long(self):\n" + "        x = 1\n" * 5})
    assert long_functions(pkg, limit=5) == ["a.py:6 long (6 lines)"]


def test_no_function_in_mediscan_is_longer_than_the_limit():
    assert long_functions(PACKAGE_ROOT, MAX_FUNCTION_LINES) == []
