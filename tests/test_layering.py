"""Imports point down (pipeline → components → tasks → keras_models and data) and no modules import each other.

Every import in the project's packages counts, at module level or inside a
function: a function-level import is still a dependency, only a later one.
"""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Each package's layer; a package may import its own modules and those of lower layers.
LAYERS = {"pipeline": 3, "components": 2, "tasks": 1, "keras_models": 0, "data": 0}


def project_modules(root: Path = ROOT) -> dict[str, Path]:
    """Dotted module name → file, for every module of the layered packages."""
    modules = {}
    for package in LAYERS:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def imports(path: Path, module: str, modules: dict[str, Path]) -> list[tuple[int, str]]:
    """(line, project module) for each import in `path` of a module of the layered packages."""

    def project_module(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the module's package, up `level - 1` packages
                package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            # `from package import module` depends on the module; `from module import name` on the module.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in modules else base for alias in node.names]
        else:
            continue
        targets = {project_module(name) for name in names} - {None, module}
        found += [(node.lineno, target) for target in sorted(targets)]
    return found


def import_graph(root: Path = ROOT) -> tuple[dict[str, set[str]], list[str]]:
    """Each module's project imports, and one message per import that points up or across layers."""
    modules = project_modules(root)
    graph, violations = {}, []
    for module, path in modules.items():
        graph[module] = set()
        for line, target in imports(path, module, modules):
            graph[module].add(target)
            here, there = module.split(".")[0], target.split(".")[0]
            if here != there and LAYERS[there] >= LAYERS[here]:
                violations.append(f"{path.relative_to(root)}:{line}: {module} imports {target} "
                                  f"({there} is not below {here})")
    return graph, violations


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in on_stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = []
            while not component or component[-1] != node:
                component.append(stack.pop())
                on_stack.discard(component[-1])
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def cycle_messages(graph: dict[str, set[str]]) -> list[str]:
    messages = []
    for component in cycles(graph):
        edges = [f"{a} imports {b}" for a in component for b in sorted(graph[a]) if b in component]
        messages.append("import cycle: " + "; ".join(edges))
    return messages


def test_imports_point_down():
    _, violations = import_graph()
    assert not violations, "imports that point up or across layers:\n" + "\n".join(violations)


def test_no_modules_import_each_other():
    graph, _ = import_graph()
    messages = cycle_messages(graph)
    assert not messages, "\n".join(messages)


def test_the_check_finds_an_upward_import_and_a_cycle(tmp_path):
    """A copy of a small tree with one import up and one pair of modules importing each other."""
    files = {
        "pipeline/__init__.py": "",
        "pipeline/cli.py": "from components import train\n",
        "components/__init__.py": "",
        "components/train.py": "def run():\n    from pipeline.cli import main\n",
        "tasks/__init__.py": "",
        "tasks/a.py": "from . import b\n",
        "tasks/b.py": "import tasks.a\n",
        "keras_models/__init__.py": "",
        "data/__init__.py": "",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    graph, violations = import_graph(tmp_path)
    assert violations == ["components/train.py:2: components.train imports pipeline.cli "
                          "(pipeline is not below components)"]
    assert cycle_messages(graph) == [
        "import cycle: components.train imports pipeline.cli; pipeline.cli imports components.train",
        "import cycle: tasks.a imports tasks.b; tasks.b imports tasks.a",
    ]
