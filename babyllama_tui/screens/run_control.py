"""Stop, kill and resume a run from any screen: ask first, then call babyllama.runs.

Stopping waits (in a worker thread) until the trainer has saved its checkpoint and exited,
so the app can say "stopped" and, if the trainer died before it could record that, record
it; the screen stays responsive meanwhile.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.screen import Screen

from babyllama.errors import UserError
from babyllama.runs import ACTIVE_STATES, RunDir, StopReport, kill_run, launch_detached, stop_run
from babyllama_tui.screens.confirm import ConfirmScreen
from babyllama_tui.screens.resume import ResumeChoice, ResumeScreen, proposed_max_steps

STOP_TIMEOUT_S = 600.0
# The states a stop is offered in: a second SIGTERM to a run already stopping would end it at once,
# without its checkpoint, so a stopping run is offered a kill instead.
STOPPABLE_STATES = ("starting", "running")


def request_stop(screen: Screen, path: Path) -> None:
    question = ConfirmScreen(f"Stop {path.name}?", "The trainer finishes its step, saves a checkpoint and exits; "
                             "resume it later with r on the Train screen.", "Stop")
    _ask_then(screen, path, "stop", question, lambda: stop_run(path, wait=True, timeout=STOP_TIMEOUT_S),
              ended="information", started=f"stopping {path.name}: it saves a checkpoint first")


def request_kill(screen: Screen, path: Path) -> None:
    question = ConfirmScreen(f"Kill {path.name}?", "SIGKILL ends it now, without a checkpoint: the steps since the "
                             "last checkpoint are lost. Use it only when stop does not work.", "Kill")
    _ask_then(screen, path, "kill", question, lambda: kill_run(path), ended="warning")


def _ask_then(screen: Screen, path: Path, action: str, question: ConfirmScreen, act: Callable[[], StopReport],
              ended: str, started: str | None = None) -> None:
    """Ask `question`; on yes run `act` in a worker thread and notify its report, `ended` the
    severity when the run is no longer active."""

    def report() -> None:
        try:
            outcome = act()
        except UserError as e:
            screen.app.call_from_thread(screen.notify, str(e), severity="error")
            return
        except OSError as e:
            # The signal may have gone out; what could not be recorded is said, with the file.
            said = f"{action} {path.name}: could not write {e.filename or 'the run folder'}: {e.strerror or e}"
            screen.app.call_from_thread(screen.notify, said, severity="error")
            return
        severity = "warning" if outcome.state in ACTIVE_STATES else ended
        screen.app.call_from_thread(screen.notify, outcome.message, severity=severity)

    def answered(yes: bool | None) -> None:
        if yes:
            if started:
                screen.notify(started, timeout=4)
            screen.run_worker(report, thread=True, group=f"{action}-{path.name}", exit_on_error=False)

    screen.app.push_screen(question, answered)


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
