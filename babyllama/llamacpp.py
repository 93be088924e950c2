"""`--backend llamacpp`: a checkpoint run by llama.cpp (llama-cpp-python, the optional extra
`.[llamacpp]`) through a GGUF file made from it on first use and cached beside it.

llama.cpp only computes the logits: the prompt's ids come from our tokenizer and the tokens are
chosen by `generate.choose_token`, so sampling, streaming and stop reasons are the numpy
decoder's. The GGUF holds the weights in the precision asked for with a vocabulary of one
placeholder piece per id (llama.cpp needs one to load; it never tokenizes here), and records a
fingerprint of the checkpoint's files: a checkpoint whose files changed is converted again. Why
and when to use it: docs/ARCHITECTURE.md, "Generating text".
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from babyllama.errors import UserError
from babyllama.export_gguf import GGUF_TYPES, gguf_tensors, ids_only_vocabulary, write_gguf
from babyllama.files import abandoned_temp, out_of_space, space_failures_naming, temp_path, user_cache_dir

DEFAULT_PRECISION = "f16"
INSTALL_HINT = 'pip install -e ".[llamacpp]" (it builds llama.cpp from source: minutes)'
CACHE_PREFIX = "llamacpp-"
FINGERPRINT_KEY = "babyllama.checkpoint_fingerprint"
# Part of the fingerprint: a change to how the cache file is written makes every cached file stale.
CACHE_FORMAT = 1


def unavailable() -> str | None:
    """Why llama.cpp cannot be used here, or None when llama_cpp imports."""
    try:
        import llama_cpp  # noqa: F401
    except ImportError as e:
        return f"llama-cpp-python is not installed ({e}); {INSTALL_HINT}"
    except (OSError, RuntimeError) as e:  # how llama_cpp says its shared library is missing or will not load
        return f"llama-cpp-python is installed but its llama.cpp library does not load ({e}); reinstall it: {INSTALL_HINT}"
    return None


def fingerprint(checkpoint: Path, precision: str) -> str:
    """A hash of the checkpoint folder's weights and config files (names, sizes, modification
    times) and of the precision: it changes when any of them is rewritten."""
    digest = hashlib.sha256(f"{CACHE_FORMAT} {precision}".encode())
    for path in sorted(checkpoint.iterdir()):
        if path.suffix in (".safetensors", ".json") and path.is_file():
            stat = path.stat()
            digest.update(f"\n{path.name} {stat.st_size} {stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def cache_path(checkpoint: Path, precision: str) -> Path:
    """Where the GGUF of `checkpoint` in `precision` is kept: in the checkpoint folder, or when that
    cannot be written, under ~/.cache/babyllama/gguf (XDG_CACHE_HOME's) by the folder's path."""
    name = f"{CACHE_PREFIX}{precision}.gguf"
    if os.access(checkpoint, os.W_OK):
        return checkpoint / name
    key = hashlib.sha256(str(checkpoint.resolve()).encode()).hexdigest()[:16]
    return user_cache_dir() / "gguf" / key / name


def recorded_fingerprint(path: Path) -> str | None:
    """The fingerprint a cached GGUF records; None when there is no such file, or it is not a GGUF
    (then it is made again)."""
    if not path.is_file():
        return None
    import gguf

    try:
        field = gguf.GGUFReader(str(path)).get_field(FINGERPRINT_KEY)
        return str(field.contents()) if field is not None else None
    except Exception:  # gguf reports a damaged file with several exception types
        return None


def remove_abandoned_temps(path: Path) -> None:
    """Delete what conversions to `path` killed midway left under their temporary names (a GGUF's
    worth of bytes each, in the checkpoint folder); a file whose writing process still runs stays."""
    for temp in path.parent.glob(f".{path.name}.tmp-*"):
        if abandoned_temp(temp):
            temp.unlink(missing_ok=True)


def cached_gguf(loaded, precision: str, say) -> Path:
    """The GGUF of `loaded` (a checkpoint.LoadedModel) in `precision`, converted now when there is
    none for its files as they are; `say(message)` is told when it is."""
    if precision not in GGUF_TYPES:
        raise UserError(f"unknown precision {precision!r}; choose one of {', '.join(GGUF_TYPES)}")
    wanted = fingerprint(loaded.checkpoint, precision)
    path = cache_path(loaded.checkpoint, precision)
    if recorded_fingerprint(path) == wanted:
        return path
    say(f"converting {loaded.checkpoint} to a GGUF file ({precision}) for llama.cpp: {path}")
    tensors, _ = gguf_tensors(loaded.cfg, loaded.weights, precision)
    temp = temp_path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_abandoned_temps(path)
        with space_failures_naming(path):
            try:
                write_gguf(temp, loaded.checkpoint.name, loaded.cfg, tensors,
                           ids_only_vocabulary(loaded.cfg.vocab_size), precision, None, None,
                           {FINGERPRINT_KEY: wanted})
                os.replace(temp, path)
            except BaseException:
                temp.unlink(missing_ok=True)
                raise
    except OSError as e:
        reason = f"{e.strerror} writing {e.filename}" if out_of_space(e) else str(e)
        raise UserError(f"cannot write the GGUF llama.cpp runs: {reason}; free some space, or use "
                        "--backend numpy") from None
    return path


def default_threads() -> int:
    """Half the CPUs this process may use, at least one. llama.cpp's threads spin while they wait
    for each other at every operation, so one that loses its core (to its SMT sibling, to the
    Playground's other panel, to any busy program) stalls them all: on a 2-CPU machine with other
    work running, 2 threads ran the tiny preset at q8_0 at about 10 tokens/s and 1 thread at about
    850. Half leaves a core per thread on machines with SMT, and room for a second server."""
    return max(1, len(os.sched_getaffinity(0)) // 2)


def _quiet(llama_cpp) -> None:
    """Send llama.cpp's own log lines nowhere: serve --stdio's stdout is the protocol, and its
    stderr should hold our lines, not the loader's hundreds."""
    global _log_sink
    if _log_sink is None:
        _log_sink = llama_cpp.llama_log_callback(lambda level, text, user_data: None)
        llama_cpp.llama_log_set(_log_sink, None)


_log_sink = None  # the callback handed to llama.cpp, kept alive as long as the process


class LlamaCppDecoder:
    """llama.cpp behind the decoders' prefill/decode interface, on one GGUF file (batch 1). Its KV
    cache is float32 for f32 weights, so greedy output is the numpy decoder's; f16 otherwise
    (llama.cpp's default). Logits go into a buffer made once, as NumpyDecoder's decode() does."""

    backend = "llamacpp"

    def __init__(self, path: Path, cfg, precision: str, threads: int | None = None):
        import llama_cpp

        _quiet(llama_cpp)
        threads = threads or default_threads()
        cache_types = {"type_k": llama_cpp.GGML_TYPE_F32, "type_v": llama_cpp.GGML_TYPE_F32} if precision == "f32" else {}
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=cfg.max_seq_len, n_batch=min(cfg.max_seq_len, 512),
                                       n_threads=threads, n_threads_batch=threads, logits_all=False, verbose=False,
                                       **cache_types)
        except ValueError as e:
            raise UserError(f"{path}: llama.cpp cannot load it ({e}); delete it to have it made again") from None
        self.precision = precision
        self.max_seq_len = cfg.max_seq_len
        self._logits = np.empty(cfg.vocab_size, np.float32)

    def prefill(self, ids) -> np.ndarray:
        self.llm.reset()
        self.llm.eval([int(i) for i in ids])
        return self._read()

    def decode(self, token: int) -> np.ndarray:
        self.llm.eval([int(token)])
        return self._read()

    def _read(self) -> np.ndarray:
        import llama_cpp

        logits = llama_cpp.llama_get_logits_ith(self.llm.ctx, -1)
        self._logits[:] = np.ctypeslib.as_array(logits, shape=(len(self._logits),))
        return self._logits


def llamacpp_decoder(loaded, precision: str, say, threads: int | None = None) -> LlamaCppDecoder:
    """A LlamaCppDecoder of `loaded` on `threads` (default: default_threads()), converting its GGUF
    first if needed."""
    if threads is not None and threads < 1:
        raise UserError(f"--threads {threads}: give at least 1")
    reason = unavailable()
    if reason is not None:
        raise UserError(f"--backend llamacpp: {reason}")
    return LlamaCppDecoder(cached_gguf(loaded, precision, say), loaded.cfg, precision, threads)
