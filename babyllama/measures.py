"""Measures that compare runs across tokenizers, corpora and machines: bits per byte, the losses
of two models that know (almost) nothing, model FLOPs per token and MFU.

The trainer writes them (`run_measures`: the `baselines` row, `bpb`/`flops_per_s`/`mfu` in train
rows, `val_bpb` in eval rows), `babyllama eval` reports bits per byte, `babyllama runs` shows them.
No MindSpore here. Definitions: docs/ARCHITECTURE.md, "Measures that compare".
"""

from __future__ import annotations

import ctypes
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from babyllama.config import ModelConfig
from babyllama.data import TokenDataset
from babyllama.files import atomic_write_json
from babyllama.tokenizer import Tokenizer
from babyllama.tokenizer.interface import REPLACEMENT_CHARACTER

LN2 = math.log(2)

# The train estimate of bytes per token: about this many target tokens of training windows
# spread evenly over the data, decoded once at start.
TRAIN_SAMPLE_TOKENS = 1 << 16

# The unigram baseline counts every training token up to this many; above, blocks of
# UNIGRAM_BLOCK_TOKENS spread evenly over the training tokens, this many in all. numpy's
# bincount ran at 220-510 M tokens/s here (uint16, from the page cache), so the count is bound
# to 2-5 s plus reading 2 GiB; all 63 G tokens of the seed's corpus would take 2-5 minutes plus
# reading 126 GB.
UNIGRAM_MAX_TOKENS = 1 << 30
UNIGRAM_BLOCK_TOKENS = 1 << 20
UNIGRAM_CHUNK_TOKENS = 1 << 22

# The unigram count is kept in the run directory under this name, so a resume does not count again.
BASELINES_FILE = "baselines.json"

# MindSpore's CPU kernels use this many threads unless train.threads says otherwise.
MINDSPORE_CPU_THREADS = 25
# The CPU's peak: the best of short float32 matmuls of this size, for about this long.
CPU_MATMUL_SIZE = 1024
CPU_MATMUL_SECONDS = 0.25
MEASURED = "measured:"  # how a measured peak's source begins

# One device's dense peak in TFLOP/s, when the table does not know it (Ascend 910B, a float32
# run on a GPU) or to override it.
PEAK_ENV = "BABYLLAMA_PEAK_TFLOPS"


# ---------------------------------------------------------------------------------------
# Bits per byte


class TextBytes:
    """UTF-8 bytes of the text that runs of a token file's tokens decode to, counted so that
    the counts of consecutive runs add up to exactly the bytes of the text of their union.

    Each document (the ids before an eos) is decoded on its own, as it was written. A token's
    text may depend on its neighbours: byte pieces make one character together, and
    SentencePiece drops the leading space of a text's first piece. So text is only cut after
    a "clean" token (one that decodes alone to text with no U+FFFD: never part of an
    unfinished character) or at a document's start. The bytes of tokens [start, end) are
    G(cut(end)) - G(cut(start)), where cut(p) is the last cut at or before p and G(q) is the
    bytes of everything before q: a character split between two windows counts in the window
    where its last piece is, and the runs' counts telescope to the exact total.
    G(b) - G(a) is found by decoding only tokens [a, b) after the clean token before a.
    """

    def __init__(self, tokenizer: Tokenizer, eos_id: int):
        self.tokenizer = tokenizer
        self.eos_id = eos_id
        self._alone: dict[int, int | None] = {}  # bytes of a clean token decoded alone; None: not clean

    def alone(self, token: int) -> int | None:
        if token not in self._alone:
            text = self.tokenizer.decode([token])
            self._alone[token] = len(text.encode("utf-8")) if text and REPLACEMENT_CHARACTER not in text else None
        return self._alone[token]

    def cut(self, tokens: np.ndarray, position: int) -> tuple[int, int | None]:
        """The last cut at or before `position`, and the clean token before it (None at a document's start)."""
        while position > 0:
            token = int(tokens[position - 1])
            if token == self.eos_id:
                return position, None
            if self.alone(token) is not None:
                return position, token
            position -= 1
        return 0, None

    def between(self, tokens: np.ndarray, start: int, end: int) -> int:
        """The bytes of tokens[start:end] (a file's tokens, documents each followed by eos)."""
        first, context = self.cut(tokens, start)
        last, _ = self.cut(tokens, end)
        if last <= first:
            return 0
        ids = tokens[first:last].tolist()
        total = 0
        prefix = [] if context is None else [context]
        document: list[int] = []
        for token in [*ids, self.eos_id]:
            if token != self.eos_id:
                document.append(token)
                continue
            if document:
                total += len(self.tokenizer.decode(prefix + document).encode("utf-8"))
                total -= 0 if not prefix else self.alone(prefix[0])
            prefix, document = [], []
        return total


def windows_bytes(text_bytes: TextBytes, dataset: TokenDataset, indices, validation: bool = False) -> int:
    """The bytes of the target tokens (each window's last seq_len) of these windows, a window counted
    as often as it is listed; of an SFT dataset's, only the trained targets (each run of them)."""
    file_of, starts = dataset.window_starts(indices, validation)
    counted: dict[tuple[int, int], int] = {}
    total = 0
    for f, start in zip(file_of.tolist(), starts.tolist()):
        if (f, start) not in counted:
            runs = _trained_runs(dataset, f, start) if dataset.sft else [(0, dataset.seq_len)]
            counted[f, start] = sum(text_bytes.between(dataset.file_tokens(f), start + 1 + a, start + 1 + b)
                                    for a, b in runs)
        total += counted[f, start]
    return total


def _trained_runs(dataset, file_index: int, start: int) -> list[tuple[int, int]]:
    """[a, b) spans of a window's targets that are trained, in target positions."""
    trained = np.concatenate([[0], dataset.file_mask(file_index)[start + 1 : start + 1 + dataset.seq_len] != 0, [0]])
    edges = np.flatnonzero(np.diff(trained.astype(np.int8)))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def scored_targets(dataset: TokenDataset, indices, validation: bool = False) -> int:
    """How many targets of these windows the loss scores: all of them, or an SFT dataset's trained ones."""
    if not dataset.sft:
        return len(indices) * dataset.seq_len
    file_of, starts = dataset.window_starts(indices, validation)
    return sum(int(np.count_nonzero(dataset.file_mask(f)[start + 1 : start + 1 + dataset.seq_len]))
               for f, start in zip(file_of.tolist(), starts.tolist()))


def bits_per_byte(loss: float, bytes_per_token: float | None) -> float | None:
    """loss (nats a token) x tokens / (bytes x ln 2); None when the tokens decode to no text."""
    if not bytes_per_token or not math.isfinite(loss):
        return None
    return loss / (bytes_per_token * LN2)


# ---------------------------------------------------------------------------------------
# Baselines


def uniform_loss(vocab_size: int) -> float:
    """The loss of a model that gives every id the same probability."""
    return math.log(vocab_size)


@dataclass(frozen=True)
class UnigramCount:
    loss: float  # the entropy of the counted tokens' frequencies, in nats
    counted: int
    total: int  # training tokens: the targets of the training windows
    seconds: float

    @property
    def exact(self) -> bool:
        return self.counted == self.total


def _training_targets(dataset: TokenDataset) -> list[tuple[int, int, int]]:
    """(file, start, end) of the tokens the training windows predict, file by file (of an SFT dataset,
    the ranges whose trained tokens they are)."""
    if dataset.sft:
        return _sft_training_targets(dataset)
    return [(f, 1, windows * dataset.seq_len + 1) for f, windows in enumerate(dataset.file_train) if windows]


def _sft_training_targets(dataset: TokenDataset) -> list[tuple[int, int, int]]:
    """Each file's tokens up to its first held-out window's targets (or past its last training
    window): their trained tokens are the training targets, as the windows left out hold none."""
    ranges = []
    trains = np.cumsum(dataset.file_train)
    vals = np.cumsum([0, *dataset.file_val])
    for f, windows in enumerate(dataset.file_train):
        if not windows:
            continue
        if dataset.file_val[f]:
            end = int(dataset.window_starts([vals[f]], validation=True)[1][0]) + 1
        else:
            end = int(dataset.window_starts([trains[f] - 1])[1][0]) + dataset.seq_len + 1
        ranges.append((f, 1, end))
    return ranges


def _spread_blocks(ranges: list[tuple[int, int, int]], budget: int, block: int) -> Iterator[tuple[int, int, int]]:
    """`budget // block` blocks of `block` tokens spread evenly over the ranges (the last of a range may be shorter)."""
    per_range = [math.ceil((end - start) / block) for _, start, end in ranges]
    offsets = np.cumsum([0, *per_range])
    picks = np.arange(budget // block, dtype=np.int64) * int(offsets[-1]) // (budget // block)
    for pick in picks.tolist():
        r = int(np.searchsorted(offsets, pick, side="right")) - 1
        f, start, end = ranges[r]
        first = start + (pick - int(offsets[r])) * block
        yield f, first, min(first + block, end)


def unigram_loss(dataset: TokenDataset, max_tokens: int = UNIGRAM_MAX_TOKENS,
                 block: int = UNIGRAM_BLOCK_TOKENS) -> UnigramCount:
    """The loss of a model that knows only how often each id occurs: the entropy, in nats, of the
    training tokens' frequencies (an SFT dataset's trained ones). Exact up to `max_tokens` tokens;
    above, estimated from that many in blocks spread over the data."""
    began = time.perf_counter()
    ranges = _training_targets(dataset)
    total = sum(end - start for _, start, end in ranges)
    trained = (sum(int(np.count_nonzero(dataset.file_mask(f)[start:end])) for f, start, end in ranges)
               if dataset.sft else total)
    pieces = ranges if total <= max_tokens else list(_spread_blocks(ranges, max_tokens, block))
    counts = np.zeros(dataset.vocab_size, dtype=np.int64)
    counted = 0
    for f, start, end in pieces:
        tokens = dataset.file_tokens(f)
        for chunk_start in range(start, end, UNIGRAM_CHUNK_TOKENS):
            chunk = tokens[chunk_start : min(end, chunk_start + UNIGRAM_CHUNK_TOKENS)]
            if dataset.sft:
                chunk = chunk[dataset.file_mask(f)[chunk_start : chunk_start + chunk.size] != 0]
            counts += np.bincount(chunk, minlength=dataset.vocab_size)[: dataset.vocab_size]
            counted += chunk.size
    p = counts[counts > 0] / counted
    return UnigramCount(float(-(p * np.log(p)).sum()), counted, trained, time.perf_counter() - began)


def _data_key(dataset: TokenDataset) -> dict:
    """What the unigram count depends on: the token files as they are, and the training windows."""
    return {
        "files": [{"path": str(f.path.resolve()), "tokens": f.n_tokens, "mtime_ns": f.path.stat().st_mtime_ns,
                   "train_windows": windows} for f, windows in zip(dataset.files, dataset.file_train)],
        "seq_len": dataset.seq_len,
        "max_tokens": UNIGRAM_MAX_TOKENS,
    }


def stored_unigram_loss(run_path: Path, dataset: TokenDataset) -> tuple[UnigramCount, bool]:
    """The unigram count kept in the run for this data, or a new count, kept there; and whether it was kept."""
    path = run_path / BASELINES_FILE
    key = _data_key(dataset)
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
        if stored.get("key") == key:
            return UnigramCount(stored["unigram_loss"], stored["counted"], stored["total"], stored["seconds"]), True
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass
    count = unigram_loss(dataset)
    atomic_write_json(path, {"key": key, "unigram_loss": count.loss, "counted": count.counted, "total": count.total,
                             "seconds": round(count.seconds, 3)})
    return count, False


# ---------------------------------------------------------------------------------------
# FLOPs and the device's peak


def matmul_parameters(cfg: ModelConfig) -> int:
    """Weights that multiply activations: every layer's attention and feed-forward matrices, and the
    output layer (the tied embedding, used as a matmul once; its lookup costs no FLOPs)."""
    kv_dim = cfg.kv_heads * cfg.head_dim
    per_layer = 2 * cfg.dim * cfg.dim + 2 * cfg.dim * kv_dim + 3 * cfg.dim * cfg.hidden_dim
    return cfg.n_layers * per_layer + cfg.vocab_size * cfg.dim


def flops_per_token(cfg: ModelConfig) -> int:
    """Model FLOPs of one training token, forward and backward (PaLM's count, appendix B):
    6 x matmul_parameters, plus 12 x layers x dim x seq_len for the attention scores and the
    weighted values (2 x seq_len x dim each a layer forward, three times that with the backward),
    every query against the whole window, as the masked matmuls compute it."""
    return 6 * matmul_parameters(cfg) + 12 * cfg.n_layers * cfg.dim * cfg.max_seq_len


@dataclass(frozen=True)
class Peak:
    flops: float | None  # FLOP/s of all the run's devices together; None: not known
    source: str


# Dense (no sparsity) tensor-core peaks from the vendors' datasheets and whitepapers, in TFLOP/s
# by the dtype the run computes in; a name matches when the pattern is found in the name
# nvidia-smi or npu-smi gives. GeForce cards: with float32 accumulation, as training uses.
# Ascend 910B (910B1..910B4) is left out: Huawei publishes no per-chip figure we could cite.
PEAK_TABLE: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H100.*PCIe", "H100 PCIe", {"bfloat16": 756.5, "float16": 756.5}),
    (r"H100.*(SXM|HBM3)", "H100 SXM", {"bfloat16": 989.5, "float16": 989.5}),
    (r"A100|A800", "A100", {"bfloat16": 312.0, "float16": 312.0}),
    (r"V100S", "V100S PCIe", {"float16": 130.0}),
    (r"V100.*SXM", "V100 SXM2", {"float16": 125.0}),
    (r"V100.*PCI", "V100 PCIe", {"float16": 112.0}),
    (r"\bT4\b", "T4", {"float16": 65.0}),
    (r"\bA10\b", "A10", {"bfloat16": 125.0, "float16": 125.0}),
    (r"\bL4\b", "L4", {"bfloat16": 121.0, "float16": 121.0}),
    (r"L40S", "L40S", {"bfloat16": 362.05, "float16": 362.05}),
    (r"RTX 3090(?! Ti)", "GeForce RTX 3090", {"bfloat16": 71.0, "float16": 71.0}),
    (r"RTX 4090(?! D)", "GeForce RTX 4090", {"bfloat16": 165.2, "float16": 165.2}),
    (r"^(Ascend )?910A?$", "Ascend 910", {"float16": 256.0}),
)


def table_peak(name: str, dtype: str) -> tuple[str, float] | None:
    """(what the table calls it, dense TFLOP/s) of a device name from nvidia-smi or npu-smi in `dtype`."""
    for pattern, label, peaks in PEAK_TABLE:
        if re.search(pattern, name):
            return (label, peaks[dtype]) if dtype in peaks else None
    return None


def openblas_thread_functions() -> tuple[Callable, Callable] | None:
    """numpy's OpenBLAS thread-count functions, found among the libraries this process has loaded."""
    try:
        with open("/proc/self/maps", encoding="utf-8") as f:
            paths = sorted({line.split()[-1] for line in f if "openblas" in line.lower() and "/" in line})
    except OSError:
        return None
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for suffix in ("64_", ""):
            get = getattr(lib, f"openblas_get_num_threads{suffix}", None)
            set_ = getattr(lib, f"openblas_set_num_threads{suffix}", None)
            if get is not None and set_ is not None:
                return get, set_
    return None


@contextmanager
def _blas_threads(threads: int) -> Iterator[int | None]:
    """numpy's matmuls on `threads` threads for the block; yields None when it cannot be set."""
    functions = openblas_thread_functions()
    if functions is None:
        yield None
        return
    get, set_ = functions
    before = get()
    set_(threads)
    try:
        yield threads
    finally:
        set_(before)


def measure_cpu_peak(threads: int) -> Peak:
    """FLOP/s of the best of short float32 matmuls (numpy's BLAS) on `threads` threads."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((CPU_MATMUL_SIZE, CPU_MATMUL_SIZE), dtype=np.float32) for _ in range(2))
    out = np.empty_like(a)
    with _blas_threads(threads) as used:
        best = math.inf
        began = time.perf_counter()
        for run in range(100):
            if run >= 2 and time.perf_counter() - began > CPU_MATMUL_SECONDS:
                break
            start = time.perf_counter()
            np.matmul(a, b, out=out)
            best = min(best, time.perf_counter() - start)
    on = f"{used} threads" if used is not None else "numpy's default threads"
    return Peak(2 * CPU_MATMUL_SIZE**3 / best, f"{MEASURED} float32 matmul on {on}")


def cpu_peak_threads(cpu_threads: int, world_size: int) -> int:
    """The threads the run's workers use on this host's cores, which its CPU peak is measured on."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, min(cores, cpu_threads * world_size))


def device_peak(device: str, dtype: str, world_size: int, cpu_threads: int,
                accelerator_names: list[str] | None = None) -> Peak:
    """The peak FLOP/s of the run's devices together. `device` is MindSpore's ("CPU", "GPU",
    "Ascend"); on the CPU a matmul measured now on the threads the run's workers use on this
    host; elsewhere the table, by the name of the first device of that kind (`accelerator_names`,
    read from nvidia-smi or npu-smi when not given) times `world_size`. PEAK_ENV overrides both."""
    given = os.environ.get(PEAK_ENV)
    if given:
        try:
            tflops = float(given)
        except ValueError:
            tflops = 0.0
        if tflops > 0:
            return Peak(tflops * 1e12 * world_size, f"{PEAK_ENV}={given} x {world_size}")
    if device == "CPU":
        return measure_cpu_peak(cpu_peak_threads(cpu_threads, world_size))
    if accelerator_names is None:
        from babyllama.devices import read_accelerators

        kind = "npu" if device == "Ascend" else "gpu"
        accelerator_names = [r.name for r in read_accelerators() if r.kind == kind]
    if not accelerator_names:
        return Peak(None, f"unknown: no {device} named by nvidia-smi or npu-smi; set {PEAK_ENV}")
    name = accelerator_names[0]
    found = table_peak(name, dtype)
    if found is None:
        return Peak(None, f"unknown: no {dtype} peak for {name} in the table; set {PEAK_ENV}")
    label, tflops = found
    return Peak(tflops * 1e12 * world_size, f"table: {label} {dtype} dense {tflops:g} TFLOP/s x {world_size}")


# ---------------------------------------------------------------------------------------
# What the trainer writes


@dataclass(frozen=True)
class RunMeasures:
    """A run's baselines and the constants its train and eval rows are measured with."""

    uniform_loss: float
    unigram: UnigramCount
    bytes_per_token: float | None  # train estimate
    val_bytes_per_token: float | None  # exactly the validation windows scored at each evaluation
    flops_per_token: int
    peak: Peak
    peak_threads: int | None = None  # the threads a CPU peak was measured on; None: not measured

    def row(self, step: int) -> dict:
        return {"kind": "baselines", "step": step, "uniform_loss": self.uniform_loss,
                "unigram_loss": self.unigram.loss, "bytes_per_token": self.bytes_per_token,
                "val_bytes_per_token": self.val_bytes_per_token, "flops_per_token": self.flops_per_token,
                "peak_flops": self.peak.flops, "peak_source": self.peak.source}

    def train_fields(self, loss: float, tokens_per_s: float | None) -> dict:
        """`bpb`, `flops_per_s` and `mfu` of a train row."""
        flops = None if tokens_per_s is None else self.flops_per_token * tokens_per_s
        return {
            "bpb": bits_per_byte(loss, self.bytes_per_token),
            "flops_per_s": flops,
            "mfu": None if flops is None or not self.peak.flops else flops / self.peak.flops,
        }

    def val_bpb(self, val_loss: float) -> float | None:
        return bits_per_byte(val_loss, self.val_bytes_per_token)

    def peak_remeasured(self, achieved_flops: float | None) -> RunMeasures | None:
        """These measures with the CPU's peak measured again, when the run went faster than the
        peak measured at its start (other programs had slowed that matmul) and the new measure is
        higher; None otherwise, and where the peak did not come from a measure."""
        peak = self.peak
        if not self.peak_threads or not peak.flops or not achieved_flops or achieved_flops <= peak.flops:
            return None
        again = measure_cpu_peak(self.peak_threads)
        if again.flops <= peak.flops:
            return None
        return replace(self, peak=Peak(again.flops, f"{again.source}, again after the run went faster than "
                                                     f"the {peak.flops / 1e12:,.3g} TFLOP/s measured at its start"))

    def describe(self) -> str:
        """The log lines at start."""
        unigram = self.unigram
        how = (f"all {unigram.total:,} training tokens" if unigram.exact
               else f"{unigram.counted:,} of {unigram.total:,} training tokens")
        peak = "unknown" if self.peak.flops is None else f"{self.peak.flops / 1e12:,.3g} TFLOP/s"
        per_token = [f"{value:.3f} ({what})" for value, what in
                     ((self.bytes_per_token, "train"), (self.val_bytes_per_token, "validation")) if value]
        return (f"baselines: uniform loss {self.uniform_loss:.4f}, unigram loss {unigram.loss:.4f} ({how}); "
                f"bytes per token {', '.join(per_token) or 'unknown'}\n"
                f"throughput: {self.flops_per_token / 1e6:,.1f} MFLOP per token; peak {peak} ({self.peak.source})")


def _bytes_per_token(text_bytes: TextBytes, dataset: TokenDataset, indices, validation: bool) -> float | None:
    if len(indices) == 0:
        return None
    n_bytes = windows_bytes(text_bytes, dataset, indices, validation)
    return n_bytes / scored_targets(dataset, indices, validation) if n_bytes else None


def run_measures(run_path: Path, model: ModelConfig, dataset: TokenDataset, tokenizer: Tokenizer, *,
                 batch_size: int, eval_iters: int, device: str, dtype: str, world_size: int,
                 cpu_threads: int) -> RunMeasures:
    """Everything `RunMeasures` holds, for a trainer starting: the unigram count from the run
    directory when this data was counted before, the rest computed now (a second or so)."""
    unigram, _ = stored_unigram_loss(run_path, dataset)
    text_bytes = TextBytes(tokenizer, dataset.eos_id)
    train = dataset.spread_train_indices(math.ceil(TRAIN_SAMPLE_TOKENS / dataset.seq_len))
    val = dataset.val_indices(batch_size, eval_iters) if dataset.val_windows else []
    peak = device_peak(device, dtype, world_size, cpu_threads)
    return RunMeasures(
        uniform_loss=uniform_loss(model.vocab_size),
        unigram=unigram,
        bytes_per_token=_bytes_per_token(text_bytes, dataset, train, validation=False),
        val_bytes_per_token=_bytes_per_token(text_bytes, dataset, val, validation=True),
        flops_per_token=flops_per_token(model),
        peak=peak,
        peak_threads=cpu_peak_threads(cpu_threads, world_size) if peak.source.startswith(MEASURED) else None,
    )
