"""Token files to training batches: memory-mapped files, a held-out slice, data-parallel ranks.

Windows, the held-out slice and the (seed, step) batch order: docs/ARCHITECTURE.md,
"Token files" and "Training". SFT token files (conversations with a loss mask, "kind": "sft")
are read by `SftDataset` only, and pretraining files by `TokenDataset` only: `is_sft_data` says
which a run's data is. Pure numpy.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from babyllama.errors import UserError

MANIFEST_KIND = "babyllama-token-file"
SFT_KIND = "sft"
MANIFEST_VERSION = 1
# The target of an SFT batch where the loss mask is 0: the loss leaves it out.
IGNORE_ID = -100
TOKEN_DTYPES = ("uint16", "uint32")

# How a .bin without a manifest is read: the seed's published Baby-Llama2 corpus.
SEED_DTYPE = "uint16"
SEED_VOCAB_SIZE = 64_794
SEED_EOS_ID = 2
SEED_TOKENIZER_KIND = "chatglm"

DEFAULT_VAL_FRACTION = 0.005

REPREPARE = "re-run `babyllama prepare` to rewrite it"


def sft_file_refused(path: Path) -> UserError:
    """What a pretraining reader says of an SFT token file."""
    return UserError(
        f"{path}: an SFT token file (conversations with a loss mask), not pretraining text: fine-tune "
        f"on it with `babyllama train --init-from RUN --data {path}`"
    )


def pretraining_file_refused(path: Path) -> UserError:
    """What an SFT reader says of a pretraining token file (or the seed's corpus, without a manifest)."""
    return UserError(
        f"{path}: a pretraining token file (text, no loss mask), not conversations: pretrain on it, or "
        "make an SFT token file with `babyllama prepare --format sft-alpaca` (or sft-conversations)"
    )


@dataclass(frozen=True)
class TokenFile:
    """One token file as its manifest (or the seed's convention) describes it."""

    path: Path
    dtype: np.dtype
    n_tokens: int
    vocab_size: int
    eos_id: int
    tokenizer: dict | None
    manifest: dict | None
    mask_path: Path | None = None  # an SFT file's loss mask: a uint8 per token, 1 = trained on

    def open(self) -> np.memmap:
        """A read-only map of the whole file; pages are read only when touched."""
        try:
            return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.n_tokens,))
        except OSError as e:
            raise UserError(f"{self.path}: cannot open the token file ({e.strerror or e})") from e

    def open_mask(self) -> np.memmap:
        """A read-only map of an SFT file's loss mask, a uint8 per token."""
        try:
            return np.memmap(self.mask_path, dtype=np.uint8, mode="r", shape=(self.n_tokens,))
        except OSError as e:
            raise UserError(f"{self.mask_path}: cannot open the loss mask ({e.strerror or e})") from e

    def describe_tokenizer(self) -> str:
        if self.tokenizer is None:
            return f"ChatGLM2, vocab {self.vocab_size:,} (no manifest: read as the seed's corpus)"
        name = self.tokenizer.get("name", "unnamed")
        kind = self.tokenizer.get("kind", "unknown kind")
        sha = self.tokenizer.get("sha256")
        fingerprint = f", {sha[:19]}…" if isinstance(sha, str) else ""
        return f"{name} ({kind}, vocab {self.vocab_size:,}{fingerprint})"


def manifest_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".json")


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_manifest(path: str | Path, sft: bool = False) -> dict | None:
    """The manifest beside token file `path` (NAME.bin.json), checked; None when there is none.

    A pretraining manifest, or with `sft` an SFT one; a manifest of the other kind is refused
    with one line that says what the file is for."""
    mpath = manifest_path(path)
    try:
        text = mpath.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"{mpath}: cannot read the manifest ({e}); {REPREPARE}") from e
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{mpath}:{e.lineno}: the manifest is not valid JSON ({e.msg}); {REPREPARE}") from e

    def bad(what: str) -> UserError:
        return UserError(f"{mpath}: {what}; {REPREPARE}")

    kind = manifest.get("kind") if isinstance(manifest, dict) else None
    if kind == SFT_KIND and not sft:
        raise sft_file_refused(Path(path))
    if kind == MANIFEST_KIND and sft:
        raise pretraining_file_refused(Path(path))
    if kind not in (MANIFEST_KIND, SFT_KIND):
        raise bad(f'not a babyllama token-file manifest (expected "kind": "{MANIFEST_KIND}" or "{SFT_KIND}")')
    version = manifest.get("version")
    if _is_int(version) and version > MANIFEST_VERSION:
        raise UserError(
            f"{mpath}: manifest version {version} was written by a newer babyllama "
            f"(this one reads version {MANIFEST_VERSION}); upgrade babyllama"
        )
    if version != MANIFEST_VERSION:
        raise bad(f"unsupported manifest version {version!r}")
    if manifest.get("dtype") not in TOKEN_DTYPES:
        raise bad(f"dtype {manifest.get('dtype')!r} is not one of {', '.join(TOKEN_DTYPES)}")
    for key in ("tokens", "vocab_size", "eos_id"):
        if not _is_int(manifest.get(key)) or manifest[key] < 0:
            raise bad(f'"{key}" is missing or not a non-negative whole number')
    vocab_size = manifest["vocab_size"]
    if vocab_size == 0 or manifest["eos_id"] >= vocab_size:
        raise bad(f'eos_id {manifest["eos_id"]} does not fit vocab_size {vocab_size}')
    if vocab_size > np.iinfo(manifest["dtype"]).max + 1:
        raise bad(f"vocab_size {vocab_size:,} does not fit {manifest['dtype']} token ids")
    if manifest.get("tokenizer") is not None and not isinstance(manifest["tokenizer"], dict):
        raise bad('"tokenizer" is not an object')
    if sft:
        mask = manifest.get("mask")
        if not isinstance(mask, str) or not mask or Path(mask).name != mask:
            raise bad('"mask" is not the name of the loss-mask file beside the token file')
        if not isinstance(manifest.get("chat_template"), dict):
            raise bad('"chat_template" is missing or not an object')
        for key in ("conversations", "trained_tokens"):
            if not _is_int(manifest.get(key)) or manifest[key] < 0:
                raise bad(f'"{key}" is missing or not a non-negative whole number')
    return manifest


def open_token_file(path: str | Path, sft: bool = False) -> TokenFile:
    """Describe a token file after checking that it is complete and agrees with its manifest.

    A pretraining file, or with `sft` an SFT file with its loss mask (`mask_path`), checked to
    hold a byte per token; a file of the other kind is refused in one line."""
    path = Path(path)
    if path.name.endswith(".json"):
        raise UserError(f"{path}: this is a manifest; pass the token file itself ({path.name[:-5]})")
    if path.name.endswith(".bin.mask"):
        raise UserError(f"{path}: this is the loss mask of an SFT token file; pass the token file itself "
                        f"({path.name[: -len('.mask')]})")
    if path.name.endswith(".partial"):
        raise UserError(
            f"{path}: unfinished output of `babyllama prepare`; run prepare again to finish it "
            f"(it resumes), then use {path.name[: -len('.partial')]}"
        )
    if not path.exists():
        partial = path.with_name(path.name + ".partial")
        if partial.exists():
            raise UserError(
                f"{path}: not finished: {partial.name} is still being written, or prepare was "
                f"interrupted; wait for `babyllama prepare` or run it again to resume"
            )
        raise UserError(f"{path}: no such token file; make one with `babyllama prepare`")
    if path.is_dir():
        raise UserError(f"{path}: is a folder, not a token file")

    manifest = read_manifest(path, sft)
    if manifest is None and path.with_name(path.name + ".mask").is_file():
        raise UserError(f"{path}: its manifest {manifest_path(path).name} is missing, but a loss mask lies beside "
                        f"it: an SFT token file that lost its manifest; {REPREPARE}")
    if manifest is None and sft:
        raise pretraining_file_refused(path)
    if manifest is None:
        dtype, vocab_size, eos_id, tokenizer = np.dtype(SEED_DTYPE), SEED_VOCAB_SIZE, SEED_EOS_ID, None
        convention = " (a file without a manifest is read as the seed's corpus: uint16 ChatGLM2 ids)"
    else:
        dtype, vocab_size, eos_id = np.dtype(manifest["dtype"]), manifest["vocab_size"], manifest["eos_id"]
        tokenizer = manifest.get("tokenizer")
        convention = f" (its manifest says {dtype})"

    size = path.stat().st_size
    if size == 0:
        raise UserError(f"{path}: the token file is empty; {REPREPARE}")
    if size % dtype.itemsize:
        raise UserError(
            f"{path}: {size:,} bytes is not a whole number of {dtype.itemsize}-byte tokens{convention}; "
            f"the file is truncated or not a token file; {REPREPARE}"
        )
    n_tokens = size // dtype.itemsize
    if manifest is not None and manifest["tokens"] != n_tokens:
        raise UserError(
            f"{path}: holds {n_tokens:,} tokens but its manifest {manifest_path(path).name} says "
            f"{manifest['tokens']:,}; the file is truncated or the manifest belongs to another file; {REPREPARE}"
        )
    mask_path = None
    if sft:
        mask_path = path.with_name(manifest["mask"])
        if not mask_path.is_file():
            raise UserError(f"{path}: its loss mask {mask_path.name} is missing; {REPREPARE}")
        if mask_path.stat().st_size != n_tokens:
            raise UserError(
                f"{mask_path}: {mask_path.stat().st_size:,} bytes, but the token file holds {n_tokens:,} tokens "
                f"(a byte each); the mask belongs to another file or is damaged; {REPREPARE}"
            )
    return TokenFile(path, dtype, n_tokens, vocab_size, eos_id, tokenizer, manifest, mask_path)


def is_sft_data(paths: str | Path | Sequence[str | Path]) -> bool:
    """Whether token files (files, folders) are SFT data, by the first file's manifest: then
    `SftDataset` reads them, else `TokenDataset`; each refuses a file of the other kind."""
    first = _expand_token_paths(paths)[0]
    try:
        manifest = json.loads(manifest_path(first).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False  # no manifest, or one that opening the file will name as damaged
    return isinstance(manifest, dict) and manifest.get("kind") == SFT_KIND


def check_one_kind(files: Sequence[TokenFile]) -> None:
    """Refuse SFT and pretraining files together, opened each with its own reader (the new-run
    form's); a dataset refuses the same file when it opens it with the first file's kind."""
    sft = files[0].mask_path is not None
    for token_file in files[1:]:
        if (token_file.mask_path is not None) != sft:
            raise pretraining_file_refused(token_file.path) if sft else sft_file_refused(token_file.path)


def _tokenizer_kind_vocab_eos(token_file: TokenFile) -> tuple:
    kind = SEED_TOKENIZER_KIND if token_file.tokenizer is None else token_file.tokenizer.get("kind")
    return (kind, token_file.vocab_size, token_file.eos_id)


def check_same_tokenizer(files: Sequence[TokenFile]) -> None:
    """Refuse files whose ids come from different tokenizers.

    Fingerprints decide where manifests carry them; a file without a manifest (the seed's
    ChatGLM2 corpus) agrees with any ChatGLM2 file of the same vocabulary and end-of-text id.
    """
    first_with: dict[str, tuple[object, TokenFile]] = {}
    for token_file in files:
        identities = {
            "kind, vocab and eos": _tokenizer_kind_vocab_eos(token_file),
            "fingerprint": (token_file.tokenizer or {}).get("sha256"),
        }
        for aspect, identity in identities.items():
            if identity is None:
                continue
            first_identity, first_file = first_with.setdefault(aspect, (identity, token_file))
            if identity != first_identity:
                raise UserError(
                    f"{token_file.path}: made with tokenizer {token_file.describe_tokenizer()}, but "
                    f"{first_file.path} was made with {first_file.describe_tokenizer()}; train on files "
                    f"from one tokenizer (re-run `babyllama prepare` with the same --tokenizer)"
                )


def check_window_fits(files: Sequence[TokenFile], seq_len: int) -> None:
    """Refuse token files none of which holds one window of seq_len + 1 tokens."""
    longest = max(files, key=lambda f: f.n_tokens)
    if longest.n_tokens <= seq_len:
        raise UserError(
            f"{longest.path}: {longest.n_tokens:,} tokens, too few for one window of seq_len + 1 = "
            f"{seq_len + 1:,} tokens (and no other file has more); use a shorter seq_len or more data"
        )


def _expand_token_paths(paths: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(paths, (str, Path)):
        paths = [paths]
    expanded: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(
                p for p in path.rglob("*.bin") if not any(part.startswith(".") for part in p.relative_to(path).parts)
            )
            if not found:
                raise UserError(f"{path}: no .bin token files in this folder; make one with `babyllama prepare`")
            expanded.extend(found)
        else:
            expanded.append(path)
    if not expanded:
        raise UserError("no token files given")
    seen: dict[Path, Path] = {}
    for path in expanded:
        resolved = path.resolve()
        if resolved in seen:
            raise UserError(f"{path}: given twice (also as {seen[resolved]}); list each token file once")
        seen[resolved] = path
    return expanded


def _allocate_validation(windows: Sequence[int], val_fraction: float) -> list[int]:
    """Validation windows per file, proportional to each file's windows.

    The total is fraction x all windows, rounded, at least one when there are two windows or
    more, and never all of them. Sharing one total (largest remainder, ties to the earlier
    file) keeps the held-out share right when a corpus is many small shards.
    """
    total = sum(windows)
    if val_fraction <= 0 or total < 2:
        return [0] * len(windows)
    val_total = min(total - 1, max(1, round(total * val_fraction)))
    shares = [val_total * w // total for w in windows]
    remainders = [val_total * w % total for w in windows]
    by_remainder = sorted(range(len(windows)), key=lambda i: (-remainders[i], i))
    for i in by_remainder[: val_total - sum(shares)]:
        shares[i] += 1
    return shares


class TokenDataset:
    """Windows of `seq_len + 1` tokens over one or many token files, split into training and validation.

    `vocab_size` is the model's vocabulary: a file whose tokenizer has more ids is refused.
    Token ids are checked against the files' vocabulary in every batch read (a cheap max over
    the batch); `check_token_ids` scans a whole file.
    """

    sft = False  # SftDataset: conversations, targets masked with IGNORE_ID

    def __init__(
        self,
        paths: str | Path | Sequence[str | Path],
        seq_len: int,
        val_fraction: float = DEFAULT_VAL_FRACTION,
        vocab_size: int | None = None,
    ):
        if not _is_int(seq_len) or seq_len < 1:
            raise UserError(f"seq_len must be a whole number of at least 1, not {seq_len!r}")
        if not 0 <= val_fraction < 1:
            raise UserError(f"val_fraction must be at least 0 and below 1, not {val_fraction!r}")
        self.files = [open_token_file(p, self.sft) for p in _expand_token_paths(paths)]
        check_same_tokenizer(self.files)
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        first = self.files[0]
        self.vocab_size = first.vocab_size
        self.eos_id = first.eos_id
        self.tokenizer = next((f.tokenizer for f in self.files if f.tokenizer is not None), None)
        if vocab_size is not None and self.vocab_size > vocab_size:
            raise UserError(
                f"{first.path}: its tokenizer {first.describe_tokenizer()} has {self.vocab_size:,} ids but the "
                f"model's vocabulary has {vocab_size:,}; give the model a vocab_size of at least "
                f"{self.vocab_size:,}, or re-run `babyllama prepare` with the model's tokenizer"
            )

        check_window_fits(self.files, seq_len)
        windows = self._file_windows()
        self.file_val = _allocate_validation(windows, val_fraction)
        self.file_train = [w - v for w, v in zip(windows, self.file_val)]
        self._train_offsets = np.concatenate([[0], np.cumsum(self.file_train)]).astype(np.int64)
        self._val_offsets = np.concatenate([[0], np.cumsum(self.file_val)]).astype(np.int64)
        # Training windows open each file; its validation windows follow them.
        self._train_first = np.zeros(len(self.files), dtype=np.int64)
        self._val_first = np.asarray(self.file_train, dtype=np.int64)
        self._maps: list[np.ndarray | None] = [None] * len(self.files)

    def _file_windows(self) -> list[int]:
        """How many windows each file gives."""
        return [max(0, (f.n_tokens - 1) // self.seq_len) for f in self.files]

    @property
    def train_windows(self) -> int:
        return int(self._train_offsets[-1])

    @property
    def val_windows(self) -> int:
        return int(self._val_offsets[-1])

    def __getstate__(self):
        # A pickled memmap would carry the whole file; worker processes reopen the maps instead.
        state = self.__dict__.copy()
        state["_maps"] = [None] * len(self.files)
        return state

    def describe(self) -> dict:
        """Plain data for run configs and the app."""
        return {
            "seq_len": self.seq_len,
            "val_fraction": self.val_fraction,
            "train_windows": self.train_windows,
            "val_windows": self.val_windows,
            "vocab_size": self.vocab_size,
            "eos_id": self.eos_id,
            "tokenizer": self.tokenizer,
            "files": [
                {"path": str(f.path), "dtype": f.dtype.name, "tokens": f.n_tokens, "train_windows": t, "val_windows": v}
                for f, t, v in zip(self.files, self.file_train, self.file_val)
            ],
        }

    def train_rows(self, indices) -> np.ndarray:
        """Training windows by index in [0, train_windows), as int32 rows of seq_len + 1 tokens."""
        return self._rows(indices, validation=False)

    def val_rows(self, indices) -> np.ndarray:
        """Validation windows by index in [0, val_windows), as int32 rows of seq_len + 1 tokens."""
        return self._rows(indices, validation=True)

    def val_batches(self, batch_size: int, n_batches: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """The same validation (x, y) batches on every call, all of `batch_size` rows.

        Windows are spread evenly over the whole validation slice (so every file is represented);
        without `n_batches` every validation window is visited at least once.
        """
        if not _is_int(batch_size) or batch_size < 1:
            raise UserError(f"batch_size must be a whole number of at least 1, not {batch_size!r}")
        if self.val_windows == 0:
            raise UserError(
                f"{self.files[0].path}: no validation windows: the data holds {self.train_windows:,} "
                f"window(s) of {self.seq_len + 1:,} tokens and val_fraction is {self.val_fraction}; "
                f"use more data, a shorter seq_len or a val_fraction above 0"
            )
        picks = self.val_indices(batch_size, n_batches)
        count = len(picks) // batch_size
        return (self.val_batch(picks[b * batch_size : (b + 1) * batch_size]) for b in range(count))

    def train_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of training windows by index: int32 arrays (len(indices), seq_len), y being x shifted by one."""
        return split_inputs_targets(self.train_rows(indices))

    def val_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of validation windows by index, as `train_batch`."""
        return split_inputs_targets(self.val_rows(indices))

    def val_indices(self, batch_size: int, n_batches: int | None = None) -> np.ndarray:
        """The validation windows `val_batches(batch_size, n_batches)` visits, in order (a window may repeat)."""
        count = self.val_batch_count(batch_size, n_batches)
        return np.arange(count * batch_size, dtype=np.int64) * self.val_windows // (count * batch_size)

    def spread_train_indices(self, n_windows: int) -> np.ndarray:
        """`n_windows` training windows (at most all of them), evenly spread over all of them, in order."""
        n_windows = min(n_windows, self.train_windows)
        return np.arange(n_windows, dtype=np.int64) * self.train_windows // n_windows

    def val_batch_count(self, batch_size: int, n_batches: int | None = None) -> int:
        """How many batches `val_batches(batch_size, n_batches)` gives."""
        count = math.ceil(self.val_windows / batch_size)
        return count if n_batches is None else min(count, n_batches)

    def file_tokens(self, file_index: int) -> np.ndarray:
        """Every token of file `file_index`, memory-mapped."""
        mm = self._maps[file_index]
        if mm is None:
            # A plain-ndarray view of the map slices several times faster than the np.memmap subclass.
            mm = self._maps[file_index] = self.files[file_index].open().view(np.ndarray)
        return mm

    def window_starts(self, indices, validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(file index, position of the first token) of training windows, or of validation windows."""
        offsets, first_window = ((self._val_offsets, self._val_first) if validation
                                 else (self._train_offsets, self._train_first))
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= offsets[-1]):
            raise IndexError(f"window index out of range [0, {int(offsets[-1])})")
        file_of = np.searchsorted(offsets, indices, side="right") - 1
        return file_of, (indices - offsets[file_of] + first_window[file_of]) * self.seq_len

    def _rows(self, indices, validation: bool) -> np.ndarray:
        file_of, starts = self.window_starts(indices, validation)
        width = self.seq_len + 1
        rows = np.empty((starts.size, width), dtype=np.int32)
        for row, (f, start) in enumerate(zip(file_of.tolist(), starts.tolist())):
            rows[row] = self.file_tokens(f)[start : start + width]
        # Viewed unsigned, a uint32 id that wrapped negative in int32 also compares as too large.
        if rows.size and int(rows.view(np.uint32).max()) >= self.vocab_size:
            row, col = np.argwhere(rows.view(np.uint32) >= self.vocab_size)[0]
            f, position = int(file_of[row]), int(starts[row]) + int(col)
            raise bad_token_error(self.files[f].path, position, int(self.file_tokens(f)[position]), self.vocab_size)
        return rows


class SftDataset(TokenDataset):
    """Windows over SFT token files (conversations with a loss mask), as TokenDataset's: fixed
    windows of `seq_len + 1` tokens, conversations packed back to back, the same held-out slice
    and, through BatchSampler, the same (seed, step) order. Only windows whose targets hold a
    trained token are counted, so a window of nothing but questions is never drawn; targets where
    the mask is 0 are IGNORE_ID. The interface is TokenDataset's (`train_batch`, `val_batches`,
    `window_starts`, ...); `file_mask` gives a file's mask. A pretraining file is refused."""

    sft = True

    def _file_windows(self) -> list[int]:
        # Window w of a file holds tokens [w * seq_len, (w + 1) * seq_len]; its targets start one later.
        self._trained_windows = [trained_windows(f.open_mask(), self.seq_len) for f in self.files]
        self._masks: list[np.ndarray | None] = [None] * len(self.files)
        if not any(len(w) for w in self._trained_windows):
            raise UserError(
                f"{self.files[0].path}: no window of seq_len + 1 = {self.seq_len + 1:,} tokens holds a trained token "
                "(an assistant's answer); use more conversations or a longer seq_len"
            )
        return [len(w) for w in self._trained_windows]

    def window_starts(self, indices, validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        file_of, starts = super().window_starts(indices, validation)
        # The parent numbers the counted windows of each file; map them to the windows they are.
        counted = starts // self.seq_len
        for f in np.unique(file_of).tolist():
            here = file_of == f
            starts[here] = self._trained_windows[f][counted[here]] * self.seq_len
        return file_of, starts

    def file_mask(self, file_index: int) -> np.ndarray:
        """The loss mask of file `file_index` (a uint8 per token, 1 = trained on), memory-mapped."""
        mask = self._masks[file_index]
        if mask is None:
            mask = self._masks[file_index] = self.files[file_index].open_mask().view(np.ndarray)
        return mask

    def __getstate__(self):
        state = super().__getstate__()
        state["_masks"] = [None] * len(self.files)
        return state

    def describe(self) -> dict:
        return {**super().describe(), "kind": SFT_KIND,
                "trained_tokens": sum(f.manifest["trained_tokens"] for f in self.files)}

    def train_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        return self._masked(super().train_batch(indices), indices, validation=False)

    def val_batch(self, indices) -> tuple[np.ndarray, np.ndarray]:
        return self._masked(super().val_batch(indices), indices, validation=True)

    def _masked(self, batch: tuple[np.ndarray, np.ndarray], indices, validation: bool) -> tuple[np.ndarray, np.ndarray]:
        inputs, targets = batch
        file_of, starts = self.window_starts(indices, validation)
        trained = np.empty(targets.shape, dtype=bool)
        for row, (f, start) in enumerate(zip(file_of.tolist(), starts.tolist())):
            trained[row] = self.file_mask(f)[start + 1 : start + 1 + self.seq_len]
        # A new array: targets may share memory with the inputs (one row is contiguous as it is).
        return inputs, np.where(trained, targets, np.int32(IGNORE_ID))


def trained_windows(mask: np.ndarray, seq_len: int, chunk_tokens: int = 1 << 24) -> np.ndarray:
    """The windows (numbers w: tokens [w * seq_len, (w + 1) * seq_len]) of a loss mask whose
    targets, tokens w * seq_len + 1 to (w + 1) * seq_len, hold a trained one; read in chunks."""
    windows = max(0, (len(mask) - 1) // seq_len)
    per_chunk = max(1, chunk_tokens // seq_len)
    found = [np.empty(0, dtype=np.int64)]
    for first in range(0, windows, per_chunk):
        last = min(windows, first + per_chunk)
        targets = np.asarray(mask[first * seq_len + 1 : last * seq_len + 1]).reshape(last - first, seq_len)
        found.append(first + np.flatnonzero(targets.any(axis=1)))
    return np.concatenate(found)


def counted_windows(token_file: TokenFile, seq_len: int) -> int:
    """The windows a dataset counts in a file: all of them, or of an SFT file those whose targets hold a
    trained token (the only ones drawn), as TokenDataset and SftDataset count them."""
    if token_file.mask_path is None:
        return max(0, (token_file.n_tokens - 1) // seq_len)
    return len(trained_windows(token_file.open_mask(), seq_len))


def training_windows(windows: Sequence[int], val_fraction: float) -> int:
    """Of files giving `windows` windows each, those left for training once the held-out share is taken."""
    return sum(windows) - sum(_allocate_validation(windows, val_fraction))


def split_inputs_targets(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) from windows: y is x shifted by one token."""
    return np.ascontiguousarray(rows[:, :-1]), np.ascontiguousarray(rows[:, 1:])


def bad_token_error(path: Path, position: int, token_id: int, vocab_size: int) -> UserError:
    return UserError(
        f"{path}: token id {token_id:,} at position {position:,} is outside the vocabulary "
        f"(ids 0 to {vocab_size - 1:,}); the file was made with another tokenizer or is damaged; "
        f"re-run `babyllama prepare` with the tokenizer the model uses"
    )


def check_token_ids(
    token_file: TokenFile | str | Path,
    vocab_size: int | None = None,
    chunk_tokens: int = 1 << 24,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Scan every token of a file against `vocab_size` (default: the file's own); return the largest id.

    Reads in chunks, so memory stays flat on a 100 GB file; `progress(done, total)` is called
    after each chunk. Raises UserError at the first id out of range, naming its position.
    """
    if not isinstance(token_file, TokenFile):
        token_file = open_token_file(token_file)
    limit = token_file.vocab_size if vocab_size is None else vocab_size
    tokens = token_file.open()
    largest = 0
    for start in range(0, token_file.n_tokens, chunk_tokens):
        chunk = tokens[start : start + chunk_tokens]
        chunk_max = int(chunk.max())
        if chunk_max >= limit:
            position = start + int(np.argmax(chunk >= limit))
            raise bad_token_error(token_file.path, position, int(tokens[position]), limit)
        largest = max(largest, chunk_max)
        if progress is not None:
            progress(start + chunk.size, token_file.n_tokens)
    return largest


_SHIFT_32 = np.array(32, dtype=np.uint64)


class FeistelPermutation:
    """A keyed pseudo-random permutation of [0, n) that needs O(1) memory.

    A balanced Feistel network over pairs (left, right) in [0, s) x [0, s), s = ceil(sqrt n),
    whose rounds add a keyed hash of one half to the other modulo s, is a bijection on
    [0, s*s) whatever the hash. Cycle-walking (apply it again while the result is >= n)
    restricts it to [0, n). Since s*s < n + 2*sqrt(n) + 1, a second pass is rare; a domain of
    the next power of two would need one for up to half the positions, and each numpy pass
    costs as much on 32 positions as on one.
    """

    ROUNDS = 6

    def __init__(self, n: int, seed: int, epoch: int = 0):
        if not _is_int(n) or n < 1:
            raise ValueError(f"a permutation needs n >= 1, not {n!r}")
        self.n = n
        self._n = np.array(n, dtype=np.uint64)
        words = np.frombuffer(
            hashlib.shake_256(f"babyllama.data/{seed}/{epoch}".encode()).digest(16 * self.ROUNDS), dtype="<u8"
        )
        # 0-d arrays: numpy combines them with a small array several times faster than numpy scalars.
        self._side = np.array(math.isqrt(n - 1) + 1, dtype=np.uint64)
        self._round_keys = [
            (np.array(key, dtype=np.uint64), np.array(multiplier | 1, dtype=np.uint64))
            for key, multiplier in zip(words[: self.ROUNDS].tolist(), words[self.ROUNDS :].tolist())
        ]

    def _network(self, x: np.ndarray) -> np.ndarray:
        left, right = np.divmod(x, self._side)
        for key, multiplier in self._round_keys:
            # Multiply-shift hashing: the top 32 bits of the product depend on every bit of the input.
            mixed = ((right ^ key) * multiplier) >> _SHIFT_32
            left, right = right, (left + mixed) % self._side
        return left * self._side + right

    def __call__(self, positions) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.int64)
        if positions.size and (positions.min() < 0 or positions.max() >= self.n):
            raise IndexError(f"position out of range [0, {self.n})")
        x = self._network(positions.astype(np.uint64).reshape(-1))
        outside = np.flatnonzero(x >= self._n)
        while outside.size:
            x[outside] = self._network(x[outside])
            outside = outside[x[outside] >= self._n]
        return x.astype(np.int64).reshape(positions.shape)


class BatchSampler:
    """Training batches as a pure function of (step, micro-batch): resumable and rank-disjoint.

    Step s covers positions [s*G, (s+1)*G) of an endless sequence of epochs, G = batch_size x
    accum x world_size; position p is window perm_e(p mod n) of epoch e = p // n, where perm_e
    is a Feistel permutation keyed by (seed, e). Micro-batch m of rank r takes the contiguous
    share starting at (m * world_size + r) * batch_size, so ranks never overlap, together
    they cover the global batch, and the windows a step visits depend only on G.
    """

    def __init__(
        self,
        dataset: TokenDataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        accum: int = 1,
    ):
        for name, value in (("batch_size", batch_size), ("world_size", world_size), ("accum", accum)):
            if not _is_int(value) or value < 1:
                raise UserError(f"{name} must be a whole number of at least 1, not {value!r}")
        if not _is_int(rank) or not 0 <= rank < world_size:
            raise UserError(f"rank must be in [0, {world_size}), not {rank!r}")
        if not _is_int(seed) or seed < 0:
            raise UserError(f"seed must be a non-negative whole number, not {seed!r}")
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.accum = accum
        self._permutations: dict[int, FeistelPermutation] = {}

    @property
    def rows_per_step(self) -> int:
        """Windows in one optimizer step across all ranks and micro-batches (G)."""
        return self.batch_size * self.accum * self.world_size

    @property
    def tokens_per_step(self) -> int:
        return self.rows_per_step * self.dataset.seq_len

    def describe(self) -> dict:
        """What must match for a resumed run to see the same batches."""
        return {
            "seed": self.seed,
            "batch_size": self.batch_size,
            "accum": self.accum,
            "world_size": self.world_size,
            "rows_per_step": self.rows_per_step,
            "seq_len": self.dataset.seq_len,
            "train_windows": self.dataset.train_windows,
        }

    def train_indices(self, step: int, micro: int = 0) -> np.ndarray:
        """Which training windows this rank's micro-batch `micro` of `step` reads."""
        if not _is_int(step) or step < 0:
            raise ValueError(f"step must be a non-negative whole number, not {step!r}")
        if not _is_int(micro) or not 0 <= micro < self.accum:
            raise ValueError(f"micro must be in [0, {self.accum}), not {micro!r}")
        first = step * self.rows_per_step + (micro * self.world_size + self.rank) * self.batch_size
        n = self.dataset.train_windows
        first_epoch, last_epoch = first // n, (first + self.batch_size - 1) // n
        if first_epoch == last_epoch:
            offset = first - first_epoch * n
            return self._permutation(first_epoch)(np.arange(offset, offset + self.batch_size, dtype=np.int64))
        epochs, offsets = np.divmod(np.arange(first, first + self.batch_size, dtype=np.int64), n)
        indices = np.empty_like(offsets)
        for epoch in range(first_epoch, last_epoch + 1):
            in_epoch = epochs == epoch
            indices[in_epoch] = self._permutation(epoch)(offsets[in_epoch])
        return indices

    def batch(self, step: int, micro: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(x, y), int32 arrays of shape (batch_size, seq_len), y being x shifted by one token
        (for an SftDataset, IGNORE_ID where the loss mask is 0)."""
        return self.dataset.train_batch(self.train_indices(step, micro))

    def _permutation(self, epoch: int) -> FeistelPermutation:
        permutation = self._permutations.get(epoch)
        if permutation is None:
            # A batch spans at most a few epochs at a time; older ones are never needed again.
            if len(self._permutations) >= 4:
                self._permutations.pop(min(self._permutations))
            permutation = self._permutations[epoch] = FeistelPermutation(self.dataset.train_windows, self.seed, epoch)
        return permutation
