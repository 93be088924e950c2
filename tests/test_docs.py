"""The map stays true: docs/ARCHITECTURE.md names every module of both packages, and no file
of the repository points to a document the repository does not hold."""

from __future__ import annotations

import re
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


# The tables of the engine's own modules (`babyllama/NAME.py`, `babyllama/runs/NAME.py`), by their captions.
ENGINE_TABLES = ("Entry and shared helpers", "Data: corpora to token files to batches", "Model and training",
                 "Using a checkpoint")


def test_the_engine_modules_line_counts_are_near_wc():
    """Counts are from `wc -l` when a module last changed much: a count far from it is stale."""
    caption, stale = None, []
    for line in ARCHITECTURE.read_text(encoding="utf-8").splitlines():
        if line and not line.startswith("|"):
            caption = line
        match = re.fullmatch(r"\| `([\w/]+\.py)` \| (\d+) \|.*", line)
        if match and caption in ENGINE_TABLES and (ROOT / "babyllama" / match.group(1)).is_file():
            counted = len((ROOT / "babyllama" / match.group(1)).read_text(encoding="utf-8").splitlines())
            if abs(counted - int(match.group(2))) > max(10, counted // 20):
                stale.append(f"{match.group(1)}: {match.group(2)}, wc -l {counted}")
    assert stale == []


def test_the_checkpoint_table_has_a_row_for_each_file_of_a_checkpoint():
    from babyllama.checkpoint import CHECKPOINT_FILES

    doc = ARCHITECTURE.read_text(encoding="utf-8")
    table = doc[doc.index("**Checkpoints** (`babyllama.checkpoint`)"):].split("\n\n")[1]
    rows = re.findall(r"^\| `([\w.]+)` \|", table, flags=re.MULTILINE)
    assert sorted(rows) == sorted(CHECKPOINT_FILES)
