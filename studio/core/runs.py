"""What the app knows about run folders, without Qt: tailing events.jsonl, the pid file,
a run's status (also when its process died without a word), curves and failure advice.

```
RUN/process.json   {"pid", "create_time", "command", "started"}: written when the app starts
                   the child; "returncode", "ended", "stop_requested" added when it ends
```

A run is *running* while its process is alive (the pid and its creation time match, so a
reused pid does not count). A run whose events stop without a `done` or `error` event and
whose process is gone crashed: it is *failed*, never done.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from studio.core.checkpoint import CKPT_PREFIX, list_checkpoints, read_state

EVENTS_FILE = "events.jsonl"
LOG_FILE = "train.log"
PROCESS_FILE = "process.json"
STOP_FILE = "stop.request"
"""Written by whoever asks a running `studio train` to stop; the run watches for it."""
SET_ASIDE = "checkpoints-set-aside"
STEP_COLUMNS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "elapsed_s", "eta_s")
"""The columns of a block of step events, as the GUI's worker sends them to the plots."""
QUIET_AFTER_S = 600.0
"""A run without a pid file (started by the CLI) whose events.jsonl has not changed for this
long, and that never finished, is taken as crashed."""


# --- tailing files -------------------------------------------------------------------------


class FileTail:
    """Reads what was appended to a file since the last call; a partial last line waits.

    A file that shrank (replaced or truncated) is read again from the start.
    """

    def __init__(self, path: str | Path, start: int = 0):
        self.path = Path(path)
        self.offset = start
        self.partial = b""

    def read_lines(self, limit: int = 8 << 20) -> list[bytes]:
        """Whole new lines (without their newline), at most about `limit` bytes at a time."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return []
        if size < self.offset:
            self.offset, self.partial = 0, b""
        if size == self.offset:
            return []
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            data = f.read(limit)
        self.offset += len(data)
        data = self.partial + data
        lines = data.split(b"\n")
        self.partial = lines.pop()
        return lines

    def read_text(self, limit: int = 1 << 20) -> str:
        """New text up to the last newline (a line still being written waits)."""
        lines = self.read_lines(limit)
        if not lines:
            return ""
        return b"\n".join(lines).decode("utf-8", errors="replace") + "\n"


def parse_lines(lines: list[bytes], chunk: int = 1000) -> list[dict[str, Any]]:
    """JSON objects of events.jsonl lines; torn or foreign lines are skipped.

    Lines are decoded a chunk at a time as one JSON array (2.5 times faster than line by
    line); a chunk holding a bad line is decoded line by line.
    """
    out: list[dict[str, Any]] = []
    for start in range(0, len(lines), chunk):
        part = [x for x in lines[start : start + chunk] if x.strip()]
        try:
            decoded = json.loads(b"[" + b",".join(part) + b"]")
        except ValueError:
            decoded = []
            for line in part:
                try:
                    decoded.append(json.loads(line))
                except ValueError:
                    continue
        out += [ev for ev in decoded if isinstance(ev, dict) and "type" in ev]
    return out


def read_all_events(run_dir: str | Path) -> list[dict[str, Any]]:
    tail = FileTail(Path(run_dir) / EVENTS_FILE)
    events: list[dict[str, Any]] = []
    while batch := tail.read_lines():
        events += parse_lines(batch)
    return events


def log_tail(run_dir: str | Path, lines: int = 30) -> str:
    """The last lines of RUN/train.log."""
    path = Path(run_dir) / LOG_FILE
    try:
        with open(path, "rb") as f:
            f.seek(max(0, path.stat().st_size - 32768))
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    text = text.replace("\r", "\n")
    return "\n".join([x for x in text.splitlines() if x.strip()][-lines:])


# --- the pid file --------------------------------------------------------------------------


def read_process(run_dir: str | Path) -> dict[str, Any]:
    try:
        data = json.loads((Path(run_dir) / PROCESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Write whole or not at all: a reader never sees half a file."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1), encoding="utf-8")
    tmp.replace(path)


def _write_process(run_dir: Path, data: dict[str, Any]) -> None:
    _write_json(run_dir / PROCESS_FILE, data)


def create_time(pid: int) -> float | None:
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except (psutil.Error, OSError):
        return None


def write_process(run_dir: str | Path, pid: int, command: list[str]) -> None:
    data = {"pid": pid, "create_time": create_time(pid), "command": command, "started": time.time()}
    _write_process(Path(run_dir), data)


def record_exit(run_dir: str | Path, returncode: int | None, stop_requested: bool) -> None:
    data = read_process(run_dir)
    data.update(returncode=returncode, ended=time.time(), stop_requested=stop_requested)
    _write_process(Path(run_dir), data)


def pid_alive(pid: int, created: float | None) -> bool:
    """The process with this pid exists, is not a zombie and is the one that was started."""
    import psutil

    try:
        p = psutil.Process(pid)
        if p.status() == psutil.STATUS_ZOMBIE:
            return False
        return created is None or abs(p.create_time() - created) < 1.0
    except (psutil.Error, OSError):
        return False


def process_alive(run_dir: str | Path) -> int | None:
    """The pid of the run's training process when it is still going, else None."""
    info = read_process(run_dir)
    pid = info.get("pid")
    if not pid or "ended" in info:
        return None
    return pid if pid_alive(int(pid), info.get("create_time")) else None


def signal_process(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_signal() -> int:
    return getattr(signal, "SIGTERM", signal.SIGINT)


def request_stop(run_dir: str | Path) -> None:
    """Ask the run's training process to stop after its current step (it saves first).

    A file rather than a signal: on Windows a process started without a console cannot be
    sent a console event, and TerminateProcess would lose the step in progress. The process
    honours only a request made after it started, so a stale file never stops a resumed run.
    """
    _write_json(Path(run_dir) / STOP_FILE, {"at": time.time()})


def stop_requested(run_dir: str | Path, since: float) -> bool:
    """A stop was requested for this run at `since` (a process's start time) or later."""
    try:
        data = json.loads((Path(run_dir) / STOP_FILE).read_text(encoding="utf-8"))
        return float(data["at"]) >= since
    except (OSError, ValueError, KeyError, TypeError):
        return False


def clear_stop(run_dir: str | Path) -> None:
    try:
        (Path(run_dir) / STOP_FILE).unlink()
    except OSError:
        pass


# --- status ---------------------------------------------------------------------------------


@dataclass
class RunState:
    """A run folder's state, from its events in order (see `apply`)."""

    folder: Path
    status: str = "not started"
    """not started, running, completed, stopped or failed."""
    kind: str = ""
    """For failed runs: nan, oom, input, error, killed or crashed."""
    message: str = ""
    started: float = 0.0
    step: int = 0
    total_steps: int = 0
    start_step: int = 0
    steps_per_epoch: int = 0
    final_loss: float | None = None
    eval_loss: float | None = None
    returncode: int | None = None
    pid: int | None = None
    checkpoints: list[int] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def ended(self) -> bool:
        return self.status in ("completed", "stopped", "failed")

    def apply(self, ev: dict[str, Any]) -> None:
        kind = ev.get("type")
        if kind == "start":
            self.status, self.kind, self.message = "running", "", ""
            self.total_steps = int(ev.get("total_steps") or 0)
            self.start_step = int(ev.get("start_step") or 0)
            self.steps_per_epoch = int(ev.get("steps_per_epoch") or 0)
            self.step = self.start_step
            self.started = self.started or float(ev.get("time") or 0)
        elif kind == "step":
            self.step, self.final_loss = int(ev.get("step") or 0), ev.get("loss")
        elif kind == "eval":
            self.eval_loss = ev.get("eval_loss")
        elif kind == "done":
            self.status = ev.get("status") or "completed"
            self.step = int(ev.get("step") or self.step)
            if ev.get("final_loss") is not None:
                self.final_loss = ev["final_loss"]
            if ev.get("eval_loss") is not None:
                self.eval_loss = ev["eval_loss"]
        elif kind == "error":
            self.status, self.kind = "failed", str(ev.get("kind") or "error")
            self.message = str(ev.get("message") or "")


def describe_exit(returncode: int | None) -> tuple[str, str]:
    """(kind, plain words) for a process that ended without a done or error event."""
    if returncode is None:
        return "crashed", "The training process ended without reporting a result."
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        if -returncode == getattr(signal, "SIGKILL", 9):
            return "killed", (
                f"The training process was killed ({name}). On Linux the system does this "
                "when memory runs out (the out-of-memory killer); someone may also have "
                "ended it."
            )
        if -returncode == getattr(signal, "SIGSEGV", 11):
            return "crashed", f"The training process crashed ({name}) inside a native library."
        return "killed", f"The training process was ended by {name}."
    if returncode == 2:  # `studio train` refused its settings or data before training
        return "input", "The run could not start (exit code 2); the log below says why."
    return "crashed", f"The training process ended (exit code {returncode}) without a result."


def finish_state(state: RunState, returncode: int | None, stop_requested: bool) -> RunState:
    """Settle the state of a run whose process has ended."""
    state.returncode = returncode
    if state.ended:
        return state
    if stop_requested:
        state.status, state.kind = "stopped", ""
        state.message = "Stopped before the run saved anything new."
        return state
    state.status = "failed"
    state.kind, state.message = describe_exit(returncode)
    return state


def run_state(run_dir: str | Path, events: list[dict[str, Any]] | None = None) -> RunState:
    """The status of a run folder (events, the pid file and the process table)."""
    state = RunState(folder=Path(run_dir))
    for ev in read_all_events(run_dir) if events is None else events:
        state.apply(ev)
    return settle(state)


def settle(state: RunState) -> RunState:
    """Complete a state built from a run's events with its checkpoints and process."""
    folder = state.folder
    state.checkpoints = checkpoint_steps(folder)
    info = read_process(folder)
    state.started = state.started or float(info.get("started") or 0)
    if not state.started:
        probe = folder / "run.yaml"
        state.started = probe.stat().st_mtime if probe.exists() else 0.0
    if state.ended and state.status != "failed":
        return state
    pid = process_alive(folder)
    if pid is not None:
        state.pid = pid
        state.status = "running"
        return state
    if state.ended:
        state.returncode = info.get("returncode")
        return state
    if info:  # the app started it and it is gone
        return finish_state(state, info.get("returncode"), bool(info.get("stop_requested")))
    if state.status == "running":  # a CLI run: trust a recent events.jsonl
        events_file = folder / EVENTS_FILE
        if time.time() - events_file.stat().st_mtime < QUIET_AFTER_S:
            return state
        return finish_state(state, None, False)
    return state


# --- checkpoints ----------------------------------------------------------------------------


def checkpoint_steps(run_dir: str | Path) -> list[int]:
    steps = []
    for path in list_checkpoints(Path(run_dir) / "checkpoints"):
        try:
            steps.append(int(read_state(path)["step"]))
        except (OSError, ValueError, KeyError):
            steps.append(int(path.name[len(CKPT_PREFIX) :]))
    return steps


def set_aside_after(run_dir: str | Path, step: int) -> list[Path]:
    """Move the checkpoints newer than `step` to RUN/checkpoints-set-aside/ (kept, not
    deleted), so that resuming continues from `step`. Returns their new places."""
    run_dir = Path(run_dir)
    aside = run_dir / SET_ASIDE
    moved = []
    for path in list_checkpoints(run_dir / "checkpoints"):
        if int(read_state(path)["step"]) > step:
            aside.mkdir(exist_ok=True)
            target = aside / path.name
            if target.exists():
                target = aside / f"{path.name}-{int(time.time())}"
            shutil.move(str(path), str(target))
            moved.append(target)
    return moved


# --- history --------------------------------------------------------------------------------


def settings_summary(cfg) -> str:
    """The few settings that tell runs apart, in one short line."""
    t, lora = cfg.train, cfg.lora
    parts = [
        f"r {lora.r}",
        f"lr {t.lr:g}",
        f"batch {t.batch_size}×{t.grad_accum}",
        f"seq {t.seq_len}",
    ]
    parts.append(f"{t.max_steps} steps" if t.max_steps else f"{t.epochs:g} epochs")
    if cfg.model.quant != "none":
        parts.append("QLoRA " + cfg.model.quant)
    if t.gradient_checkpointing:
        parts.append("grad ckpt")
    return " · ".join(parts)


def run_folders(runs_dir: str | Path | None) -> list[Path]:
    runs_dir = Path(runs_dir) if runs_dir else None
    if runs_dir is None or not runs_dir.is_dir():
        return []
    return [p for p in runs_dir.iterdir() if (p / "run.yaml").is_file()]


def last_touched(folder: Path) -> float:
    """When the run last wrote something (events.jsonl, else run.yaml)."""
    for name in (EVENTS_FILE, "run.yaml"):
        try:
            return (folder / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def list_runs(runs_dir: str | Path | None, extra: list[Path] = ()) -> list[tuple[RunState, str]]:
    """(state, settings summary) of every run folder under runs_dir (and extra), newest first."""
    from studio.core.config import RunConfig

    folders = run_folders(runs_dir)
    folders += [Path(p) for p in extra if Path(p) not in folders]
    out = []
    for folder in folders:
        try:
            summary = settings_summary(RunConfig.load(folder / "run.yaml"))
        except Exception as e:  # a hand-edited run.yaml still lists
            summary = f"(run.yaml unreadable: {type(e).__name__})"
        out.append((run_state(folder), summary))
    return sorted(out, key=lambda x: x[0].started, reverse=True)


@dataclass
class Curves:
    """A run's loss curves; a resumed run re-logs steps after its checkpoint, later values
    replace earlier ones."""

    name: str
    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    eval_steps: list[int] = field(default_factory=list)
    eval_losses: list[float] = field(default_factory=list)


def _put(steps: list, values: list, step: int, value: float) -> None:
    while steps and steps[-1] >= step:
        steps.pop()
        values.pop()
    steps.append(step)
    values.append(value)


def read_curves(run_dir: str | Path) -> Curves:
    curves = Curves(Path(run_dir).name)
    for ev in read_all_events(run_dir):
        kind = ev.get("type")
        if kind == "start":  # a resume drops what came after its checkpoint
            s = int(ev.get("start_step") or 0)
            while curves.steps and curves.steps[-1] > s:
                curves.steps.pop()
                curves.losses.pop()
            while curves.eval_steps and curves.eval_steps[-1] > s:
                curves.eval_steps.pop()
                curves.eval_losses.pop()
        elif kind == "step":
            _put(curves.steps, curves.losses, int(ev["step"]), float(ev["loss"]))
        elif kind == "eval":
            _put(curves.eval_steps, curves.eval_losses, int(ev["step"]), float(ev["eval_loss"]))
    return curves


# --- failure advice -------------------------------------------------------------------------

MEMORY_ADVICE = [
    "Use a smaller batch size (raise gradient accumulation to keep the effective batch).",
    "Use QLoRA (4-bit quantization of the base model).",
    "Use shorter sequences (a lower sequence length).",
    "Turn on gradient checkpointing (less memory, about 30% slower).",
]


def failure_advice(state: RunState) -> tuple[str, list[str]]:
    """(headline, what to try) for a failed run."""
    kind = state.kind
    if kind == "oom":
        return "Training ran out of memory", MEMORY_ADVICE
    if kind == "killed":
        return "The training process was killed", MEMORY_ADVICE + [
            "If you ended it yourself, Resume continues from the last checkpoint."
        ]
    if kind == "nan":
        return "The loss became NaN (not a number)", [
            "Lower the learning rate (for example by 3 to 10 times).",
            "Use bfloat16 or float32 instead of float16.",
            "Keep gradient clipping on (max grad norm 1.0).",
        ]
    if kind == "input":
        return "The run could not start", [
            "Fix the setting or file named above, then use Re-run with edited settings."
        ]
    if kind == "crashed":
        return "The training process crashed", [
            "Read the last lines of the log below for the cause.",
            *MEMORY_ADVICE,
        ]
    return "Training failed", [
        "Read the error and the last lines of the log below.",
        "If it mentions memory: " + MEMORY_ADVICE[0][0].lower() + MEMORY_ADVICE[0][1:],
    ]
