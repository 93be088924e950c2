"""The inputs of a prepare: the files to read, each with its format (sniffed under
`--format auto`), and what they held when none gave a document. See docs/ARCHITECTURE.md."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from babyllama.chat_template import BadConversation, ChatTemplate
from babyllama.corpora import (
    BadRecord,
    Document,
    UnrecognisedFile,
    check_format,
    describe_format,
    expand_inputs,
    is_sft_format,
    iter_records,
    sniff_format,
)
from babyllama.errors import UserError
from babyllama.prepare.token_file import OutputPaths

# Files an error message names one by one before it says how many more there are.
MAX_FILES_NAMED = 5


@dataclass(frozen=True)
class Source:
    path: Path
    format: str
    size: int
    mtime_ns: int


def resolve_sources(
    inputs: Sequence[str | Path], fmt: str, paths: OutputPaths
) -> tuple[list[Source], list[UnrecognisedFile]]:
    """The files to read, each with its format, and under --format auto the files left out
    because their format cannot be told."""
    check_format(fmt)
    own_files = {p.resolve() for p in paths.all()}
    sources = []
    left_out = []
    for path in expand_inputs(inputs):
        if path.resolve() in own_files:
            raise UserError(f"{path} is an output of this command, not a corpus; leave it out of the inputs")
        try:
            stat = path.stat()
        except OSError as e:
            raise UserError(f"cannot read {path}: {e.strerror}") from e
        file_format = fmt
        if fmt == "auto":
            try:
                file_format = sniff_format(path)
            except UnrecognisedFile as e:
                left_out.append(e)
                continue
        sources.append(Source(path, file_format, stat.st_size, stat.st_mtime_ns))
    return sources, left_out


def holds_conversations(sources: list[Source]) -> bool:
    """Whether the sources are conversations (the sft-* formats) or pretraining text; one token
    file holds one or the other, so a mix is refused, naming a file of each."""
    conversations = [s for s in sources if is_sft_format(s.format)]
    if conversations and len(conversations) < len(sources):
        text = next(s for s in sources if not is_sft_format(s.format))
        raise UserError(
            f"the inputs mix conversations for fine-tuning ({conversations[0].path}: {conversations[0].format}) "
            f"with pretraining text ({text.path}: {text.format}); a token file holds one or the other, so "
            "prepare each with its own command"
        )
    return bool(conversations)


def describe_left_out(left_out: list[UnrecognisedFile]) -> str:
    shown = ", ".join(f"{e.where} ({e.reason})" for e in left_out[:MAX_FILES_NAMED])
    more = len(left_out) - MAX_FILES_NAMED
    return (
        f"--format auto leaves out {len(left_out):,} file{'s' if len(left_out) > 1 else ''} it does not "
        f"recognise: {shown}" + (f" and {more:,} more" if more > 0 else "") + "; name a --format to read them"
    )


def what_was_found(source: Source, min_tokens: int, template: ChatTemplate | None = None) -> str:
    """What a file that gave no document holds, in a few words, and the format to try if it
    looks like another. With a chat `template`, the file's conversations are checked by it, and
    those it refuses count as malformed, as prepare counts them."""
    documents = bad = 0
    first_bad = cut = None
    for record in iter_records(source.path, source.format):
        if type(record) is Document and template is not None:
            try:
                template.encode([{"role": r, "content": c} for r, c in zip(record.roles, record.segments)])
            except BadConversation as e:
                record = BadRecord(record.path, record.line, str(e))
        if type(record) is Document:
            documents += 1
        elif record.rest_skipped:
            cut = record
        else:
            bad += 1
            first_bad = first_bad or record
    parts = []
    if documents:
        kind = "conversations" if template is not None else "documents"
        parts.append(f"{documents:,} {kind}, all shorter than --min-tokens {min_tokens} (ids, eos included)")
    if first_bad:
        parts.append(f"{bad:,} malformed records, the first on line {first_bad.line}: {first_bad.reason}")
    if cut:
        parts.append(f"line {cut.line}: {cut.reason}")
    found = f"{source.path}: " + (", ".join(parts) or ("empty" if source.size == 0 else "no records"))
    if documents or not (first_bad or cut):
        return found
    found += f" ({source.format} reads {describe_format(source.format)})"
    try:
        sniffed = sniff_format(source.path)
    except UnrecognisedFile:
        return found
    return found + (f"; try --format {sniffed}" if sniffed != source.format else "")


def nothing_to_write(found: list[str]) -> UserError:
    more = len(found) - MAX_FILES_NAMED
    return UserError(
        "no documents in the inputs, so nothing was written: " + "; ".join(found[:MAX_FILES_NAMED])
        + (f"; and {more:,} more files without one" if more > 0 else "")
    )
