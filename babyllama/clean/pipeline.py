"""`clean()`: inputs to NAME.jsonl and its manifest in three resumable phases. scan: filters,
hashes and signatures, chunk by chunk on all cores; dedup: duplicate clusters over what scan
kept; write: the inputs read again, the kept documents written as JSON lines `{"text"}`.
See docs/ARCHITECTURE.md."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Sequence
from contextlib import closing, contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from importlib.metadata import version
from pathlib import Path

import numpy as np
import rensa

from babyllama import __version__
from babyllama.clean.dedup import duplicate_codes, find_duplicates
from babyllama.clean.scan import DEFAULT_CHUNK_BYTES, Position, analyse_in_order, default_workers, read_chunks
from babyllama.clean.settings import DUPLICATE_RULES, FILTER_RULES, RULES, CleanSettings
from babyllama.clean.signatures import excerpt
from babyllama.clean.work import JOURNAL_KIND, ChunkStore, CleanPaths, discard, read_journal, write_journal
from babyllama.corpora import is_sft_format
from babyllama.errors import UserError
from babyllama.files import atomic_write_json
from babyllama.prepare.sources import describe_left_out, nothing_to_write, resolve_sources, what_was_found
from babyllama.prepare.token_file import writing

MANIFEST_KIND = "babyllama-clean"
DEFAULT_MEMORY_BYTES = 512 << 20
EXAMPLES = 5  # removed documents the manifest shows for each rule (more with --explain)
MAX_MALFORMED_NAMED = 20
PROGRESS_INTERVAL_S = 0.2
EXACT_CODE = 1 + RULES.index("exact_duplicate")
NEAR_CODE = 1 + RULES.index("near_duplicate")

ProgressCallback = Callable[[dict], None]


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class Tracker:
    """Progress events, about 5 a second at most, one always at the end of a phase."""

    def __init__(self, emit: ProgressCallback, total_bytes: int):
        self.emit = emit
        self.total_bytes = total_bytes
        self.started = time.monotonic()
        self.phase_started = self.started
        self.phase_from = 0
        self.last = float("-inf")

    def phase(self, done_bytes: int) -> None:
        self.phase_started, self.phase_from = time.monotonic(), done_bytes

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def update(self, phase: str, done_bytes: int, journal: dict, final: bool = False, **extra) -> None:
        now = time.monotonic()
        if not final and now - self.last < PROGRESS_INTERVAL_S:
            return
        self.last = now
        spent = now - self.phase_started
        rate = (done_bytes - self.phase_from) / spent if spent > 0 else 0.0
        self.emit({
            "event": "progress",
            "phase": phase,
            "bytes": done_bytes,
            "total_bytes": self.total_bytes,
            "documents": journal["documents"],
            "kept": journal["write"]["kept"] if phase == "write" else None,
            "removed": removed_counts(journal),
            "malformed": journal["malformed"],
            "mb_per_s": round(rate / 1e6, 3),
            "eta_s": round((self.total_bytes - done_bytes) / rate, 1) if rate > 0 else None,
            "elapsed_s": round(self.elapsed(), 3),
            **extra,
        })


def removed_counts(journal: dict) -> dict:
    return {rule: journal["counts"].get(rule, 0) for rule in RULES}


def new_journal(options: dict) -> dict:
    return {
        "kind": JOURNAL_KIND,
        "version": 1,
        "options": options,
        "phase": "scan",
        "chunks": 0,
        "documents": 0,
        "position": asdict(Position()),
        "counts": {rule: 0 for rule in RULES},
        "malformed": 0,
        "malformed_examples": [],
        "cut_short": [],
        "examples": {rule: [] for rule in RULES},
        "duplicates": None,
        "write": {"position": asdict(Position()), "documents": 0, "kept": 0, "bytes": 0, "found": {}},
        "finished": None,
    }


def clean(
    inputs: Sequence[str | Path],
    fmt: str,
    out: Path,
    settings: CleanSettings = CleanSettings(),
    *,
    workers: int | None = None,
    progress: ProgressCallback | None = None,
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    memory_bytes: int = DEFAULT_MEMORY_BYTES,
    examples: int = EXAMPLES,
    resume: bool = True,
    force: bool = False,
) -> dict:
    """Clean `inputs` into `out` (NAME.jsonl, a `{"text"}` a line) and its manifest NAME.jsonl.json;
    returns the manifest. `workers`: processes for the scan (None: one per core; 0 or 1: this one).
    `memory_bytes`: what the duplicate search's passes may hold at once. `examples`: removed
    documents the manifest keeps for each rule."""
    emit = progress or (lambda event: None)
    settings.validate()
    paths = CleanPaths(Path(out))
    if paths.out.suffix != ".jsonl":
        raise UserError(f"--out {paths.out} must name a .jsonl file, e.g. data/NAME.clean.jsonl")
    with holding(paths):
        return clean_locked(inputs, fmt, paths, settings, emit, workers, chunk_bytes, memory_bytes, examples,
                            resume, force)


@contextmanager
def holding(paths: CleanPaths):
    """The output's lock for the whole run: a second clean of the same --out (from the CLI or the
    app) would discard or overwrite the first one's work folder under it."""
    paths.out.parent.mkdir(parents=True, exist_ok=True)
    while True:
        lock = open(paths.lock, "a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise UserError(f"another clean is writing {paths.out}; wait for it to finish, or choose another --out")
        # A run that finished between our open and flock removed the name: lock the new file instead.
        if paths.lock.exists() and os.stat(paths.lock).st_ino == os.fstat(lock.fileno()).st_ino:
            break
        lock.close()
    try:
        yield
    finally:
        paths.lock.unlink(missing_ok=True)
        lock.close()


def clean_locked(inputs, fmt, paths, settings, emit, workers, chunk_bytes, memory_bytes, examples, resume,
                 force) -> dict:
    sources, left_out = resolve_sources(inputs, fmt, paths)
    if not sources:
        raise nothing_to_write([f"{e.where}: {e.reason} ({e.hint})" for e in left_out])
    for source in sources:
        if is_sft_format(source.format):
            raise UserError(f"{source.path}: {source.format} holds conversations for fine-tuning; clean reads "
                            "pretraining text (choose a pretraining --format)")
    if left_out:
        emit({"event": "note", "message": describe_left_out(left_out)})
    workers = default_workers() if workers is None else workers
    options = {
        "inputs": [{"path": str(s.path.resolve()), "size": s.size, "mtime_ns": s.mtime_ns, "format": s.format}
                   for s in sources],
        "format": fmt,
        "settings": settings.as_dict(),
        "minhash": minhash_library(),
        "examples": examples,
    }
    journal = journal_to_resume(paths, options, resume, force, emit)
    if journal is None:
        discard(paths)
        paths.work.mkdir(parents=True)
        journal = new_journal(options)
        write_journal(paths, journal)
    else:
        emit({"event": "note", "message": f"resuming in the {journal['phase']} phase "
              f"({journal['documents']:,} documents scanned)"})
    offsets = np.cumsum([0] + [s.size for s in sources]).tolist()
    total = offsets[-1]

    def done_bytes(position: dict) -> int:
        return offsets[position["file"]] + position["end"]

    tracker = Tracker(emit, total)
    resumed = done_bytes(journal["position"]) if journal["phase"] == "scan" else total
    emit({"event": "start", "out": str(paths.out), "files": len(sources), "total_bytes": total,
          "resumed_bytes": resumed,
          "workers": workers, "settings": settings.as_dict(), "bands": list(settings.bands)})
    store = ChunkStore(paths.work)
    with writing(paths.work):
        if journal["phase"] == "scan":
            tracker.phase(done_bytes(journal["position"]))
            journal = scan(sources, journal, paths, store, settings, workers, chunk_bytes, examples,
                           lambda j: tracker.update("scan", done_bytes(j["position"]), j))
            tracker.update("scan", total, journal, final=True)
            if journal["documents"] == 0:
                discard(paths)
                raise nothing_to_write([what_was_found(source, 0) for source in sources])
        store.open(journal["chunks"])
        if journal["phase"] == "dedup":
            # Past the whole input: the bar stays full while the passes run.
            tracker.phase(total)
            journal = dedup(journal, paths, store, settings, memory_bytes, examples,
                            lambda done, steps: tracker.update("dedup", total, journal, final=done == steps,
                                                               passes=done, total_passes=steps))
        if journal["phase"] == "write":
            tracker.phase(done_bytes(journal["write"]["position"]))
            journal = write_kept(sources, journal, paths, chunk_bytes,
                                 lambda j: tracker.update("write", done_bytes(j["write"]["position"]), j))
            tracker.update("write", total, journal, final=True)
    if journal["write"]["kept"] == 0:
        discard(paths)
        raise everything_removed(journal)
    for entry in journal["cut_short"]:
        emit({"event": "warning", "message": f"{entry}; the records before it are kept"})
    manifest = build_manifest(journal, sources, settings)
    finish(paths, manifest, force)
    emit({"event": "done", "out": str(paths.out), "manifest": str(paths.manifest),
          **{key: manifest[key] for key in ("documents_in", "documents_out", "removed", "malformed",
                                            "malformed_examples", "cut_short", "examples", "duplicate_clusters")},
          "elapsed_s": round(tracker.elapsed(), 3),
          # The input this run scanned (not what a run before it did), over this run's time.
          "mb_per_s": round((total - resumed) / max(tracker.elapsed(), 1e-9) / 1e6, 3)})
    return manifest


def everything_removed(journal: dict) -> UserError:
    removed = {rule: n for rule, n in removed_counts(journal).items() if n}
    first = next((journal["examples"][rule][0] for rule in FILTER_RULES if journal["examples"][rule]), None)
    return UserError(
        f"all {journal['documents']:,} documents were removed ("
        + ", ".join(f"{rule} {n:,}" for rule, n in removed.items()) + "), so nothing was written"
        + (f"; the first: {first['where']}: {first['measured']}" if first else "")
        + "; loosen the settings of those rules"
    )


def minhash_library() -> str:
    return f"rensa {version('rensa')} (algorithm {rensa.RMinHash.ALGORITHM_VERSION})"


def journal_to_resume(paths: CleanPaths, options: dict, resume: bool, force: bool, emit) -> dict | None:
    journal = read_journal(paths.journal)
    if journal and journal["finished"] and paths.out.exists() and not paths.partial.exists():
        # The run that wrote it stopped between renaming NAME.jsonl into place and removing its work folder.
        shutil.rmtree(paths.work, ignore_errors=True)
        journal = None
    if paths.out.exists() and not force:
        raise UserError(f"{paths.out} already exists; pass --force to replace it, or choose another --out")
    if journal and not resume:
        emit({"event": "note", "message": "starting over (--restart): the unfinished run's progress is dropped"})
        return None
    if journal and journal["options"] != options:
        changed = [key for key in options if journal["options"].get(key) != options[key]]
        emit({"event": "note", "message": f"starting over: the interrupted run had other {', '.join(changed)}"})
        return None
    return journal


def scan(sources, journal, paths, store, settings, workers, chunk_bytes, examples, on_chunk) -> dict:
    wanted = {rule: examples for rule in FILTER_RULES}
    start = Position(**journal["position"])
    with closing(read_chunks(sources, start, chunk_bytes)) as chunks, closing(
        analyse_in_order(chunks, settings, workers, wanted)
    ) as results:
        for chunk, result in results:
            store.save(journal["chunks"], result)
            counts = dict(journal["counts"])
            for code, n in enumerate(np.bincount(result.status, minlength=len(FILTER_RULES) + 1)[1:], start=1):
                counts[FILTER_RULES[code - 1]] += int(n)
            found = {rule: list(items) for rule, items in journal["examples"].items()}
            for index, rule, measured, text in result.examples:
                if len(found[rule]) < examples:
                    found[rule].append({"where": chunk.wheres[index], "measured": measured, "text": text})
            journal = dict(
                journal,
                chunks=journal["chunks"] + 1,
                documents=journal["documents"] + len(chunk.texts),
                position=asdict(chunk.next_position),
                counts=counts,
                malformed=journal["malformed"] + len(chunk.malformed),
                malformed_examples=(journal["malformed_examples"] + chunk.malformed)[:MAX_MALFORMED_NAMED],
                cut_short=journal["cut_short"] + chunk.cut_short,
                examples=found,
            )
            write_journal(paths, journal)
            on_chunk(journal)
    journal = dict(journal, phase="dedup")
    write_journal(paths, journal)
    return journal


def dedup(journal, paths, store, settings, memory_bytes, examples, on_pass) -> dict:
    """Decide every document (the decisions file) and record the duplicates in the journal."""
    decisions = np.lib.format.open_memmap(paths.decisions, mode="w+", dtype=np.uint8,
                                          shape=(max(journal["documents"], 1),))
    union = None
    if settings.dedup:
        union, result = find_duplicates(store, paths.parents, settings.bands[0], settings.threshold, memory_bytes,
                                        examples, on_pass)
    else:
        result = None
    wanted = {}  # candidate index -> document index, for the examples and largest clusters
    if result is not None:
        wanted = {c: None for pairs in result.examples.values() for pair in pairs for c in pair[:2]}
        wanted.update({root: None for root, _ in result.largest})
    document = 0
    for chunk in range(store.chunks):
        status = np.asarray(store.load(chunk, "status"))
        codes = status.copy()
        kept = np.flatnonzero(status == 0)
        if union is not None:
            _, exact, near = duplicate_codes(store, union, chunk)
            codes[kept[exact]] = EXACT_CODE
            codes[kept[near]] = NEAR_CODE
            first = store.offsets[chunk]
            for candidate in [c for c in wanted if first <= c < store.offsets[chunk + 1]]:
                wanted[candidate] = document + int(kept[candidate - first])
        decisions[document:document + len(status)] = codes
        document += len(status)
    decisions.flush()
    del decisions
    counts = dict(journal["counts"])
    duplicates = {"sizes": {}, "largest": [], "examples": {}}
    if result is not None:
        counts["exact_duplicate"], counts["near_duplicate"] = result.exact, result.near
        duplicates = {
            "sizes": {str(size): n for size, n in sorted(result.cluster_sizes.items())},
            "largest": [{"document": wanted[root], "size": size} for root, size in result.largest],
            "examples": {kind: [{"document": wanted[a], "kept": wanted[b], "similarity": s} for a, b, s in pairs]
                         for kind, pairs in result.examples.items()},
        }
    journal = dict(journal, phase="write", counts=counts, duplicates=duplicates)
    write_journal(paths, journal)
    paths.parents.unlink(missing_ok=True)
    return journal


def write_kept(sources, journal, paths, chunk_bytes, on_chunk) -> dict:
    """The kept documents, in input order, as JSON lines; the texts the duplicate examples need."""
    decisions = np.load(paths.decisions, mmap_mode="r")
    state = journal["write"]
    needed = {d["document"] for d in journal["duplicates"]["largest"]}
    for pairs in journal["duplicates"]["examples"].values():
        needed |= {p[key] for p in pairs for key in ("document", "kept")}
    with writing(paths.partial):
        file = open(paths.partial, "r+b" if state["bytes"] else "wb")
    with file, writing(paths.partial):
        file.truncate(state["bytes"])
        file.seek(state["bytes"])
        with closing(read_chunks(sources, Position(**state["position"]), chunk_bytes)) as chunks:
            for chunk in chunks:
                first = state["documents"]
                codes = decisions[first:first + len(chunk.texts)]
                lines = [json.dumps({"text": text}, ensure_ascii=False) + "\n"
                         for text, code in zip(chunk.texts, codes) if code == 0]
                data = "".join(lines).encode("utf-8", "surrogatepass")
                file.write(data)
                file.flush()
                os.fsync(file.fileno())
                found = dict(state["found"])
                for i in range(len(chunk.texts)):
                    if first + i in needed:
                        found[str(first + i)] = {"where": chunk.wheres[i], "text": excerpt(chunk.texts[i])}
                state = {"position": asdict(chunk.next_position), "documents": first + len(chunk.texts),
                         "kept": state["kept"] + len(lines), "bytes": state["bytes"] + len(data), "found": found}
                journal = dict(journal, write=state)
                write_journal(paths, journal)
                on_chunk(journal)
    journal = dict(journal, finished=utc_now())
    write_journal(paths, journal)
    return journal


def build_manifest(journal: dict, sources, settings: CleanSettings) -> dict:
    found = journal["write"]["found"]
    examples = {rule: list(journal["examples"].get(rule, [])) for rule in FILTER_RULES}
    duplicates = journal["duplicates"]
    for kind in DUPLICATE_RULES:
        examples[kind] = [
            {**found[str(p["document"])], "similarity": p["similarity"],
             "kept": found[str(p["kept"])]}
            for p in duplicates["examples"].get(kind, [])
        ]
    sizes = duplicates["sizes"]
    return {
        "kind": MANIFEST_KIND,
        "version": 1,
        "inputs": [{"path": str(s.path), "size": s.size, "format": s.format} for s in sources],
        "format": journal["options"]["format"],
        "settings": settings.as_dict(),
        "bands": {"bands": settings.bands[0], "rows": settings.bands[1]},
        "minhash": journal["options"]["minhash"],
        "documents_in": journal["documents"],
        "documents_out": journal["write"]["kept"],
        "removed": removed_counts(journal),
        "malformed": journal["malformed"],
        "malformed_examples": journal["malformed_examples"],
        "cut_short": journal["cut_short"],
        "examples": examples,
        "duplicate_clusters": {
            "clusters": sum(sizes.values()),
            "sizes": sizes,
            "largest": [{**found[str(c["document"])], "size": c["size"]} for c in duplicates["largest"]],
        },
        "created": journal["finished"],
        "babyllama_version": __version__,
    }


def finish(paths: CleanPaths, manifest: dict, force: bool) -> None:
    """Manifest first, then NAME.jsonl renamed into place, then the work folder removed."""
    if force and paths.out.exists():
        with writing(paths.out):
            paths.manifest.unlink(missing_ok=True)
            paths.out.unlink()
    with writing(paths.manifest):
        atomic_write_json(paths.manifest, manifest)
    with writing(paths.out):
        os.replace(paths.partial, paths.out)
    shutil.rmtree(paths.work, ignore_errors=True)
