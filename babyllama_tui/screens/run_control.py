"""Stop, kill and resume a run from any screen: ask first, then call babyllama.runs.

Stopping waits (in a worker thread) until the trainer has saved its checkpoint and exited,
so the app can say "stopped" and, if the trainer died before it could record that, record
it; the screen stays responsive meanwhile.
"""

from __future__ import annotations

from pathlib import Path

from textual.screen import Screen

from babyllama.errors import UserError
from babyllama.runs import ACTIVE_STATES, RunDir, kill_run, launch_detached, stop_run
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.resume import ResumeChoice, ResumeScreen, proposed_max_steps

STOP_TIMEOUT_S = 600.0


def request_stop(screen: Screen, path: Path) -> None:
    name = path.name

    def answered(yes: bool | None) -> None:
        if yes:
            screen.notify(f"stopping {name}: it saves a checkpoint first", timeout=4)
            screen.run_worker(lambda: _stop(screen, path), thread=True, group=f"stop-{name}", exit_on_error=False)

    screen.app.push_screen(
        ConfirmScreen(f"Stop {name}?", "The trainer finishes its step, saves a checkpoint and exits; "
                      "resume it later with r on the Train screen.", "Stop"),
        answered,
    )


def _stop(screen: Screen, path: Path) -> None:
    try:
        report = stop_run(path, wait=True, timeout=STOP_TIMEOUT_S)
    except UserError as e:
        screen.app.call_from_thread(screen.notify, str(e), severity="error")
        return
    severity = "warning" if report.state in ACTIVE_STATES else "information"
    screen.app.call_from_thread(screen.notify, report.message, severity=severity)


def request_kill(screen: Screen, path: Path) -> None:
    name = path.name

    def answered(yes: bool | None) -> None:
        if yes:
            screen.run_worker(lambda: _kill(screen, path), thread=True, group=f"kill-{name}", exit_on_error=False)

    screen.app.push_screen(
        ConfirmScreen(f"Kill {name}?", "SIGKILL ends it now, without a checkpoint: the steps since the last "
                      "checkpoint are lost. Use it only when stop does not work.", "Kill"),
        answered,
    )


def _kill(screen: Screen, path: Path) -> None:
    try:
        report = kill_run(path)
    except UserError as e:
        screen.app.call_from_thread(screen.notify, str(e), severity="error")
        return
    screen.app.call_from_thread(screen.notify, report.message, severity="warning")


def request_resume(screen: Screen, path: Path) -> None:
    run = RunDir(path)
    app = screen.app
    try:
        status = run.read_status()
        state = run.state().state
    except UserError as e:
        screen.notify(str(e), severity="error")
        return
    if state in ACTIVE_STATES:
        screen.notify(f"{run.name} is {state}; stop it before resuming.", severity="warning")
        return
    latest = run.latest_checkpoint()
    if latest is None:
        screen.notify(f"{run.name} has no checkpoint to resume from; start a new run instead.", severity="error")
        return
    max_steps = status.get("max_steps") if isinstance(status.get("max_steps"), int) else None
    workers = status.get("world_size") if isinstance(status.get("world_size"), int) else 1

    def chosen(choice: ResumeChoice | None) -> None:
        if choice is None:
            return
        # Here, not at the top: planning brings numpy, which the app does not load to start.
        from babyllama.planning import train_arguments

        changed = {"max_steps": choice.max_steps} if choice.max_steps != max_steps else {}
        args = train_arguments(resume=True, fields=changed)
        try:
            launch_detached(run, args, workers=choice.workers, program=app.train_program, cwd=app.root)
        except UserError as e:
            screen.notify(str(e), severity="error")
            return
        screen.notify(f"resumed {run.name} from step {latest.step:,}")
        app.monitor_run(run.path)

    app.push_screen(ResumeScreen(run.name, latest.step, proposed_max_steps(latest.step, max_steps), workers), chosen)
