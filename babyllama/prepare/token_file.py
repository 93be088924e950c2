"""The files prepare writes: NAME.bin, its manifest (and for conversations the loss mask
NAME.bin.mask), and the partial files and journal beside them while it runs; the counts a
manifest records; and what a failed write says.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from babyllama import __version__
from babyllama.errors import UserError

UINT16_VOCAB_LIMIT = 65536
SFT_KIND = "sft"


@dataclass
class Counts:
    documents: int = 0
    tokens: int = 0
    too_short: int = 0
    malformed: int = 0
    trained_tokens: int = 0  # conversations: the ids the loss mask trains on
    examples: list[str] = field(default_factory=list)
    cut_short: list[str] = field(default_factory=list)  # the last record of each file read only in part

    def skipped(self) -> dict:
        return {"too_short": self.too_short, "malformed": self.malformed}


@dataclass(frozen=True)
class OutputPaths:
    out: Path

    @property
    def manifest(self) -> Path:
        return self.out.with_name(self.out.name + ".json")

    @property
    def partial(self) -> Path:
        return self.out.with_name(self.out.name + ".partial")

    @property
    def journal(self) -> Path:
        return self.out.with_name(self.out.name + ".partial.json")

    @property
    def mask(self) -> Path:
        """An SFT token file's loss mask: a byte per token, 1 where the loss is counted."""
        return self.out.with_name(self.out.name + ".mask")

    @property
    def mask_partial(self) -> Path:
        return self.out.with_name(self.out.name + ".mask.partial")

    def all(self) -> tuple[Path, ...]:
        return (self.out, self.manifest, self.partial, self.journal, self.mask, self.mask_partial)


def build_manifest(
    tokenizer, dtype: str, counts: Counts, min_tokens: int, sources, created: str, sft: tuple[str, dict] | None = None
) -> dict:
    """The manifest of NAME.bin; with `sft`, (the mask file's name, the chat template's
    `describe()`), that of an SFT token file: "kind": "sft", its mask, the template, and how many
    conversations and trained tokens it holds."""
    manifest = {
        "kind": "babyllama-token-file",
        "version": 1,
        "dtype": dtype,
        "tokens": counts.tokens,
        "documents": counts.documents,
        "eos_id": tokenizer.eos_id,
        "vocab_size": tokenizer.vocab_size,
        "tokenizer": tokenizer.describe(),
        "skipped": {
            "too_short": counts.too_short,
            "malformed": counts.malformed,
            "examples": counts.examples,
            "cut_short": counts.cut_short,
        },
        "min_tokens": min_tokens,
        "sources": [{"path": str(s.path), "size": s.size, "format": s.format} for s in sources],
        "created": created,
        "babyllama_version": __version__,
    }
    if sft is None:
        return manifest
    mask, template = sft
    return {
        **manifest,
        "kind": SFT_KIND,
        "mask": mask,
        "chat_template": template,
        "conversations": counts.documents,
        "trained_tokens": counts.trained_tokens,
    }


@contextmanager
def writing(path: Path, fix: str = "fix that and run the same command again") -> Iterator[None]:
    """An OSError while writing `path` as a one-line UserError that says what to do."""
    try:
        yield
    except OSError as e:
        if e.errno in (errno.ENOSPC, errno.EDQUOT):
            fix = "free some space there and run the same command again"
        raise UserError(f"cannot write {path}: {e.strerror or e}; {fix}") from e
