"""`--backend llamacpp`: the checkpoint's GGUF made on first use and cached beside it, and llama.cpp's
logits through our sampler. Tests that run llama.cpp skip where llama-cpp-python is not installed;
the cache and the refusals need only the `gguf` package."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from test_chat import ROOMY, write_talking_checkpoint

from babyllama.checkpoint import load_model_for_inference
from babyllama.llamacpp import FINGERPRINT_KEY, cache_path, cached_gguf, recorded_fingerprint, unavailable

PROMPT = "话说天下大势，分久必合"
needs_llamacpp = pytest.mark.skipif(unavailable() is not None, reason=str(unavailable()))


def babyllama(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "babyllama", *map(str, args)], capture_output=True, text=True,
                          timeout=600, env=env)


def greedy(ckpt, *flags, env=None) -> subprocess.CompletedProcess:
    return babyllama("generate", "--ckpt", ckpt, "--prompt", PROMPT, "--temperature", 0, "--max-new-tokens", 48, *flags,
                     env=env)


@pytest.fixture
def talking(tmp_path, sp_tokenizer):
    """A random model whose greedy choices are decisive (test_chat's), in a folder of its own."""
    return write_talking_checkpoint(tmp_path / "step_0000003", sp_tokenizer, ROOMY)


def test_the_gguf_is_made_once_and_again_when_the_checkpoint_changes(talking, sp_tokenizer):
    said = []
    first = cached_gguf(load_model_for_inference(talking), "q8_0", said.append)
    assert first == talking / "llamacpp-q8_0.gguf" and len(said) == 1 and str(first) in said[0]
    made = first.stat().st_mtime_ns
    assert cached_gguf(load_model_for_inference(talking), "q8_0", said.append) == first
    assert len(said) == 1 and first.stat().st_mtime_ns == made
    # Another model's files moved over the checkpoint's: converted again.
    other = write_talking_checkpoint(talking.parent / "other", sp_tokenizer, ROOMY, ends=False)
    for name in ("model.safetensors", "config.json"):
        os.replace(other / name, talking / name)
    fingerprint = recorded_fingerprint(first)
    cached_gguf(load_model_for_inference(talking), "q8_0", said.append)
    assert len(said) == 2 and recorded_fingerprint(first) != fingerprint
    # Each precision has its own file; no temporary file is left.
    cached_gguf(load_model_for_inference(talking), "f16", said.append)
    assert sorted(p.name for p in talking.iterdir()) == ["config.json", "llamacpp-f16.gguf", "llamacpp-q8_0.gguf",
                                                        "model.safetensors"]


def test_a_conversion_killed_midway_leaves_a_file_the_next_conversion_deletes(talking):
    with subprocess.Popen(["true"]) as ended:
        ended.wait()
    abandoned = talking / f".llamacpp-q8_0.gguf.tmp-{ended.pid}"
    with subprocess.Popen(["sleep", "30"]) as writing:
        still_written = talking / f".llamacpp-q8_0.gguf.tmp-{writing.pid}"
        abandoned.write_bytes(b"GGUF, half written")
        still_written.write_bytes(b"GGUF, being written")
        cached_gguf(load_model_for_inference(talking), "q8_0", lambda m: None)
        writing.kill()
    assert not abandoned.exists() and still_written.exists()


def test_a_damaged_cache_file_is_made_again(talking):
    loaded = load_model_for_inference(talking)
    path = cache_path(talking, "f16")
    path.write_bytes(b"GGUF and then nothing")
    said = []
    cached_gguf(loaded, "f16", said.append)
    assert len(said) == 1 and recorded_fingerprint(path) is not None


def test_a_checkpoint_folder_that_cannot_be_written_keeps_its_gguf_in_the_users_cache(tmp_path, tmpfs, sp_tokenizer):
    disk = tmpfs("ro", "4m")
    ckpt = write_talking_checkpoint(disk / "step_0000003", sp_tokenizer, ROOMY)
    subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", "from babyllama.checkpoint import load_model_for_inference as l;"
                           "from babyllama.llamacpp import cached_gguf as c;"
                           f"print(c(l({str(ckpt)!r}), 'q8_0', lambda m: None))"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    path = done.stdout.strip()
    assert path.startswith(str(tmp_path / "cache" / "babyllama" / "gguf")) and path.endswith("llamacpp-q8_0.gguf")
    assert os.path.getsize(path) > 0


def test_a_full_disk_while_converting_is_said_in_one_line_and_leaves_no_file(tmpfs, sp_tokenizer):
    # Room for the checkpoint (about 1 MB) and not for its float32 GGUF beside it.
    ckpt = write_talking_checkpoint(tmpfs("disk", "1500k") / "step_0000003", sp_tokenizer, ROOMY)
    done = greedy(ckpt, "--backend", "llamacpp", "--precision", "f32")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        f"babyllama generate: error: cannot write the GGUF llama.cpp runs: No space left on device writing "
        f"{ckpt / 'llamacpp-f32.gguf'}; free some space, or use --backend numpy")
    assert sorted(p.name for p in ckpt.iterdir()) == ["config.json", "model.safetensors"]


def test_a_precision_without_llamacpp_is_refused_in_one_line(talking):
    done = greedy(talking, "--precision", "q8_0")
    assert (done.returncode, done.stderr) == (
        2, "babyllama generate: error: --precision q8_0 goes with --backend llamacpp; the numpy backend runs float32\n")


def test_threads_without_llamacpp_or_below_one_are_refused_in_one_line(talking):
    done = greedy(talking, "--threads", 2)
    assert (done.returncode, done.stderr) == (
        2, "babyllama generate: error: --threads goes with --backend llamacpp; the numpy backend's BLAS takes "
        "OPENBLAS_NUM_THREADS from the environment\n")
    done = greedy(talking, "--backend", "llamacpp", "--threads", 0)
    assert (done.returncode, done.stderr) == (2, "babyllama generate: error: --threads 0: give at least 1\n")


def test_llamacpp_missing_is_said_in_one_line_with_how_to_install_it(talking, tmp_path):
    # A llama_cpp module that cannot be imported, ahead of the installed one on the path.
    (tmp_path / "llama_cpp.py").write_text("raise ImportError('llama.cpp was not built')\n")
    done = greedy(talking, "--backend", "llamacpp", env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "babyllama generate: error: --backend llamacpp: llama-cpp-python is not installed (llama.cpp was not built); "
        'pip install -e ".[llamacpp]" (it builds llama.cpp from source: minutes)')
    # Installed, but its library does not load: llama_cpp raises RuntimeError.
    (tmp_path / "llama_cpp.py").write_text("raise RuntimeError(\"Failed to load shared library 'libllama.so'\")\n")
    done = greedy(talking, "--backend", "llamacpp", env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines()[-1] == (
        "babyllama generate: error: --backend llamacpp: llama-cpp-python is installed but its llama.cpp library "
        "does not load (Failed to load shared library 'libllama.so'); reinstall it: "
        'pip install -e ".[llamacpp]" (it builds llama.cpp from source: minutes)')


@needs_llamacpp
@pytest.mark.slow
def test_greedy_f32_through_llamacpp_is_the_numpy_decoders_text_token_for_token(talking):
    from babyllama.decode import NumpyDecoder
    from babyllama.llamacpp import LlamaCppDecoder

    loaded = load_model_for_inference(talking)
    ids = list(range(5, 21))
    theirs = LlamaCppDecoder(cached_gguf(loaded, "f32", lambda m: None), loaded.cfg, "f32")
    ours = NumpyDecoder(loaded.cfg, loaded.weights)
    chosen = []
    their_logits, our_logits = theirs.prefill(ids), ours.prefill(ids)
    for _ in range(48):
        assert np.abs(their_logits - our_logits).max() < 1e-4 * np.abs(our_logits).max()
        token = int(np.argmax(our_logits))
        assert int(np.argmax(their_logits)) == token
        chosen.append(token)
        their_logits, our_logits = theirs.decode(token), ours.decode(token)
    # The command: the same text, and it names the backend.
    numpy_done, llamacpp_done = greedy(talking), greedy(talking, "--backend", "llamacpp", "--precision", "f32")
    assert llamacpp_done.returncode == 0, llamacpp_done.stderr
    assert llamacpp_done.stdout == numpy_done.stdout and len(numpy_done.stdout) > len(PROMPT) + 10
    two_threads = greedy(talking, "--backend", "llamacpp", "--precision", "f32", "--threads", 2)
    assert (two_threads.returncode, two_threads.stdout) == (0, numpy_done.stdout), two_threads.stderr
    assert f"babyllama generate: {talking} (llama.cpp, float32)" in llamacpp_done.stderr
    assert "llama_" not in llamacpp_done.stderr and "ggml" not in llamacpp_done.stderr  # llama.cpp's own log is quiet


@needs_llamacpp
@pytest.mark.slow
def test_sampling_through_llamacpp_uses_our_sampler_and_seeds(talking):
    flags = ("--backend", "llamacpp", "--precision", "f32", "--temperature", "0.8", "--top-p", "0.9", "--seed", "3")
    first = babyllama("generate", "--ckpt", talking, "--prompt", PROMPT, "--max-new-tokens", 32, *flags)
    again = babyllama("generate", "--ckpt", talking, "--prompt", PROMPT, "--max-new-tokens", 32, *flags)
    numpy = babyllama("generate", "--ckpt", talking, "--prompt", PROMPT, "--max-new-tokens", 32, *flags[4:])
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout == numpy.stdout


@needs_llamacpp
@pytest.mark.slow
def test_serve_reports_the_backend_and_precision(talking):
    request = json.dumps({"op": "generate", "id": 1, "prompt": PROMPT, "max_new_tokens": 8, "temperature": 0},
                         ensure_ascii=False)
    done = subprocess.run([sys.executable, "-m", "babyllama", "serve", "--stdio", "--ckpt", str(talking),
                           "--backend", "llamacpp", "--precision", "q8_0"], input=request + "\n",
                          capture_output=True, text=True, timeout=300)
    events = [json.loads(line) for line in done.stdout.splitlines()]
    assert events[0]["event"] == "ready" and (events[0]["backend"], events[0]["precision"]) == ("llamacpp", "q8_0")
    assert events[-1]["event"] == "done" and events[-1]["tokens"] == 8
    assert recorded_fingerprint(talking / "llamacpp-q8_0.gguf") is not None
    assert FINGERPRINT_KEY.startswith("babyllama.")
