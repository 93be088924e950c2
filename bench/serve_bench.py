"""`babyllama serve --http` under load: N concurrent streaming clients against one client alone.

    python bench/serve_bench.py [--clients 4] [--seconds 20] [--max-tokens 64] [--ckpt PATH]
                                [--dir /tmp/serve-bench]

A real server process on 127.0.0.1 (a free port, `--queue` as large as the clients, so a burst
waits its turn and nothing is refused), driven by the official `openai` client (AsyncOpenAI, one
task per client, in this process). Each client sends streaming completions one after another
(a prompt from 三国演义's first lines, temperature 0.8, its own seed per request, `max_tokens`,
`stream_options.include_usage`) until the time is up; the requests under way then finish and
count. A request is served when its stream ends with a finish reason and the usage chunk; any
other end (an error, a stream cut short) is lost, and there must be none.

Printed for one client, then for N: requests served and lost, time to first token (request sent
to first text) p50 and p99, completion tokens per second over the phase (all clients together),
and the ratios N / 1. The server generates one request at a time, so N clients share its
tokens/s (the ratio shows what the queue and the extra connections cost) and wait their turn for
their first token (about N - 1 generations).

Without --ckpt: the `tiny` preset's shape, freshly initialised (MindSpore's initialisation,
seed 0), with the vocabulary-8,000 tokenizer trained on the sample, written under --dir. The
machine may be shared, and the clients run on it too: compare ratios within one run.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ("话说天下大势，分久必合，合久必分。", "滚滚长江东逝水，浪花淘尽英雄。", "却说张飞拍马赶到关下，",
           "宴桃园豪杰三结义，", "是非成败转头空，青山依旧在，")


def make_checkpoint(folder: Path) -> Path:
    """The tiny preset's shape with the sample's 8,000-piece tokenizer, weights freshly initialised."""
    import mindspore as ms

    from babyllama.config import preset
    from babyllama.corpora import read_documents
    from babyllama.model import Transformer
    from babyllama.sample import fetch_sample
    from babyllama.tokenizer import load_tokenizer, train_sentencepiece

    checkpoint = folder / "bench" / "checkpoints" / "step_0000001"
    if (checkpoint / "config.json").exists():
        return folder / "bench"
    sample = fetch_sample(folder / "sample")
    texts = ("".join(doc.segments) for doc in read_documents([sample], "c4"))
    tokenizer = load_tokenizer(train_sentencepiece(texts, folder / "sanguo-8000", vocab_size=8000, force=True))
    cfg = dataclasses.replace(preset("tiny")[0], vocab_size=tokenizer.vocab_size)
    model = Transformer(cfg, seed=0)
    checkpoint.mkdir(parents=True)
    ms.save_checkpoint(model.trainable_params(), str(checkpoint / "model.safetensors"), format="safetensors")
    config = {"model": dataclasses.asdict(cfg), "train": {}, "tokenizer": tokenizer.describe(), "preset": "tiny"}
    (checkpoint / "config.json").write_text(json.dumps(config), encoding="utf-8")
    (checkpoint.parent / "latest").write_text(checkpoint.name + "\n")
    return folder / "bench"


class Server:
    def __init__(self, ckpt: Path, queue: int):
        self.process = subprocess.Popen(
            [sys.executable, "-m", "babyllama", "serve", "--http", "127.0.0.1:0", "--ckpt", str(ckpt),
             "--queue", str(queue)], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        announce = self.process.stdout.readline()
        if " at http://" not in announce:
            raise SystemExit(f"the server did not start (status {self.process.wait()})")
        self.model = announce.split("babyllama serve: ", 1)[1].split(" (", 1)[0]
        self.url = announce.rsplit(" at ", 1)[1].strip()

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=60)


@dataclasses.dataclass
class Outcome:
    served: bool
    ttft_s: float | None = None
    tokens: int = 0


async def one_request(client, model: str, number: int, max_tokens: int) -> Outcome:
    began = time.perf_counter()
    ttft, finished, tokens = None, False, None
    try:
        stream = await client.completions.create(
            model=model, prompt=PROMPTS[number % len(PROMPTS)], max_tokens=max_tokens, temperature=0.8,
            seed=number, stream=True, stream_options={"include_usage": True})
        async for chunk in stream:
            if chunk.choices:
                if ttft is None and chunk.choices[0].text:
                    ttft = time.perf_counter() - began
                finished = finished or chunk.choices[0].finish_reason is not None
            if chunk.usage is not None:
                tokens = chunk.usage.completion_tokens
    except Exception as e:  # counted as lost, and said
        print(f"  lost: {type(e).__name__}: {e}", file=sys.stderr)
        return Outcome(False)
    return Outcome(finished and tokens is not None, ttft, tokens or 0)


async def phase(server: Server, clients: int, seconds: float, max_tokens: int) -> dict:
    from openai import AsyncOpenAI

    client = AsyncOpenAI(base_url=server.url, api_key="none", max_retries=0, timeout=600)
    outcomes: list[Outcome] = []
    numbers = iter(range(10**9))
    began = time.perf_counter()
    deadline = began + seconds

    async def user() -> None:
        while time.perf_counter() < deadline:
            outcomes.append(await one_request(client, server.model, next(numbers), max_tokens))

    await asyncio.gather(*(user() for _ in range(clients)))
    elapsed = time.perf_counter() - began
    await client.close()
    served = [o for o in outcomes if o.served]
    ttfts = sorted(o.ttft_s for o in served if o.ttft_s is not None)
    return {"clients": clients, "served": len(served), "lost": len(outcomes) - len(served),
            "ttft_p50": statistics.median(ttfts), "ttft_p99": ttfts[min(len(ttfts) - 1, int(0.99 * len(ttfts)))],
            "tokens_per_s": sum(o.tokens for o in served) / elapsed, "elapsed": elapsed}


def show(result: dict) -> None:
    print(f"{result['clients']:>3} client(s): {result['served']:>4} served, {result['lost']} lost in "
          f"{result['elapsed']:.1f} s; first token p50 {result['ttft_p50'] * 1000:7.1f} ms, "
          f"p99 {result['ttft_p99'] * 1000:7.1f} ms; {result['tokens_per_s']:7.1f} tokens/s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--ckpt", type=Path, help="a run or checkpoint to serve (default: a fresh tiny model)")
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "serve-bench")
    args = parser.parse_args()

    ckpt = args.ckpt or make_checkpoint(args.dir)
    server = Server(ckpt, queue=args.clients)
    try:
        print(f"{os.cpu_count()} cores; {server.model} at {server.url}; {args.seconds:g} s per phase, "
              f"max_tokens {args.max_tokens}, temperature 0.8, streaming")
        alone = asyncio.run(phase(server, 1, args.seconds, args.max_tokens))
        show(alone)
        many = asyncio.run(phase(server, args.clients, args.seconds, args.max_tokens))
        show(many)
    finally:
        server.stop()
    print(f"{args.clients} clients / 1: tokens/s x{many['tokens_per_s'] / alone['tokens_per_s']:.2f}, "
          f"first token p50 x{many['ttft_p50'] / alone['ttft_p50']:.2f}")
    return 1 if alone["lost"] or many["lost"] else 0


if __name__ == "__main__":
    sys.exit(main())
