"""The files a list of inputs names: files, the files below folders, and glob matches.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Sequence
from pathlib import Path

from babyllama.errors import UserError

_OUTPUT_SUFFIXES = (".bin", ".bin.json", ".partial", ".partial.json", ".jsonl.json")
_GLOB_CHARS = re.compile(r"[*?\[]")


def _is_ignored(name: str) -> bool:
    return name.startswith(".") or name.endswith(_OUTPUT_SUFFIXES)


def _files_below(folder: Path) -> list[Path]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        found += (Path(root) / name for name in files if not _is_ignored(name))
    return sorted(found)


def _expand_one(given: str | Path) -> list[Path]:
    path = Path(given)
    if path.is_file():
        return [path]
    if path.is_dir():
        files = _files_below(path)
        if not files:
            raise UserError(f"{given}: folder holds no corpus files")
        return files
    if _GLOB_CHARS.search(str(given)):
        files = []
        for match in sorted(Path(m) for m in glob.glob(str(given), recursive=True)):
            if match.is_dir():
                files += _files_below(match)
            elif match.is_file() and not _is_ignored(match.name):
                files.append(match)
        if not files:
            raise UserError(f"{given}: no file matches this pattern")
        return files
    raise UserError(f"{given}: no such file or folder")


def expand_inputs(inputs: Sequence[str | Path]) -> list[Path]:
    """Files named, files below folders (sorted by path; hidden files and our own outputs
    *.bin, *.bin.json, *.partial, *.partial.json and
    clean's manifests *.jsonl.json left out) and glob matches (sorted); each file once."""
    files: list[Path] = []
    seen: set[Path] = set()
    for given in inputs:
        for path in _expand_one(given):
            key = path.resolve()
            if key not in seen:
                seen.add(key)
                files.append(path)
    return files
