"""How fast the app starts and switches screens, this tree against a commit (HEAD), in one run.

The commit is checked out with `git worktree add` into a temporary folder and run
with PYTHONPATH pointing at it, so nothing in this tree is touched. The two sides alternate,
round after round, because a shared machine's load drifts.

    python bench/app_bench.py                    # a new user's project: one token file, no runs
    python bench/app_bench.py --root PROJECT --rounds 5
    python bench/app_bench.py --base 7510e04      # against an older commit

Measured for each side:
- start: from starting `python -m babyllama_tui` in an 80x24 pseudo-terminal to the first
  frame holding the header and the footer, and to the frame showing the new-run form's
  fields (a project without runs opens on the form).
- switch: under Textual's Pilot at 80x24, from pressing a screen key (1-4) until the screen
  is shown and the app has gone idle; the first visit to a screen and later visits apart.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import pty
import re
import select
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SIZE = (80, 24)
ESCAPES = re.compile(rb"\x1b\[[0-9;?<>=]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>78]")
START_LIMIT_S = 60.0
SCREEN_NAMES = {"1": "Corpora", "2": "Train", "3": "Monitor", "4": "Playground"}

SWITCHES = """
import asyncio, json, sys, time
from pathlib import Path
from babyllama_tui.app import BabyLlamaApp

KEYS = {"1": "CorporaScreen", "2": "TrainScreen", "3": "MonitorScreen", "4": "PlaygroundScreen"}

async def main():
    app = BabyLlamaApp(root=Path(sys.argv[1]))
    async with app.run_test(size=(80, 24)) as pilot:
        while getattr(app.screen, "form_check", None) is None:
            await pilot.pause(0.05)
        await pilot.pause(1.0)
        seen, results = {"2"}, []
        for key in sys.argv[2]:
            start = time.perf_counter()
            await pilot.press(key)
            while type(app.screen).__name__ != KEYS[key]:
                await asyncio.sleep(0.002)
            await pilot.pause()
            results.append({"key": key, "first": key not in seen, "seconds": time.perf_counter() - start})
            seen.add(key)
            await pilot.pause(0.6)
        await pilot.press("q")
    print(json.dumps(results))

asyncio.run(main())
"""


def make_project(folder: Path) -> Path:
    """A new user's project: one token file with its manifest in data/, no runs."""
    data = folder / "data"
    data.mkdir(parents=True)
    tokens = np.random.default_rng(0).integers(0, 2000, size=200_000, dtype=np.uint16)
    tokens.tofile(data / "sample.bin")
    manifest = {
        "kind": "babyllama-token-file", "version": 1, "dtype": "uint16", "tokens": int(tokens.size),
        "documents": 100, "eos_id": 2, "vocab_size": 2000,
        "tokenizer": {"name": "sample-bpe", "kind": "sentencepiece", "path": "", "vocab_size": 2000,
                      "eos_id": 2, "bos_id": 1, "sha256": "0" * 64},
        "skipped": {"too_short": 0, "malformed": 0, "examples": []}, "min_tokens": 6, "sources": [],
        "created": "2026-01-01T00:00:00Z",
    }
    (data / "sample.bin.json").write_text(json.dumps(manifest), encoding="utf-8")
    return folder


def screen_text(raw: bytes) -> str:
    return ESCAPES.sub(b"", raw).decode("utf-8", "replace")


def time_start(env: dict, root: Path) -> tuple[float, float]:
    """Seconds from starting the app in a pseudo-terminal to its first frame, and to the form's fields."""
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(root)
        os.execvpe(sys.executable, [sys.executable, "-m", "babyllama_tui"], env)
    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", SIZE[1], SIZE[0], 0, 0))
    start = time.perf_counter()
    raw = b""
    first_frame = form = None
    try:
        while form is None and time.perf_counter() - start < START_LIMIT_S:
            ready, _, _ = select.select([fd], [], [], 0.05)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                break
            if not chunk:
                break
            if b"\x1b[6n" in chunk or b"\x1b[c" in chunk:
                # Answer the terminal queries a real terminal would, so the app does not wait on them.
                os.write(fd, b"\x1b[1;1R")
            raw += chunk
            shown = screen_text(raw)
            if first_frame is None and "babyllama" in shown and "Quit" in shown:
                first_frame = time.perf_counter() - start
            if "vocab_size" in shown:
                form = time.perf_counter() - start
    finally:
        os.write(fd, b"q")
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            select.select([fd], [], [], 0.1)
            try:
                os.read(fd, 65536)
            except OSError:
                pass
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
        os.close(fd)
    if first_frame is None or form is None:
        raise SystemExit(f"the app under {env.get('PYTHONPATH')} showed no form within {START_LIMIT_S:.0f} s:\n"
                         f"{screen_text(raw)[-2000:]}")
    return first_frame, form


def time_switches(env: dict, root: Path, keys: str) -> list[dict]:
    done = subprocess.run([sys.executable, "-c", SWITCHES, str(root), keys], env=env, cwd=root,
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"switch timing failed under {env.get('PYTHONPATH')}:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def side_env(tree: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree), TERM="xterm-256color", COLUMNS=str(SIZE[0]), LINES=str(SIZE[1]))
    env.pop("TEXTUAL", None)
    return env


def median_ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:7.0f} ms" if values else "      -"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, help="project folder to open (default: a new one with one token file)")
    parser.add_argument("--base", default="HEAD", help="commit to compare this tree with (default: HEAD)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--keys", default="1212421323", help="screen keys pressed in turn, after the Train screen")
    args = parser.parse_args()

    scratch = Path(tempfile.mkdtemp(prefix="app-bench-"))
    base = scratch / "head"
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(base), args.base], check=True)
    try:
        root = args.root.resolve() if args.root else make_project(scratch / "project")
        sides = {args.base: side_env(base), "this tree": side_env(ROOT)}
        found: dict[str, dict[str, list[float]]] = {
            name: {"first frame": [], "form shown": [], "switch, first visit": [], "switch, later visits": []}
            for name in sides
        }
        for round_index in range(args.rounds):
            for name, env in (sides.items() if round_index % 2 == 0 else reversed(sides.items())):
                first_frame, form = time_start(env, root)
                found[name]["first frame"].append(first_frame)
                found[name]["form shown"].append(form)
                for switch in time_switches(env, root, args.keys):
                    kind = "switch, first visit" if switch["first"] else "switch, later visits"
                    found[name][kind].append(switch["seconds"])
                    screen = SCREEN_NAMES[switch["key"]]
                    found[name].setdefault(f"  to {screen}, first", [])
                    found[name].setdefault(f"  to {screen}, later", [])
                    found[name][f"  to {screen}, {'first' if switch['first'] else 'later'}"].append(switch["seconds"])
            print(f"round {round_index + 1}/{args.rounds} done", file=sys.stderr)
        print(f"medians over {args.rounds} rounds, keys {args.keys}, project {root}")
        print(f"{'':24}{args.base:>10}{'this tree':>12}{'ratio':>8}")
        for measure in found[args.base]:
            before, after = found[args.base][measure], found["this tree"][measure]
            ratio = statistics.median(after) / statistics.median(before) if before and after else float("nan")
            print(f"{measure:24}{median_ms(before)}{median_ms(after):>12}{ratio:8.2f}")
        print(subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    finally:
        subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
