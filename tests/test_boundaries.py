"""The import rules of the house: the engine never imports the UI, the UI never imports MindSpore,
and the CLI builds its parser without paying for the heavy libraries."""

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
    [("babyllama", {"textual", "textual_plotext", "babyllama_tui"}), ("babyllama_tui", {"mindspore", "torch"})],
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
