"""Run directories (`out/runs/NAME/`): the contract between a training process and whoever watches it.

The trainer writes one through `RunDir`; the app and `babyllama runs` read it through `list_runs`,
`run_info`, `MetricsReader` and `tail_lines`, launch trainers with `launch_detached`, stop them with
`stop_run`, and trash, rename and annotate them with `trash_run`, `rename_run` and `set_note`. The
package re-exports these names from its modules. The files, status fields and liveness rules:
docs/ARCHITECTURE.md, "The run directory".
"""

from babyllama.checkpoint import checkpoint_problem
from babyllama.runs.control import StopReport, kill_run, stop_run, wait_gone
from babyllama.runs.launch import TRAIN_PROGRAM, host_commands, launch_detached, write_host_script
from babyllama.runs.listing import RunInfo, list_runs, resolve_run, run_info, sort_newest_first
from babyllama.runs.liveness import (
    ACTIVE_STATES,
    CREATED,
    ENDED_STATES,
    LAUNCH_ID_ENV,
    STALE_AFTER_S,
    STOP_OVERDUE_S,
    RunState,
    effective_state,
    format_duration,
    process_identity,
    process_memory_mb,
    state_words,
    still_running,
    stop_it_first,
    stop_overdue,
)
from babyllama.runs.manage import (
    note_problem,
    rename_problem,
    rename_run,
    run_name_problem,
    set_note,
    trash_dir,
    trash_run,
)
from babyllama.runs.readers import LineFollower, MetricsReader, counts_in_loss, latest_rows, tail_lines
from babyllama.runs.rundir import ALERT_KINDS, RunDir, alert_words

__all__ = [
    "ACTIVE_STATES",
    "ALERT_KINDS",
    "alert_words",
    "CREATED",
    "ENDED_STATES",
    "LAUNCH_ID_ENV",
    "STALE_AFTER_S",
    "STOP_OVERDUE_S",
    "TRAIN_PROGRAM",
    "LineFollower",
    "MetricsReader",
    "RunDir",
    "RunInfo",
    "RunState",
    "StopReport",
    "checkpoint_problem",
    "counts_in_loss",
    "effective_state",
    "format_duration",
    "kill_run",
    "latest_rows",
    "note_problem",
    "host_commands",
    "launch_detached",
    "list_runs",
    "process_identity",
    "process_memory_mb",
    "rename_problem",
    "rename_run",
    "resolve_run",
    "run_info",
    "run_name_problem",
    "set_note",
    "write_host_script",
    "sort_newest_first",
    "state_words",
    "still_running",
    "stop_it_first",
    "stop_overdue",
    "stop_run",
    "tail_lines",
    "trash_dir",
    "trash_run",
    "wait_gone",
]
