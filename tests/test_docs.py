"""The map stays true: docs/ARCHITECTURE.md names every module of both packages, and no file
of the repository points to a document the repository does not hold."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ARCHITECTURE = ROOT / "docs" / "ARCHITECTURE.md"
# Documents of the project's seed that were never part of this repository.
OUTSIDE_DOCUMENTS = ("MINDSPORE-NOTES", "DESIGN.md")


def test_architecture_names_every_module():
    doc = ARCHITECTURE.read_text(encoding="utf-8")
    missing = []
    for package in ("babyllama", "babyllama_tui"):
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.name in ("__init__.py", "__main__.py"):
                continue
            if f"`{path.name}`" not in doc and f"`{path.stem}`" not in doc:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == [], f"add these modules to {ARCHITECTURE.relative_to(ROOT)}: {missing}"


def test_no_file_cites_a_document_outside_the_repository():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    citing = []
    for name in tracked:
        path = ROOT / name
        if path == Path(__file__).resolve() or not path.is_file() or path.suffix in (".png", ".svg", ".bin"):
            continue
        text = path.read_text(encoding="utf-8", errors="replace")
        citing += [f"{name}: {doc}" for doc in OUTSIDE_DOCUMENTS if doc in text]
    assert citing == []
