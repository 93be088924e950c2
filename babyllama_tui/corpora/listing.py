"""What the corpora screen lists (corpora, token files, partial prepares, tokenizers), read cheaply.

Nothing here loads a tokenizer or reads a corpus past its first megabyte, and walks stop after
MAX_FILES_WALKED files. These functions block: call them from worker threads.
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path

from rich.cells import cell_len, get_character_cell_size

from babyllama.corpora import Document, iter_records, sniff_format
from babyllama.errors import UserError

TOKEN_FILE_SUFFIX = ".bin"
PARTIAL_SUFFIX = ".bin.partial"
# Manifests, journals, loss masks and our own outputs are listed with their token file, never as corpora.
# Token files and their manifests, partial files, and `babyllama clean`'s reports (NAME.jsonl.json).
NOT_CORPUS_SUFFIXES = (".bin", ".bin.json", ".bin.mask", ".partial", ".partial.json", ".jsonl.json")
ESTIMATE_SAMPLE_BYTES = 1 << 20
MAX_FILES_WALKED = 20_000
OWN_TOKENIZER_CONFIG = "babyllama_tokenizer.json"
TOKENIZER_MARKERS = ("tokenizer.model", "tokenizer_config.json", "tokenizer.json")


class TokenFileState:
    READY = "ready"
    PREPARING = "preparing"
    INTERRUPTED = "interrupted"
    BROKEN = "broken"


@dataclass(frozen=True)
class CorpusStamp:
    """What stat says of a corpus's files: a change means the corpus changed."""

    files: int
    size: int
    newest_mtime_ns: int
    # False when a folder held more than MAX_FILES_WALKED files: files and size are lower bounds.
    complete: bool


@dataclass(frozen=True)
class CorpusEntry:
    path: Path
    is_folder: bool
    files: int
    size: int
    # False when a folder held more than MAX_FILES_WALKED files: files and size are lower bounds.
    complete: bool
    format: str | None
    problem: str | None
    documents: int | None
    documents_exact: bool
    stamp: CorpusStamp | None = None


@dataclass(frozen=True)
class ResumePlan:
    """The `babyllama prepare` command an unfinished token file was started with, as its
    journal records it; the tokenizer is known only by its fingerprint."""

    out: Path
    inputs: tuple[str, ...]
    format: str
    min_tokens: int
    tokenizer_fingerprint: str


@dataclass(frozen=True)
class TokenFileEntry:
    path: Path  # NAME.bin, or NAME.bin.partial while unfinished
    state: str
    size: int
    tokens: int | None = None
    documents: int | None = None
    dtype: str | None = None
    vocab_size: int | None = None
    tokenizer_name: str | None = None
    tokenizer_kind: str | None = None
    tokenizer_path: str | None = None
    tokenizer_fingerprint: str | None = None
    skipped: dict = field(default_factory=dict)
    sources: tuple[dict, ...] = ()  # the manifest's: {"path", "size", "format"}
    problem: str | None = None
    pid: int | None = None  # the prepare process writing it
    done_fraction: float | None = None
    resume: ResumePlan | None = None
    # An SFT token file (conversations with a loss mask, for fine-tuning): its manifest's counts.
    sft: bool = False
    conversations: int | None = None
    trained_tokens: int | None = None

    @property
    def out(self) -> Path:
        """The finished token file's name."""
        return self.path.with_name(self.path.name.removesuffix(".partial"))


@dataclass(frozen=True)
class TokenizerEntry:
    path: Path
    name: str
    kind: str | None  # None until `babyllama tokenizer info` has looked at it
    vocab_size: int | None
    fingerprint: str | None
    origin: str

    def describe(self) -> str:
        kind = self.kind or "not checked yet"
        vocab = f", vocab {self.vocab_size:,}" if self.vocab_size else ""
        return f"{self.name} ({kind}{vocab})"


@dataclass(frozen=True)
class FolderContents:
    corpora: list[Path]
    token_files: list[Path]
    partials: list[Path]


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_corpus_name(name: str) -> bool:
    # A README in data/ (the project ships one) describes the folder; it is not a corpus.
    return not (_is_hidden(name) or name.endswith(NOT_CORPUS_SUFFIXES) or name.upper().startswith("README"))


def read_folder(folder: Path) -> FolderContents:
    """The corpora at the top of `folder` (files, and folders holding corpus files), and token
    files anywhere below it. The walk stops after MAX_FILES_WALKED files; a folder it did not
    reach is listed as a corpus and looked at when it is described."""
    corpora: list[Path] = []
    token_files: list[Path] = []
    partials: list[Path] = []
    top_folders: list[Path] = []
    with_corpus_files: set[str] = set()
    walked = 0
    complete = True
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        here = Path(root)
        if here == folder:
            top_folders = [here / d for d in dirs]
        for name in sorted(files):
            if name.endswith(TOKEN_FILE_SUFFIX):
                token_files.append(here / name)
            elif name.endswith(PARTIAL_SUFFIX):
                partials.append(here / name)
            elif here == folder:
                if _is_corpus_name(name):
                    corpora.append(here / name)
            elif _is_corpus_name(name):
                with_corpus_files.add(here.relative_to(folder).parts[0])
        walked += len(files)
        if walked >= MAX_FILES_WALKED:
            complete = False
            break
    # A folder of token files only (such as the seed's published shards) is not a corpus.
    corpora += (d for d in top_folders if d.name in with_corpus_files or not complete)
    return FolderContents(sorted(corpora), token_files, partials)


def corpus_files_below(folder: Path, limit: int = MAX_FILES_WALKED) -> tuple[list[Path], bool]:
    """Corpus files below `folder` in the order prepare reads them, and whether that is all of them."""
    found: list[Path] = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]
        found += (Path(root) / name for name in files if _is_corpus_name(name))
        if len(found) >= limit:
            return sorted(found)[:limit], False
    return sorted(found), True


def estimate_documents(files: list[Path], fmt: str, total_size: int) -> tuple[int | None, bool]:
    """Documents in `files`, counted in the first ESTIMATE_SAMPLE_BYTES of the first file and
    scaled by size; exact (True) when that was all there is."""
    first = files[0]
    count = 0
    end = 0
    read_all = True
    try:
        with closing(iter_records(first, fmt)) as records:
            for record in records:
                count += type(record) is Document
                end = record.end
                if end >= ESTIMATE_SAMPLE_BYTES:
                    read_all = False
                    break
    except (UserError, OSError):
        return None, False
    if read_all and len(files) == 1:
        return count, True
    if read_all:
        end = first.stat().st_size
    if end <= 0:
        return None, False
    return round(count * total_size / end), False


def corpus_files(path: Path) -> tuple[list[Path], bool]:
    """The files of a corpus (itself, or the corpus files below a folder), and whether that is all."""
    if path.is_dir():
        return corpus_files_below(path)
    return [path], True


def read_corpus_stamp(path: Path) -> CorpusStamp:
    """Stat of a corpus's files, taken in the order the folders give them, with no paths built or
    sorted: cheap enough to repeat every few seconds (about 5 ms for a thousand files)."""
    if not path.is_dir():
        try:
            stat = path.stat()
        except OSError:
            return CorpusStamp(0, 0, 0, True)
        return CorpusStamp(1, stat.st_size, stat.st_mtime_ns, True)
    files = size = newest = 0
    folders = [path]
    while folders:
        try:
            with os.scandir(folders.pop()) as entries:
                found = list(entries)
        except OSError:
            continue
        for entry in found:
            if entry.is_dir():
                # As os.walk in corpus_files_below: linked folders are not entered.
                if not (_is_hidden(entry.name) or entry.is_symlink()):
                    folders.append(entry.path)
            elif _is_corpus_name(entry.name):
                try:
                    stat = entry.stat()
                except OSError:
                    continue
                files += 1
                size += stat.st_size
                newest = max(newest, stat.st_mtime_ns)
                if files >= MAX_FILES_WALKED:
                    return CorpusStamp(files, size, newest, False)
    return CorpusStamp(files, size, newest, True)


def describe_corpus(path: Path, stamp: CorpusStamp | None = None) -> CorpusEntry:
    """A corpus file or folder: format of its first file, size, document estimate. `stamp` is
    its stat, when the caller has just read it."""
    is_folder = path.is_dir()
    files, complete = corpus_files(path)
    stamp = stamp if stamp is not None else read_corpus_stamp(path)
    size = stamp.size
    if not files:
        return CorpusEntry(path, is_folder, 0, 0, True, None, "holds no corpus files", None, False, stamp)
    try:
        fmt = sniff_format(files[0])
    except UserError as e:
        return CorpusEntry(path, is_folder, len(files), size, complete, None, str(e), None, False, stamp)
    documents, exact = estimate_documents(files, fmt, size)
    return CorpusEntry(path, is_folder, len(files), size, complete, fmt, None, documents, exact and complete, stamp)


def restamped(entry: CorpusEntry, stamp: CorpusStamp) -> CorpusEntry:
    """`entry` with the files and size `stamp` gives, its document count scaled to the new size
    (an estimate from then on): what a corpus that grew looks like without reading it again."""
    documents = entry.documents
    if documents is not None and stamp.size != entry.size:
        documents = round(documents * stamp.size / entry.size) if entry.size else None
    return replace(
        entry,
        files=stamp.files,
        size=stamp.size,
        complete=stamp.complete,
        documents=documents,
        documents_exact=entry.documents_exact and stamp.size == entry.size and stamp.complete,
        stamp=stamp,
    )


def tree_stamp(folder: Path) -> tuple[tuple[str, int], ...]:
    """The modification times of `folder` and of the folders below it, as far as read_folder
    walks: a file added, removed or renamed anywhere in it changes one of them."""
    stamps = []
    walked = 0
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not _is_hidden(d))
        try:
            stamps.append((root, os.stat(root).st_mtime_ns))
        except OSError:
            continue
        walked += len(files)
        if walked >= MAX_FILES_WALKED:
            break
    return tuple(stamps)


def _prepare_out_argument(cmdline: list[str]) -> str | None:
    """The --out of a `babyllama prepare` command line, or None if it is not one."""
    try:
        command_at = cmdline.index("prepare")
    except ValueError:
        return None
    if not any(Path(arg).name == "babyllama" for arg in cmdline[:command_at]):
        return None
    for i, arg in enumerate(cmdline[command_at + 1 :], command_at + 1):
        if arg == "--out" and i + 1 < len(cmdline):
            return cmdline[i + 1]
        if arg.startswith("--out="):
            return arg[len("--out=") :]
    return None


def running_prepares() -> dict[Path, int]:
    """Token files being written by a live `babyllama prepare` on this machine: out path -> pid."""
    # Imported here: only needed when an unfinished token file is listed, and the app starts faster.
    import psutil

    candidates: dict[Path, list[tuple[int, int]]] = {}
    for process in psutil.process_iter(["pid", "ppid", "cmdline", "cwd", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE or not info["cmdline"] or not info["cwd"]:
            continue
        out = _prepare_out_argument(info["cmdline"])
        if out is not None:
            candidates.setdefault(Path(info["cwd"], out).resolve(), []).append((info["pid"], info["ppid"]))
    # Its encoding workers are forks with the same command line: the main process is the one
    # whose parent is not among them.
    running = {}
    for out, processes in candidates.items():
        pids = {pid for pid, _ in processes}
        mains = [pid for pid, ppid in processes if ppid not in pids]
        running[out] = min(mains or pids)
    return running


def describe_token_file(path: Path) -> TokenFileEntry:
    # babyllama.data imports numpy: paid here, in a worker, instead of at the app's start.
    from babyllama.data import is_sft_data, open_token_file

    try:
        size = path.stat().st_size
        # Each file with the reader of its kind: an SFT file is not a broken pretraining one.
        token_file = open_token_file(path, sft=is_sft_data(path))
    except (UserError, OSError) as e:
        return TokenFileEntry(path, TokenFileState.BROKEN, size=0, problem=str(e))
    manifest = token_file.manifest
    if manifest is None:
        return TokenFileEntry(
            path,
            TokenFileState.READY,
            size,
            tokens=token_file.n_tokens,
            dtype=token_file.dtype.name,
            vocab_size=token_file.vocab_size,
            tokenizer_name="ChatGLM2 (no manifest: the seed's corpus)",
            tokenizer_kind="chatglm",
        )
    tokenizer = manifest.get("tokenizer") or {}
    skipped = manifest.get("skipped") if isinstance(manifest.get("skipped"), dict) else {}
    return TokenFileEntry(
        path,
        TokenFileState.READY,
        size,
        tokens=token_file.n_tokens,
        documents=manifest.get("documents"),
        dtype=token_file.dtype.name,
        vocab_size=token_file.vocab_size,
        tokenizer_name=tokenizer.get("name"),
        tokenizer_kind=tokenizer.get("kind"),
        tokenizer_path=tokenizer.get("path"),
        tokenizer_fingerprint=tokenizer.get("sha256"),
        skipped=skipped,
        sources=tuple(source for source in manifest.get("sources") or () if isinstance(source, dict)),
        sft=token_file.mask_path is not None,
        conversations=manifest.get("conversations"),
        trained_tokens=manifest.get("trained_tokens"),
    )


def describe_partial(partial: Path, running: dict[Path, int]) -> TokenFileEntry:
    """An unfinished token file, from the journal `babyllama prepare` keeps beside it."""
    # babyllama.prepare imports numpy and sentencepiece: paid here, in a worker.
    from babyllama.prepare import OutputPaths, read_journal

    paths = OutputPaths(partial.with_name(partial.name.removesuffix(".partial")))
    pid = running.get(paths.out.resolve())
    state = TokenFileState.PREPARING if pid else TokenFileState.INTERRUPTED
    try:
        size = partial.stat().st_size
    except OSError:
        size = 0
    journal = read_journal(paths.journal)
    if journal is None:
        problem = None if pid else f"{paths.journal.name} is missing: prepare cannot resume it and will start over"
        return TokenFileEntry(partial, state, size, problem=problem, pid=pid)
    options = journal.get("options", {})
    counts = journal.get("counts", {})
    inputs = options.get("inputs", [])
    sizes = [source.get("size", 0) for source in inputs]
    position = journal.get("position", {})
    done = sum(sizes[: position.get("file", 0)]) + position.get("end", 0)
    total = sum(sizes)
    return TokenFileEntry(
        partial,
        state,
        size,
        tokens=counts.get("tokens"),
        documents=counts.get("documents"),
        dtype=options.get("dtype"),
        tokenizer_fingerprint=options.get("tokenizer"),
        skipped={"too_short": counts.get("too_short", 0), "malformed": counts.get("malformed", 0)},
        pid=pid,
        done_fraction=min(done / total, 1.0) if total else None,
        resume=ResumePlan(
            out=paths.out,
            inputs=tuple(source["path"] for source in inputs),
            format=options.get("format", "auto"),
            min_tokens=options.get("min_tokens", 6),
            tokenizer_fingerprint=options.get("tokenizer", ""),
        ),
    )


def list_token_files(folders: list[Path]) -> list[TokenFileEntry]:
    entries = []
    contents = [read_folder(folder) for folder in folders if folder.is_dir()]
    running = running_prepares() if any(c.partials for c in contents) else {}
    for folder_contents in contents:
        entries += (describe_token_file(path) for path in folder_contents.token_files)
        entries += (describe_partial(path, running) for path in folder_contents.partials)
    return sorted(entries, key=lambda entry: str(entry.path))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _project_tokenizer(folder: Path) -> TokenizerEntry | None:
    if not any((folder / marker).is_file() for marker in TOKENIZER_MARKERS):
        return None
    config = _read_json(folder / "tokenizer_config.json")
    kind = "chatglm" if config.get("tokenizer_class") == "ChatGLMTokenizer" else None
    return TokenizerEntry(folder, folder.name, kind, None, None, "in the project")


def list_tokenizers(root: Path, token_files: list[TokenFileEntry]) -> list[TokenizerEntry]:
    """Ours in out/tokenizers/, tokenizer folders at the top of the project (such as the seed's
    chatglm_tokenizer/), and the tokenizers token-file manifests name, each path once."""
    found: dict[Path, TokenizerEntry] = {}

    def add(entry: TokenizerEntry) -> None:
        found.setdefault(entry.path.resolve(), entry)

    own = root / "out" / "tokenizers"
    if own.is_dir():
        for folder in sorted(own.iterdir()):
            config = _read_json(folder / OWN_TOKENIZER_CONFIG)
            if config and not _is_hidden(folder.name):
                add(TokenizerEntry(
                    folder, folder.name, config.get("kind"), config.get("vocab_size"), config.get("sha256"),
                    "trained here",
                ))
    if root.is_dir():
        for folder in sorted(root.iterdir()):
            if folder.is_dir() and not _is_hidden(folder.name) and folder.name not in ("data", "out"):
                if entry := _project_tokenizer(folder):
                    add(entry)
    for token_file in token_files:
        if token_file.tokenizer_path and Path(token_file.tokenizer_path).exists():
            path = Path(token_file.tokenizer_path)
            add(TokenizerEntry(
                path, token_file.tokenizer_name or path.name, token_file.tokenizer_kind, token_file.vocab_size,
                token_file.tokenizer_fingerprint, f"made {token_file.path.name}",
            ))
    return list(found.values())


def format_count(n: float | None, approximate: bool = False) -> str:
    """1234 -> "1,234", 1234567 -> "1.2M"; "~" in front of an estimate, "-" for unknown."""
    if n is None:
        return "-"
    prefix = "~" if approximate else ""
    for unit, size in (("G", 1e9), ("M", 1e6)):
        if n >= size:
            return f"{prefix}{n / size:.1f}{unit}"
    if n >= 1e5:
        return f"{prefix}{n / 1e3:.0f}k"
    return f"{prefix}{n:,.0f}"


def format_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n:.0f} B"


def elide_middle(name: str, width: int) -> str:
    """`name` in at most `width` cells, with "…" for its middle when it is longer. Its last path
    part ("c4/"), or else its suffixes (".jsonl"), is kept whole while there is room: rows that
    differ only near their end (part-0001.jsonl, part-0002.jsonl) must stay told apart."""
    if cell_len(name) <= width:
        return name
    if width <= 1:
        return "…"[:width]
    last = name[name.rstrip("/").rfind("/") + 1 :]
    dot = last.find(".", 1)
    suffix = last[dot:] if dot > 0 else ""
    if "/" in name.rstrip("/") and cell_len(last) <= width - 4:
        kept = last
    elif cell_len(suffix) <= width // 2:
        kept = suffix
    else:
        kept = ""
    stem = name[: len(name) - len(kept)]
    room = width - 1 - cell_len(kept)
    head = _cells_from_start(stem, room // 2)
    tail = _cells_from_end(stem, room - cell_len(head))
    return head + "…" + tail + kept


def _cells_from_start(text: str, cells: int) -> str:
    used = 0
    for index, character in enumerate(text):
        used += get_character_cell_size(character)
        if used > cells:
            return text[:index]
    return text


def _cells_from_end(text: str, cells: int) -> str:
    return _cells_from_start(text[::-1], cells)[::-1]
