"""The Monitor's panels, status line, footer and cards under Pilot, at 80x24 and 200x50."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console
from rich.text import Text
from textual.widgets._footer import FooterKey

from babyllama.files import atomic_write_json
from babyllama.runs import RunDir
from babyllama_tui.app import BabyLlamaApp
from babyllama_tui.screens.monitor import NO_RUN_HINT, MonitorScreen
from babyllama_tui.widgets.log_tail import LogTail
from babyllama_tui.widgets.run_status import REASON_LINES, reason_text, with_reason
from babyllama_tui.widgets.sample_list import SampleList

from pilot_wait import footer_settled, wait_until
from run_fixtures import fill_run, train_row

STOP_REASON = ("stopped on SIGTERM at step 74; `babyllama train --run /tmp/proj/out/runs/tiny-20261128-1037 "
               "--resume` continues")


async def monitor_on(pilot, run: RunDir, step: int) -> MonitorScreen:
    pilot.app.monitor_run(run.path)
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, MonitorScreen), "the monitor")
    screen = pilot.app.screen
    await wait_until(pilot, lambda: screen.status_bar.status is not None and screen.status_bar.status.step == step,
                     "the run's rows")
    await wait_until(pilot, lambda: screen.log_tail.lines, "the log")
    return screen


def status_lines(screen: MonitorScreen) -> list[str]:
    return screen.status_bar.render().plain.splitlines()


async def test_the_log_and_samples_scroll_from_the_keyboard(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "long")
    fill_run(run, steps=1000, max_steps=1000, started=time.time() - 9000, state="finished")
    long_line = "step 1000: sample: '" + "话说天下大势，分久必合，合久必分。" * 8 + "' END"
    with open(run.log_path, "a") as log:
        log.write(long_line + "\n")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_on(pilot, run, 1000)
        log_tail = screen.query_one(LogTail)
        samples = screen.query_one(SampleList)
        await wait_until(pilot, lambda: len(samples.samples) == 10, "the samples")
        assert app.focused is log_tail, "the log takes the keys when the monitor opens"
        await wait_until(pilot, lambda: log_tail.scroll_y == log_tail.max_scroll_y > 0, "the newest lines")
        assert "scroll" in str(log_tail.border_title)

        await pilot.press("right", "right", "right")
        assert log_tail.scroll_x > 0, "a line longer than the panel can be read to its end"
        await pilot.press("up", "up")
        assert log_tail.scroll_y == log_tail.max_scroll_y - 2
        with open(run.log_path, "a") as log:
            log.write("a new line\n")
        await wait_until(pilot, lambda: log_tail.lines[-1] == "a new line", "the new line")
        await pilot.pause()
        assert log_tail.scroll_y < log_tail.max_scroll_y, "reading back, new lines do not pull the view down"
        await pilot.press("end")
        with open(run.log_path, "a") as log:
            log.write("another line\n")
        await wait_until(pilot, lambda: log_tail.lines[-1] == "another line", "another line")
        await wait_until(pilot, lambda: log_tail.scroll_y == log_tail.max_scroll_y, "the view to follow again")

        await pilot.press("tab")
        assert app.focused is samples
        assert "scroll" in str(samples.border_title) and "scroll" not in str(log_tail.border_title)
        assert samples.max_scroll_y > 0, "ten samples do not fit in the panel at 80x24"
        await pilot.press("down", "down", "down")
        assert samples.scroll_y == 3


def words(text: str) -> str:
    return " ".join(text.split())


async def test_a_stopped_runs_reason_is_shown_whole_at_80_columns(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "tiny-20261128-1037")
    fill_run(run, steps=74, max_steps=100, every=2, started=time.time() - 600, state="stopped", error=STOP_REASON)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_on(pilot, run, 74)
        lines = status_lines(screen)
        assert STOP_REASON in words(" ".join(lines)), lines
        assert all(len(line) <= screen.status_bar.size.width for line in lines)
        assert screen.chart.size.height >= 7


DOOMED = ("/tmp/project/data/doomed.bin: cannot open the token file (No such file or directory); prepare it again "
          "with `babyllama prepare`, or pick another token file")


async def test_a_run_that_ended_before_its_first_step_says_how_and_why_in_full(tmp_path):
    failed, killed = RunDir(tmp_path / "out" / "runs" / "failed"), RunDir(tmp_path / "out" / "runs" / "killed")
    for run, state, error in ((failed, "failed", DOOMED),
                              (killed, "stopped", "killed with SIGKILL; no checkpoint was saved")):
        fill_run(run, steps=0, max_steps=1000, started=time.time() - 60, state=state, error=error)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        app.monitor_run(failed.path)
        await wait_until(pilot, lambda: isinstance(app.screen, MonitorScreen), "the monitor")
        screen = app.screen
        await wait_until(pilot, lambda: "before its first step" in screen.chart.render().plain, "the chart to say")
        chart = screen.chart.render().plain
        assert chart.startswith("failed before its first step") and DOOMED in chart
        assert "waiting" not in chart
        assert "failed" in status_lines(screen)[0] and "doomed" not in " ".join(status_lines(screen)), "said once"
        await pilot.pause()
        shown = "\n".join(screen.chart.render_line(y).text for y in range(screen.chart.size.height))
        assert DOOMED in words(shown), "the chart wraps the reason within its box"

        app.current_run = killed.path
        await wait_until(pilot, lambda: screen.chart.render().plain.startswith("killed before its first step"),
                         "the killed run")
        assert "no checkpoint was saved" in screen.chart.render().plain


async def test_every_key_of_a_running_run_fits_the_footer_at_80_columns(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "live")
    fill_run(run, steps=100, max_steps=1000, started=time.time() - 120, state="running")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_on(pilot, run, 100)
        await wait_until(pilot, lambda: screen.check_action("stop_run", ()) and footer_settled(screen), "the footer")
        await pilot.pause()
        keys = {key.key: key.region for key in screen.query(FooterKey) if key.action != "command_palette"}
        palette = next(key.region for key in screen.query(FooterKey) if key.action == "command_palette")
        assert {"o", "c", "l", "w", "s", "q"} <= set(keys), keys
        # Keys further right would be drawn under the palette's key, docked at the right.
        assert all(region.width and region.right <= palette.x for region in keys.values()), (keys, palette)


async def test_elapsed_counts_every_session_and_a_starting_resume_says_so(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "resumed")
    start = time.time() - 5000
    run.create({"model": {"dim": 256}, "train": {"max_steps": 60}})
    # The first process trains steps 10..60 in 100 s; the second starts 1000 s later.
    for step in range(10, 70, 10):
        run.append_metrics(train_row(step, loss=5.0, time=start + 2 * (step - 10)))
    run.append_metrics({"kind": "resume", "step": 60, "checkpoint": "step_0000060", "time": start + 1003})
    for step in (70, 80):
        run.append_metrics(train_row(step, loss=4.0, time=start + 1003 + 2 * (step - 60)))
    status = run.write_status(state="stopped", step=80, max_steps=100, started=start + 1000, pid=4242,
                              host="trainer-01")
    atomic_write_json(run.status_path, {**status, "updated": start + 1030})
    run.log_path.write_text("resumed\n")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_on(pilot, run, 80)
        # 100.5 s of the first process (its first row took step_ms 500) and 30 s of the second.
        assert abs(screen.status_bar.status.elapsed_s - 130.5) < 0.01
        assert "elapsed 2m10s" in screen.status_bar.render().plain

        status = run.write_status(state="starting", started=time.time(), pid=None)
        atomic_write_json(run.status_path, {**status, "max_steps": 80})
        await wait_until(pilot, lambda: screen.status_bar.status.state == "starting", "the resume starting")
        text = screen.status_bar.render().plain
        assert "resuming from step 80" in text
        assert "100%" not in text


async def test_a_tall_wide_screen_shows_more_cards(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "live")
    fill_run(run, steps=300, max_steps=1000, started=time.time() - 200, state="running")
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(200, 50)) as pilot:
        screen = await monitor_on(pilot, run, 300)
        await pilot.pause()
        for name, shown in (("grad", "grad 1"), ("step", "step 500 ms"), ("tokens", "tokens 614k 2.05k/step")):
            card = screen.cards[name]
            assert card.region.height > 0, name
            assert card.value.text.plain.startswith(shown), card.value.text.plain
        assert screen.cards["lr"].spark.region.height >= 2, "taller sparklines where there is room"
        cards_column = screen.query_one("#metric-cards")
        used = max(card.region.bottom for card in screen.cards.values())
        assert cards_column.region.bottom - used <= 3, "the column is filled"
        await pilot.resize_terminal(80, 24)
        await pilot.pause()
        assert screen.cards["grad"].region.height == 0


def test_the_no_run_hint_breaks_lines_only_between_paragraphs():
    for paragraph in NO_RUN_HINT.split("\n\n"):
        assert "\n" not in paragraph


def long_run(root: Path) -> RunDir:
    """A finished run of 3,000 steps that wrote a sample every 100."""
    run = RunDir(root / "out" / "runs" / "long")
    fill_run(run, steps=3000, max_steps=3000, started=time.time() - 9000, state="finished")
    return run


async def thirty_samples(pilot, run: RunDir) -> SampleList:
    screen = await monitor_on(pilot, run, 3000)
    samples = screen.query_one(SampleList)
    await wait_until(pilot, lambda: len(samples.samples) == 30, "thirty samples")
    return samples


async def test_the_samples_panel_reaches_back_past_a_dozen_evaluations(tmp_path):
    run = long_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        samples = await thirty_samples(pilot, run)
        assert [step for step, _ in samples.samples][::29] == [3000, 100]
        await pilot.press("tab", "end")
        await wait_until(pilot, lambda: samples.scroll_y == samples.max_scroll_y > 0, "the oldest sample")
        assert "(100)" in samples.render_line(0).text, "the oldest sample scrolls up to the top"


async def test_a_fine_tuning_runs_samples_show_the_question_before_the_answer(tmp_path):
    run = RunDir(tmp_path / "out" / "runs" / "chat")
    fill_run(run, steps=100, max_steps=100, started=time.time() - 900, state="finished")
    run.append_metrics({"kind": "sample", "step": 100, "prompt": "刘备的两个结义兄弟是谁？", "text": "关羽和张飞。",
                        "chat": True, "time": time.time()})
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await monitor_on(pilot, run, 100)
        samples = screen.query_one(SampleList)
        # The chat sample replaced the one fill_run wrote for the same step.
        await wait_until(pilot, lambda: samples.samples == [(100, "刘备的两个结义兄弟是谁？ → 关羽和张飞。")], "the answer")
        assert "刘备的两个结义兄弟是谁？ → 关羽和张飞。" in samples.render_line(0).text


async def test_ctrl_c_copies_the_sample_at_the_top_of_the_samples_panel(tmp_path):
    run = long_run(tmp_path)
    app = BabyLlamaApp(root=tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await thirty_samples(pilot, run)
        await pilot.press("tab", "ctrl+c")
        assert app.clipboard == "话说天下大势，分久必合 (3000)"
        assert str(list(app._notifications)[-1].message) == "Copied the sample of step 3,000 (18 characters)"
        await pilot.press("down", "down", "ctrl+c")
        assert app.clipboard == "话说天下大势，分久必合 (2800)"
        # The oldest sample, below all others, can be brought to the top too.
        await pilot.press("end", "ctrl+c")
        assert app.clipboard == "话说天下大势，分久必合 (100)"
        assert "quit" not in " ".join(str(n.message) for n in app._notifications)


def test_a_reason_goes_beside_the_other_items_when_it_fits_else_below_them_wrapped():
    short = with_reason([Text("x" * 27)], reason_text("stopped", "stopped on SIGTERM at step 74"), 78, Console())
    assert [line.plain for line in short] == ["x" * 27 + "   stopped on SIGTERM at step 74"]
    lines = [line.plain for line in with_reason([Text("x" * 27)], reason_text("stopped", STOP_REASON), 78, Console())]
    assert lines[0] == "x" * 27 and words(" ".join(lines[1:])) == STOP_REASON
    assert all(len(line) <= 78 for line in lines)
    endless = with_reason([Text("x")], reason_text("failed", "a very long reason " * 40), 78, Console())
    assert len(endless) == 1 + REASON_LINES and endless[-1].plain.endswith("…") and endless[-1].cell_len <= 78
