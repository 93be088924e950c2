"""The import rules of the house: the engine never imports the UI, the UI never imports MindSpore,
the CLI builds its parser without paying for the heavy libraries, and imports run one way (no
cycle among the packages' modules, imports inside functions included)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def imported_roots(package: str) -> dict[str, set[str]]:
    """Top-level module names imported anywhere in a package's source, by file."""
    found: dict[str, set[str]] = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
        found[str(path.relative_to(ROOT))] = names
    return found


@pytest.mark.parametrize(
    "package, forbidden",
    [
        ("babyllama", {"textual", "textual_plotext", "babyllama_tui"}),
        ("babyllama_tui", {"mindspore", "torch"}),
        # The app's logic, tested without a terminal: what needs a screen lives under screens/.
        ("babyllama_tui/corpora", {"textual", "textual_plotext"}),
        ("babyllama_tui/training", {"textual", "textual_plotext"}),
        ("babyllama_tui/playground", {"textual", "textual_plotext"}),
    ],
)
def test_package_source_never_imports_across_the_boundary(package, forbidden):
    offenders = {f: sorted(names & forbidden) for f, names in imported_roots(package).items() if names & forbidden}
    assert offenders == {}


def modules_loaded_by(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT)
    return set(out.stdout.split())


def test_app_process_never_loads_mindspore():
    loaded = modules_loaded_by("import babyllama_tui.app")
    assert "textual" in loaded
    assert not loaded & {"mindspore", "torch", "transformers"}


def test_cli_parser_loads_no_heavy_library():
    loaded = modules_loaded_by("from babyllama.cli import build_parser\nbuild_parser()")
    assert "argparse" in loaded
    assert not loaded & {"mindspore", "torch", "transformers", "textual"}


def module_files() -> dict[str, Path]:
    """Dotted name -> file for every module of the two packages (a package by its __init__.py)."""
    modules = {}
    for package in ("babyllama", "babyllama_tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def import_statements(modules: dict[str, Path]) -> dict[str, list[tuple[str, list[tuple[str, str]]]]]:
    """Per module, every import statement anywhere in it (functions, `if TYPE_CHECKING:` included), as
    (absolute module, [(name, alias)]); a plain `import a.b` has no names."""
    found = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        statements = []
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                statements.extend((alias.name, []) for alias in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
                source = ".".join([*base, *([node.module] if node.module else [])])
                statements.append((source, [(alias.name, alias.asname or alias.name) for alias in node.names]))
        found[name] = statements
    return found


def import_graph() -> dict[str, set[str]]:
    """Module -> the modules of the two packages it imports. A name taken from a package's __init__
    that only re-exports it counts as an import of the submodule that defines it."""
    modules = module_files()
    statements = import_statements(modules)

    def target(source: str, name: str, seen: frozenset = frozenset()) -> str | None:
        """The module `from source import name` depends on: a submodule of that name, else the module
        that defines the name when source is a package re-exporting it, else source itself."""
        if f"{source}.{name}" in modules:
            return f"{source}.{name}"
        if source not in modules:
            return None
        if modules[source].name == "__init__.py" and (source, name) not in seen:
            for inner, names in statements[source]:
                for original, alias in names:
                    if alias == name and (found := target(inner, original, seen | {(source, name)})):
                        return found
        return source

    graph = {name: set() for name in modules}
    for name, imports in statements.items():
        for source, names in imports:
            targets = [target(source, original) for original, _ in names] if names else [source]
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def cycle_through(graph: dict[str, set[str]], start: str) -> list[str] | None:
    """A shortest chain of imports from a module back to itself, if there is one."""
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        reached = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    return paths[node] + [start]
                if target not in paths:
                    paths[target] = paths[node] + [target]
                    reached.append(target)
        frontier = reached
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The shortest cycle through each module that is on one, each cycle once."""
    found: dict[frozenset[str], list[str]] = {}
    for start in sorted(graph):
        cycle = cycle_through(graph, start)
        if cycle:
            found.setdefault(frozenset(cycle), cycle)
    return list(found.values())


def test_no_import_cycles_in_the_packages():
    found = cycles(import_graph())
    assert not found, "modules that import each other:\n" + "\n".join(" -> ".join(cycle) for cycle in found)
