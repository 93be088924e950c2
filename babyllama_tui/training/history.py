"""`MetricsHistory`: a run's metrics rows as compact numpy columns, with the resume rules.

Charts reduce a column first (`envelope`, `bucket_means`). The resume rules:
docs/ARCHITECTURE.md, "metrics.jsonl".
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Sequence

import numpy as np

from babyllama.runs import counts_in_loss

NAN = float("nan")
# Weight of the past in the smoothed loss after EMA_STEPS steps. Smoothing by steps rather than
# rows lets two runs logged every 2 and every 10 steps draw the same curve from the same losses.
EMA_WEIGHT = 0.9
EMA_STEPS = 10
EMA_STEP_DECAY = EMA_WEIGHT ** (1 / EMA_STEPS)
# Train rows remembered for the speed estimate behind ETAs.
RATE_POINTS = 20
# Sample rows kept to show how the model's writing changed: the samples panel scrolls through them.
SAMPLES_KEPT = 50
# Alert rows kept for the Monitor's list and the chart's markers (the newest; `alert_count` counts all).
ALERTS_KEPT = 500
# Benchmark rows kept (one every bench_interval steps per task).
BENCHES_KEPT = 200

TRAIN_SERIES = ("loss", "ema", "lr", "tokens_per_s", "rss_mb", "device_mb", "grad_norm", "step_ms")


class Column:
    """A growable 1-D numpy array: amortised O(1) appends, O(1) truncation."""

    def __init__(self, dtype, capacity: int = 1024):
        self._data = np.empty(capacity, dtype=dtype)
        self.size = 0

    def __len__(self) -> int:
        return self.size

    @property
    def values(self) -> np.ndarray:
        return self._data[: self.size]

    def extend(self, values: Sequence[float]) -> None:
        needed = self.size + len(values)
        if needed > len(self._data):
            grown = np.empty(max(needed, 2 * len(self._data)), dtype=self._data.dtype)
            grown[: self.size] = self._data[: self.size]
            self._data = grown
        self._data[self.size : needed] = values
        self.size = needed

    def truncate(self, size: int) -> None:
        self.size = min(self.size, size)

    def last(self):
        return self._data[self.size - 1].item() if self.size else None


def _number(value) -> float:
    if type(value) is float:
        return value
    if type(value) is int:
        return float(value)
    return NAN


class MetricsHistory:
    """Everything the monitor draws from one run's metrics rows."""

    def __init__(self) -> None:
        self.steps = Column(np.int64)
        self.series = {name: Column(np.float32) for name in TRAIN_SERIES}
        self.val_steps = Column(np.int64)
        self.val_loss = Column(np.float32)
        self.last_train: dict | None = None
        # The newest train row whose loss counts (`counts_in_loss`): a skipped step's loss is neither
        # on the curve nor in the smoothed loss, nor the last loss or bits per byte shown.
        self.last_counted: dict | None = None
        self.last_eval: dict | None = None
        self.samples: deque[dict] = deque(maxlen=SAMPLES_KEPT)
        self.recent: deque[tuple[int, float]] = deque(maxlen=RATE_POINTS)
        # Health events in file order. Kept across a `resume` row: they happened (a rollback's alert
        # comes just before the resume row it causes), even when the steps they were at were redone.
        self.alerts: deque[dict] = deque(maxlen=ALERTS_KEPT)
        self.alert_count = 0
        # The newest `baselines` row: what a model that knows nothing, or only token frequencies, scores.
        self.baselines: dict | None = None
        self.benches: deque[dict] = deque(maxlen=BENCHES_KEPT)
        # Index of the current trainer process's first train row: its speed is compared with its own rows only.
        self.process_start = 0
        # [first, last] time of each trainer process's rows (a `resume` row starts the next one):
        # the run's training time is their sum, not the time since the newest process started.
        self.sessions: list[list[float]] = []
        # Bumped on every change, so a chart redraws only when there is something new.
        self.version = 0

    def clear(self) -> None:
        self.__init__()

    def __len__(self) -> int:
        return len(self.steps)

    def add(self, rows: Iterable[dict]) -> bool:
        """Take rows in file order; returns whether anything changed."""
        changed = False
        segment: list[dict] = []
        for row in rows:
            if row.get("kind") == "resume" and type(row.get("step")) is int:
                changed = self._add_segment(segment) or changed
                segment = []
                changed = self._resume_at(row["step"]) or changed
                if _is_time(row.get("time")):
                    self.sessions.append([row["time"], row["time"]])
            else:
                segment.append(row)
        changed = self._add_segment(segment) or changed
        if changed:
            self.version += 1
        return changed

    def _add_segment(self, rows: list[dict]) -> bool:
        self._note_times(rows)
        train: list[dict] = []
        evals: list[dict] = []
        sampled = False
        for row in rows:
            kind = row.get("kind")
            if kind == "train" and type(row.get("step")) is int:
                train.append(row)
            elif kind == "eval" and type(row.get("step")) is int:
                evals.append(row)
            elif kind == "sample" and isinstance(row.get("text"), str) and type(row.get("step")) is int:
                self._add_sample(row)
                sampled = True
            elif kind == "alert" and type(row.get("step")) is int:
                self.alerts.append(row)
                self.alert_count += 1
                sampled = True
            elif kind == "baselines":
                self.baselines = row
                sampled = True
            elif kind == "bench" and type(row.get("step")) is int and _is_time(row.get("accuracy")):
                self._add_bench(row)
                sampled = True
        for piece in _increasing_runs(train):
            self._add_train(piece)
        for piece in _increasing_runs(evals):
            self._add_eval(piece)
        return bool(train or evals) or sampled

    def _note_times(self, rows: list[dict]) -> None:
        """Stretch the newest session to the last row's time (the first row opens the first session)."""
        last = next((row["time"] for row in reversed(rows) if _is_time(row.get("time"))), None)
        if last is None:
            return
        if not self.sessions:
            first = next(row for row in rows if _is_time(row.get("time")))
            self.sessions.append([_row_start(first), last])
        self.sessions[-1][1] = max(self.sessions[-1][1], last)

    def seconds_before(self, started: float) -> float:
        """Training time of the processes whose rows began before `started` (the newest process's start)."""
        return sum(max(0.0, min(last, started) - first) for first, last in self.sessions if first < started)

    def _resume_at(self, step: int) -> bool:
        """A `resume` row: the run continues from the checkpoint at `step`; rows after it were lost with
        the process that wrote them."""
        before = (len(self.steps), len(self.val_steps), len(self.samples))
        self._truncate_train(int(np.searchsorted(self.steps.values, step, side="right")))
        kept = int(np.searchsorted(self.val_steps.values, step, side="right"))
        self.val_steps.truncate(kept)
        self.val_loss.truncate(kept)
        while self.samples and self.samples[-1]["step"] > step:
            self.samples.pop()
        while self.benches and self.benches[-1]["step"] > step:
            self.benches.pop()
        self.last_train = _row_at(self.last_train, step)
        self.last_counted = _row_at(self.last_counted, step)
        self.last_eval = _row_at(self.last_eval, step)
        self.process_start = len(self.steps)
        return (len(self.steps), len(self.val_steps), len(self.samples)) != before

    def _add_bench(self, row: dict) -> None:
        """A benchmark score; one logged again (by a process resumed after a hard kill) replaces the old."""
        while self.benches and (self.benches[-1]["step"] > row["step"] or (
                self.benches[-1]["step"] == row["step"] and self.benches[-1].get("task") == row.get("task"))):
            self.benches.pop()
        self.benches.append(row)

    @property
    def last_bench(self) -> dict | None:
        return self.benches[-1] if self.benches else None

    def process_speeds(self) -> np.ndarray:
        """tokens/s of the current trainer process's train rows, oldest first (NaN where a row had none)."""
        return self.series["tokens_per_s"].values[self.process_start:]

    def _add_sample(self, row: dict) -> None:
        while self.samples and self.samples[-1]["step"] >= row["step"]:
            self.samples.pop()
        self.samples.append(row)

    def _add_train(self, rows: list[dict]) -> None:
        first = rows[0]["step"]
        if self.steps.size and first <= self.steps.last():
            self._truncate_train(int(np.searchsorted(self.steps.values, first)))
            self.last_counted = _row_at(self.last_counted, first - 1)
        steps = [row["step"] for row in rows]
        losses = [_number(row.get("loss")) if counts_in_loss(row) else NAN for row in rows]
        memories = [row.get("mem") if isinstance(row.get("mem"), dict) else {} for row in rows]
        self.series["ema"].extend(self._smooth(steps, losses))
        self.steps.extend(steps)
        self.series["loss"].extend(losses)
        self.series["lr"].extend([_number(row.get("lr")) for row in rows])
        self.series["tokens_per_s"].extend([_number(row.get("tokens_per_s")) for row in rows])
        self.series["rss_mb"].extend([_number(mem.get("rss_mb")) for mem in memories])
        self.series["device_mb"].extend([_number(mem.get("device_alloc_mb")) for mem in memories])
        self.series["grad_norm"].extend([_number(row.get("grad_norm")) for row in rows])
        self.series["step_ms"].extend([_number(row.get("step_ms")) for row in rows])
        self.recent.extend((row["step"], row["time"]) for row in rows[-RATE_POINTS:] if _is_time(row.get("time")))
        self.last_train = rows[-1]
        self.last_counted = next((row for row in reversed(rows) if counts_in_loss(row)), self.last_counted)

    def _smooth(self, steps: list[int], losses: list[float]) -> list[float]:
        """The smoothed loss at each row: a mean of the loss over the steps so far, in which a step
        k steps ago weighs EMA_STEP_DECAY ** k. Between two rows the loss is taken to move in a
        straight line (a row holds one step's loss), so the rows' interval hardly matters.

        Dividing by the total weight (1 - decay ** step) keeps the start from lagging behind: the
        first row's loss is taken as it is, whatever step it was logged at. A row without a loss (a
        skipped step, NaN) keeps the smoothed loss as it was, and the next loss moves it as if that
        row had not been logged."""
        smoothed = []
        current = _finite_or_none(self.series["ema"].last())
        previous_step, previous_loss = self._last_loss()
        at = np.asarray(steps, dtype=np.float64)
        counted_at = np.where(np.isfinite(np.asarray(losses, dtype=np.float64)), at, -np.inf)
        # Each row's distance from the row with a loss before it.
        gaps = at - np.maximum.accumulate(np.concatenate(([previous_step], counted_at[:-1])))
        with np.errstate(divide="ignore", invalid="ignore"):
            shares = np.where(at > 0, (1 - EMA_STEP_DECAY**gaps) / (1 - EMA_STEP_DECAY**at), 1.0)
        for share, loss in zip(shares.tolist(), losses):
            if math.isfinite(loss):
                if current is None:
                    current = loss
                else:
                    between = loss if previous_loss is None else (previous_loss + loss) / 2
                    current += share * (between - current)
                previous_loss = loss
            smoothed.append(NAN if current is None else current)
        return smoothed

    def _last_loss(self) -> tuple[float, float | None]:
        """(step, loss) of the newest row with a loss; (0, None) before one."""
        losses = self.series["loss"].values
        i = len(losses) - 1
        while i >= 0 and not math.isfinite(losses[i]):
            i -= 1
        return (float(self.steps.values[i]), float(losses[i])) if i >= 0 else (0.0, None)

    def _truncate_train(self, size: int) -> None:
        self.steps.truncate(size)
        self.process_start = min(self.process_start, size)
        for column in self.series.values():
            column.truncate(size)
        # The rate of the attempt that died says nothing about the resumed one.
        self.recent.clear()

    def _add_eval(self, rows: list[dict]) -> None:
        first = rows[0]["step"]
        if self.val_steps.size and first <= self.val_steps.last():
            size = int(np.searchsorted(self.val_steps.values, first))
            self.val_steps.truncate(size)
            self.val_loss.truncate(size)
        self.val_steps.extend([row["step"] for row in rows])
        self.val_loss.extend([_number(row.get("val_loss")) for row in rows])
        self.last_eval = rows[-1]

    def start_index(self, last_steps: int | None) -> int:
        """Index of the first train row within the last `last_steps` steps (0 for all)."""
        if last_steps is None or not self.steps.size:
            return 0
        return int(np.searchsorted(self.steps.values, self.steps.last() - last_steps, side="right"))


def _row_at(row: dict | None, step: int) -> dict | None:
    """`row` if it is at or before `step`, else None (it was logged by a process whose work was lost)."""
    return row if row is not None and row["step"] <= step else None


def _row_start(row: dict) -> float:
    """When the work a row reports began: its time less the milliseconds it says that work took."""
    took = next((row[key] for key in ("step_ms", "eval_ms", "sample_ms") if _is_time(row.get(key))), 0.0)
    return row["time"] - took / 1000


def _finite_or_none(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _is_time(value) -> bool:
    return type(value) in (int, float)


def _increasing_runs(rows: list[dict]) -> Iterable[list[dict]]:
    """Split rows where the step stops increasing: each piece starts a (re)logged stretch."""
    start = 0
    for i in range(1, len(rows)):
        if rows[i]["step"] <= rows[i - 1]["step"]:
            yield rows[start:i]
            start = i
    if rows:
        yield rows[start:]


# Reducing a series to what a chart can show


def _bucket_edges(n: int, buckets: int) -> np.ndarray:
    return np.unique(np.linspace(0, n, min(buckets, n) + 1).astype(np.int64))


def _finite(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = np.isfinite(y)
    return x[keep], y[keep]


def envelope(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each bucket's minimum and maximum, in the order they occur: a line through these
    points covers the same cells as a line through every point."""
    x, y = _finite(x, y)
    if len(y) <= 2 * buckets:
        return x.astype(np.float64), y.astype(np.float64)
    edges = _bucket_edges(len(y), buckets)
    bounds = list(zip(edges[:-1].tolist(), edges[1:].tolist()))
    lows = np.array([start + int(np.argmin(y[start:end])) for start, end in bounds])
    highs = np.array([start + int(np.argmax(y[start:end])) for start, end in bounds])
    order = np.empty(2 * len(bounds), dtype=np.int64)
    order[0::2] = np.minimum(lows, highs)
    order[1::2] = np.maximum(lows, highs)
    return x[order].astype(np.float64), y[order].astype(np.float64)


def bucket_means(x: np.ndarray, y: np.ndarray, buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Each bucket's mean at its mean position: for smooth curves and sparklines."""
    x, y = _finite(x, y)
    if len(y) <= buckets:
        return x.astype(np.float64), y.astype(np.float64)
    edges = _bucket_edges(len(y), buckets)
    counts = np.diff(edges)
    xs = np.add.reduceat(x.astype(np.float64), edges[:-1]) / counts
    ys = np.add.reduceat(y.astype(np.float64), edges[:-1]) / counts
    return xs, ys
