"""Run directories: the contract between a training process and whoever watches it.

A run directory (`out/runs/<name>/`, see docs/ARCHITECTURE.md) holds `config.json`, `status.json`,
`metrics.jsonl`, `train.log` and `checkpoints/`. The trainer writes it through `RunDir`;
the app and `babyllama runs` read it through `list_runs`, `run_info`, `MetricsReader` and
`tail_lines`, launch trainers with `launch_detached` and stop them with `stop_run`.

Process liveness. A run whose status says starting/running/stopping may have died without
saying so (SIGKILL, OOM killer, power loss). On the host that wrote the status we check the
recorded pid and its creation time (a pid can be reused by an unrelated process). A run on
another host (a shared folder, msrun on another node) cannot be checked by pid, so it is
judged by its `updated` time: a live trainer refreshes it every `HEARTBEAT_S` seconds
(`RunDir.heartbeat`), and a run silent for longer than `STALE_AFTER_S` is shown as failed.
Compile and checkpoint pauses on big models are the reason the threshold is minutes, not
seconds; clocks of the two hosts are assumed to agree to well within it.

status.json fields: state, pid and pid_create_time (the trainer, or the launcher until the
trainer claims the run with `RunDir.mark_running`), host, world_size, step, max_steps,
started and updated (epoch seconds), error (the last error, or a note on how the run
ended), stop_requested (epoch seconds, written by the trainer's stop guard at the first stop
signal), and for detached launches launcher ("python" or "msrun"), launcher_pid,
launcher_create_time, launch_id and command. Writers merge fields (`RunDir.write_status`).

A trainer's part: `mark_running(step=, max_steps=, world_size=)` once started, inside
`with run.heartbeat():`; `write_status(step=)` as it goes; `append_metrics(row)`; on SIGTERM
`write_status(state="stopping")`, a checkpoint, then `write_status(state="stopped")`; at the
end "finished"; on a crash `write_status(state="failed", error=...)`. Checkpoints go to
`checkpoint_temp_path(step)`, then `publish_checkpoint(temp, step)` and
`prune_checkpoints(keep)`. Under msrun only rank 0 does any of this. `checkpoint_problem`
says what makes a published checkpoint folder incomplete (a file missing, cut short or
unreadable); the listing reports an incomplete latest one with what to do about it.

`babyllama runs` is the CLI over the same functions.
"""

from babyllama.checkpoint import checkpoint_problem
from babyllama.runs.control import kill_run, stop_run, wait_gone
from babyllama.runs.launch import TRAIN_PROGRAM, launch_detached
from babyllama.runs.listing import RunInfo, list_runs, resolve_run, run_info
from babyllama.runs.liveness import (
    ACTIVE_STATES,
    CREATED,
    ENDED_STATES,
    LAUNCH_ID_ENV,
    STALE_AFTER_S,
    RunState,
    effective_state,
    format_duration,
    process_identity,
    still_running,
    stop_it_first,
)
from babyllama.runs.readers import LineFollower, MetricsReader, latest_rows, tail_lines
from babyllama.runs.rundir import RunDir

__all__ = [
    "ACTIVE_STATES",
    "CREATED",
    "ENDED_STATES",
    "LAUNCH_ID_ENV",
    "STALE_AFTER_S",
    "TRAIN_PROGRAM",
    "LineFollower",
    "MetricsReader",
    "RunDir",
    "RunInfo",
    "RunState",
    "checkpoint_problem",
    "effective_state",
    "format_duration",
    "kill_run",
    "latest_rows",
    "launch_detached",
    "list_runs",
    "process_identity",
    "resolve_run",
    "run_info",
    "still_running",
    "stop_it_first",
    "stop_run",
    "tail_lines",
    "wait_gone",
]
