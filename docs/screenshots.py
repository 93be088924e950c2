"""Take the README's screenshots of the four screens, and the Monitor's help, from a real project folder.

    python docs/screenshots.py PROJECT [--run NAME] [--compare STEP_FOLDER] [--size 150x42] [--monitor-at 80x24 ...]

PROJECT is a folder as a user has it (data/ with a token file, out/runs/ with a run that
saved a few checkpoints). The app runs headless at the given size; the playground
continues the seed's first prompt with the run's newest checkpoint, side by side with
--compare (an older step of the same run, say). Writes docs/screens/NAME.svg, and the Monitor
again at each --monitor-at size as docs/screens/monitor-COLUMNSxROWS.svg.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from pathlib import Path

from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.widgets.checkpoint_picker import list_checkpoints

OUT = Path(__file__).parent / "screens"
SETTLE_S = 2.0
GENERATION_LIMIT_S = 120.0


async def take(root: Path, run: str | None, compare: Path | None, size: tuple[int, int]) -> list[Path]:
    OUT.mkdir(exist_ok=True)
    written = []
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=size) as pilot:

        async def shot(name: str, *keys: str) -> None:
            await pilot.press(*keys)
            await pilot.pause(SETTLE_S)
            path = OUT / f"{name}.svg"
            app.save_screenshot(filename=path.name, path=str(OUT))
            written.append(path)

        await shot("corpora", "1")
        await shot("train", "2", "t")
        if run:
            app.current_run = root / "out" / "runs" / run
        await shot("monitor", "3")
        await shot("help", "question_mark")
        await pilot.press("escape")
        await pilot.press("4")
        await pilot.pause(SETTLE_S)
        playground = app.screen
        if compare is not None:
            (choice,) = (c for c in list_checkpoints(root) if c.path.resolve() == compare.resolve())
            playground.load("B", choice)
        deadline = time.monotonic() + GENERATION_LIMIT_S
        while any(e.state == "loading" for e in playground.live_engines()):
            assert time.monotonic() < deadline, "the checkpoints did not load"
            await pilot.pause(0.2)
        await pilot.press("f1")
        await pilot.pause(0.5)
        while playground.generating:
            assert time.monotonic() < deadline, "the generation did not end"
            await pilot.pause(0.2)
        await shot("playground")
    return written


async def take_monitor(root: Path, run: str | None, size: tuple[int, int]) -> Path:
    app = BabyLlamaApp(root=root)
    async with app.run_test(size=size) as pilot:
        if run:
            app.current_run = root / "out" / "runs" / run
        await pilot.press("3")
        await pilot.pause(SETTLE_S)
        path = OUT / f"monitor-{size[0]}x{size[1]}.svg"
        app.save_screenshot(filename=path.name, path=str(OUT))
    return path


def parse_size(text: str) -> tuple[int, int]:
    columns, rows = (int(n) for n in text.split("x"))
    return columns, rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("project", type=Path)
    parser.add_argument("--run", help="run to show on the monitor (default: the one the app picks)")
    parser.add_argument("--compare", type=Path, help="checkpoint folder for the playground's second panel")
    parser.add_argument("--size", default="150x42", help="terminal size, COLUMNSxROWS")
    parser.add_argument("--monitor-at", action="append", default=[], metavar="COLUMNSxROWS",
                        help="the Monitor again at this size (repeatable)")
    args = parser.parse_args()
    root = args.project.resolve()
    for path in asyncio.run(take(root, args.run, args.compare, parse_size(args.size))):
        print(f"wrote {path}")
    for size in args.monitor_at:
        print(f"wrote {asyncio.run(take_monitor(root, args.run, parse_size(size)))}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
