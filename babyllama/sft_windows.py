"""SFT token files as the trainer reads them: windows whose targets are masked with IGNORE_ID where
the file's loss mask is 0, and only windows that hold a trained target. The one seam between
training and the SFT token-file reader: `open_dataset`, `is_sft`, `batch_sampler_for`.

Pure numpy. The files' layout is the SFT token-file contract (docs/ARCHITECTURE.md, "Token files").
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from babyllama.data import (
    IGNORE_ID,
    REPREPARE,
    TOKEN_DTYPES,
    BatchSampler,
    TokenDataset,
    TokenFile,
    _allocate_validation,
    _expand_token_paths,
    check_same_tokenizer,
    check_window_fits,
    manifest_path,
    split_inputs_targets,
)
from babyllama.errors import UserError

SFT_KIND = "sft"


def _manifest_kind(path: Path) -> str | None:
    try:
        manifest = json.loads(manifest_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest.get("kind") if isinstance(manifest, dict) else None


def open_sft_file(path: Path) -> tuple[TokenFile, Path]:
    """An SFT token file and its mask file, checked against the manifest."""
    mpath = manifest_path(path)
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UserError(f"{mpath}: cannot read the manifest ({e}); {REPREPARE}") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != SFT_KIND:
        raise UserError(f'{path}: not an SFT token file (its manifest has no "kind": "{SFT_KIND}"); '
                        "fine-tune on files made by `babyllama prepare` from conversations")
    dtype = manifest.get("dtype")
    if dtype not in TOKEN_DTYPES or not isinstance(manifest.get("mask"), str):
        raise UserError(f'{mpath}: "dtype" or "mask" is missing or wrong; {REPREPARE}')
    dtype = np.dtype(dtype)
    n_tokens = path.stat().st_size // dtype.itemsize if path.is_file() else 0
    if n_tokens == 0 or n_tokens != manifest.get("tokens"):
        raise UserError(f"{path}: holds {n_tokens:,} tokens, its manifest says {manifest.get('tokens')}; {REPREPARE}")
    mask = path.parent / manifest["mask"]
    if not mask.is_file() or mask.stat().st_size != n_tokens:
        raise UserError(f"{mask}: the loss mask is missing or not one byte per token of {path.name}; {REPREPARE}")
    return TokenFile(path, dtype, n_tokens, manifest["vocab_size"], manifest["eos_id"], manifest.get("tokenizer"),
                     manifest), mask


class SFTDataset(TokenDataset):
    """TokenDataset's windows over SFT token files, keeping only windows with a trained target.

    Window w of a file is tokens [w * seq_len, (w + 1) * seq_len + 1), as for pretraining; the
    windows whose targets are all masked are left out, and the held-out slice is the last of those kept.
    """

    def __init__(self, paths: str | Path | Sequence[str | Path], seq_len: int, val_fraction: float):
        if not 0 <= val_fraction < 1:
            raise UserError(f"val_fraction must be at least 0 and below 1, not {val_fraction!r}")
        opened = [open_sft_file(p) for p in _expand_token_paths(paths)]
        self.files = [token_file for token_file, _ in opened]
        self._mask_paths = [mask for _, mask in opened]
        check_same_tokenizer(self.files)
        check_window_fits(self.files, seq_len)
        self.seq_len = seq_len
        self.val_fraction = val_fraction
        first = self.files[0]
        self.vocab_size, self.eos_id = first.vocab_size, first.eos_id
        self.tokenizer = next((f.tokenizer for f in self.files if f.tokenizer is not None), None)
        self._masks: list[np.ndarray | None] = [None] * len(self.files)
        self._maps = [None] * len(self.files)
        self._kept = []
        for f, token_file in enumerate(self.files):
            windows = max(0, (token_file.n_tokens - 1) // seq_len)
            targets = self.file_mask(f)[1 : windows * seq_len + 1].reshape(windows, seq_len)
            self._kept.append(np.flatnonzero(targets.any(axis=1)).astype(np.int64))
        counts = [len(kept) for kept in self._kept]
        if not sum(counts):
            raise UserError(f"{first.path}: no window of {seq_len + 1:,} tokens holds a trained token; {REPREPARE}")
        self.file_val = _allocate_validation(counts, val_fraction)
        self.file_train = [c - v for c, v in zip(counts, self.file_val)]
        self._train_offsets = np.concatenate([[0], np.cumsum(self.file_train)]).astype(np.int64)
        self._val_offsets = np.concatenate([[0], np.cumsum(self.file_val)]).astype(np.int64)
        self._train_first = np.zeros(len(self.files), dtype=np.int64)
        self._val_first = np.asarray(self.file_train, dtype=np.int64)

    def __getstate__(self):
        state = super().__getstate__()
        state["_masks"] = [None] * len(self.files)
        return state

    def file_mask(self, file_index: int) -> np.ndarray:
        """The loss mask of file `file_index` (1 = trained), memory-mapped."""
        mask = self._masks[file_index]
        if mask is None:
            token_file = self.files[file_index]
            mask = self._masks[file_index] = np.memmap(self._mask_paths[file_index], dtype=np.uint8, mode="r",
                                                       shape=(token_file.n_tokens,)).view(np.ndarray)
        return mask

    def window_starts(self, indices, validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        offsets, first_window = ((self._val_offsets, self._val_first) if validation
                                 else (self._train_offsets, self._train_first))
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= offsets[-1]):
            raise IndexError(f"window index out of range [0, {int(offsets[-1])})")
        file_of = np.searchsorted(offsets, indices, side="right") - 1
        local = indices - offsets[file_of] + first_window[file_of]
        windows = np.array([self._kept[f][i] for f, i in zip(file_of.tolist(), local.tolist())], dtype=np.int64)
        return file_of, windows * self.seq_len

    def target_mask(self, indices, validation: bool = False) -> np.ndarray:
        """(windows, seq_len) booleans: which targets of these windows are trained."""
        file_of, starts = self.window_starts(indices, validation)
        out = np.empty((starts.size, self.seq_len), dtype=bool)
        for row, (f, start) in enumerate(zip(file_of.tolist(), starts.tolist())):
            out[row] = self.file_mask(f)[start + 1 : start + 1 + self.seq_len] != 0
        return out

    def masked_batch(self, indices, validation: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """(x, y) of these windows, y set to IGNORE_ID where the target is not trained."""
        rows = self.val_rows(indices) if validation else self.train_rows(indices)
        x, y = split_inputs_targets(rows)
        y[~self.target_mask(indices, validation)] = IGNORE_ID
        return x, y

    def training_target_ranges(self) -> list[tuple[int, int, int]]:
        """(file, start, end): the tokens before each file's held-out windows, whose trained ones are the
        training targets (the windows left out hold none)."""
        ranges = []
        for f, (kept, train) in enumerate(zip(self._kept, self.file_train)):
            if train:
                # Up to the first held-out window's targets, or past the last window kept.
                end = kept[train] if train < len(kept) else kept[-1] + 1
                ranges.append((f, 1, int(end) * self.seq_len + 1))
        return ranges

    def val_batches(self, batch_size: int, n_batches: int | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        super().val_batches(batch_size, n_batches)  # the checks: a batch size, validation windows
        picks = self.val_indices(batch_size, n_batches)
        return (self.masked_batch(picks[b * batch_size : (b + 1) * batch_size], validation=True)
                for b in range(len(picks) // batch_size))


class SFTBatchSampler(BatchSampler):
    """BatchSampler's batches with the untrained targets set to IGNORE_ID."""

    def batch(self, step: int, micro: int = 0) -> tuple[np.ndarray, np.ndarray]:
        return self.dataset.masked_batch(self.train_indices(step, micro))


def is_sft(dataset: TokenDataset) -> bool:
    return isinstance(dataset, SFTDataset)


def open_dataset(paths: Sequence[str | Path], seq_len: int, val_fraction: float) -> TokenDataset:
    """Pretraining token files as a TokenDataset, SFT token files as an SFTDataset; never both."""
    kinds = {path: _manifest_kind(path) == SFT_KIND for path in _expand_token_paths(paths)}
    if len(set(kinds.values())) > 1:
        sft = next(p for p, k in kinds.items() if k)
        plain = next(p for p, k in kinds.items() if not k)
        raise UserError(f"{sft} is an SFT token file but {plain} is not; train on one kind at a time")
    if any(kinds.values()):
        return SFTDataset(paths, seq_len, val_fraction)
    return TokenDataset(paths, seq_len=seq_len, val_fraction=val_fraction)


def batch_sampler_for(dataset: TokenDataset, *args, **kwargs) -> BatchSampler:
    return (SFTBatchSampler if is_sft(dataset) else BatchSampler)(dataset, *args, **kwargs)
