"""The worker thread that supervises one training run and turns its files into Qt signals.

It tails RUN/events.jsonl (whole lines only: a line still being written waits for its
newline) and RUN/train.log, where the child's stdout and stderr go, and watches the process.
Step events travel as numpy blocks so that replaying 100,000 of them costs the GUI thread
little. When the process ends it settles the run's status: a process that died without a
`done` or `error` event (killed, segfault) is *failed*, never done. Stop is graceful (SIGTERM:
the child saves a checkpoint and its adapter, then exits 130) and becomes a kill after a
timeout. Worker code never touches widgets.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import QThread, Signal

from studio.core import runs
from studio.core.runs import STEP_COLUMNS

LOG_REPLAY_BYTES = 64 * 1024
"""How much of an existing train.log the console starts with."""
METRIC_COLUMNS = (
    "rewards/margins", "rewards/accuracies", "rewards/chosen", "rewards/rejected", "kl", "ce",
)  # fmt: skip
"""The figures of a training mode that the Train page draws (a Step's or an Eval's metrics):
preference runs' rewards, distillation's KL to the teacher and cross-entropy."""


@dataclass
class MetricRows:
    """A block of steps' mode figures: rows of (step, *METRIC_COLUMNS), NaN where absent."""

    rows: object  # numpy array


def metric_rows(events: list[dict]) -> MetricRows | None:
    """The steps' METRIC_COLUMNS figures, or None when they carry none (an SFT run)."""
    import numpy as np

    if not any(k in (ev.get("metrics") or {}) for ev in events for k in METRIC_COLUMNS):
        return None
    rows = np.full((len(events), 1 + len(METRIC_COLUMNS)), np.nan)
    for i, ev in enumerate(events):
        metrics = ev.get("metrics") or {}
        rows[i, 0] = float(ev.get("step") or 0)
        for j, key in enumerate(METRIC_COLUMNS, start=1):
            value = metrics.get(key)
            if isinstance(value, int | float):
                rows[i, j] = value
    return MetricRows(rows)


def step_block(events: list[dict]):
    """Step events as numpy rows of STEP_COLUMNS."""
    import numpy as np

    rows = np.empty((len(events), len(STEP_COLUMNS)))
    for i, ev in enumerate(events):
        rows[i] = [float(ev.get(k) or 0.0) for k in STEP_COLUMNS]
    return rows


def group_events(events: list[dict]) -> list:
    """Runs of consecutive step events become one numpy block (followed by their MetricRows
    when they carry a mode's figures); other events stay dicts."""
    out: list = []
    steps: list[dict] = []
    for ev in events:
        if ev.get("type") == "step":
            steps.append(ev)
            continue
        if steps:
            _add_steps(out, steps)
            steps = []
        out.append(ev)
    if steps:
        _add_steps(out, steps)
    return out


def _add_steps(out: list, steps: list[dict]) -> None:
    out.append(step_block(steps))
    metrics = metric_rows(steps)
    if metrics is not None:
        out.append(metrics)


class RunWorker(QThread):
    """Follows a run folder: its events (replayed from the start), its log and its process.

    `run` is a run_launcher.LaunchedRun to supervise, or None for a run with no process
    known here: the worker replays it and ends, or keeps following it while its events go on
    (a run started by `studio train` in a terminal).
    """

    events_read = Signal(object)
    """A list of event dicts, step blocks (numpy rows of STEP_COLUMNS) and their MetricRows,
    in order."""
    caught_up = Signal()
    """Emitted once, when the events already in the file have all been read (the replay)."""
    log_read = Signal(str)
    ended = Signal(object)
    """The run's final runs.RunState (not emitted after `detach`)."""

    def __init__(self, run_dir: Path, run=None, *, stop_timeout: float = 120.0, poll_s=0.1):
        super().__init__()
        self.run_dir = Path(run_dir)
        self.launched = run
        self.stop_timeout = stop_timeout
        self.poll_s = poll_s
        self.state = runs.RunState(folder=self.run_dir)
        self._wake = threading.Event()
        self._detach = threading.Event()
        self._stop_at: float | None = None
        self._kill_at: float | None = None
        self._lock = threading.Lock()
        self.stop_requested = False
        self.killed = False
        self._pending: list = []
        self._pending_since = 0.0

    # --- called from the GUI thread ------------------------------------------------------------

    def request_stop(self) -> None:
        """Graceful stop: SIGTERM now, SIGKILL after stop_timeout."""
        with self._lock:
            if self._stop_at is None:
                self._stop_at = time.monotonic()
            self.stop_requested = True
        self._wake.set()

    def force_stop(self) -> None:
        with self._lock:
            self.stop_requested = True
            self._kill_at = time.monotonic()
        self._wake.set()

    def detach(self) -> None:
        """Stop watching and leave the process running (the window is closing)."""
        self._detach.set()
        self._wake.set()

    # --- the thread ---------------------------------------------------------------------------

    def run(self) -> None:
        try:
            self._follow()
        except Exception as e:  # never leave the page waiting for an end that never comes
            self.state.status, self.state.kind = "failed", "error"
            self.state.message = f"The app lost track of the run: {type(e).__name__}: {e}"
            self.ended.emit(self.state)

    def _follow(self) -> None:
        self._started_here = "pid" in runs.read_process(self.run_dir)
        events = runs.FileTail(self.run_dir / runs.EVENTS_FILE)
        log_path = self.run_dir / runs.LOG_FILE
        log_size = log_path.stat().st_size if log_path.exists() else 0
        log = runs.FileTail(log_path, start=max(0, log_size - LOG_REPLAY_BYTES))
        if log.offset:
            log.read_lines(LOG_REPLAY_BYTES)  # skip to the first whole line
        caught_up = False
        while True:
            # Checked before reading, so that what a process wrote just before its end is read.
            alive = self.launched.alive() if self.launched is not None else None
            self._signal_if_asked()
            backlog = self._read(events, log)
            if self._detach.is_set():
                return
            if alive is None:
                alive = self._going_elsewhere()
            if not alive:
                while self._read(events, log):  # what the process wrote last, or a replay
                    time.sleep(0.002)
                break
            if backlog:
                # A replay: let the GUI thread have the GIL between chunks.
                time.sleep(0.002)
                continue
            if not caught_up:
                caught_up = True
                self.caught_up.emit()
            self._wake.wait(self.poll_s)
            self._wake.clear()
        self.ended.emit(self._settle())

    def _going_elsewhere(self) -> bool:
        """A run with no process known here (started by the CLI) is followed while its
        events say it goes on and events.jsonl keeps changing."""
        if self.state.status != "running" or self._started_here:
            return False
        return time.time() - runs.last_touched(self.run_dir) < runs.QUIET_AFTER_S

    def _read(self, events: runs.FileTail, log: runs.FileTail) -> bool:
        """Emit what was appended; True when there may be more to read right away."""
        lines = events.read_lines(1 << 20)
        parsed = runs.parse_lines(lines)
        for ev in parsed:
            self.state.apply(ev)
        if parsed:
            if not self._pending:
                self._pending_since = time.monotonic()
            self._pending += group_events(parsed)
        more = len(lines) > 0 and events.offset < _size(events.path)
        # A long replay goes to the GUI in one piece (or one every 2 s): handling many pieces
        # there while this thread parses would make the two threads fight over the GIL.
        if self._pending and (not more or time.monotonic() - self._pending_since > 2.0):
            self.events_read.emit(self._pending)
            self._pending = []
        text = log.read_text(1 << 20)
        if text:
            self.log_read.emit(text.replace("\r", "\n"))
        return more

    def _signal_if_asked(self) -> None:
        if self.launched is None:
            return
        now = time.monotonic()
        with self._lock:
            stop_at, kill_at = self._stop_at, self._kill_at
            if stop_at is not None:
                self._stop_at = -1.0  # sent
                if self._kill_at is None:
                    self._kill_at = now + self.stop_timeout
        if stop_at is not None and stop_at >= 0:
            self.launched.terminate()
        if kill_at is not None and now >= kill_at and self.launched.alive():
            self.killed = True
            self.launched.kill()

    def _settle(self) -> runs.RunState:
        state = self.state
        state.checkpoints = runs.checkpoint_steps(self.run_dir)
        if self.launched is None:  # a replay: the files say it all
            return runs.settle(state)
        code = self.launched.poll()
        if self.launched.process is not None:
            code = self.launched.process.wait()
        runs.record_exit(self.run_dir, code, self.stop_requested)
        runs.finish_state(state, code, self.stop_requested)
        if self.killed and state.status == "stopped":
            state.message = (
                "The run did not stop within the time allowed and was ended; the last "
                "checkpoint is kept."
            )
        return state


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0
