"""Start a training run as a child process: `python -m studio train --config RUN/run.yaml`
(or `--resume --output RUN` to continue one from its last checkpoint).

A crash, an out-of-memory error or a segfault in training can never take the window down.
The run folder is the one of DESIGN.md; the child's output goes to RUN/train.log and its pid
to RUN/process.json, so the app can re-attach to it after a restart. The child runs in its own
session: closing the window (or Ctrl+C in the terminal that started the app) does not end it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from studio.core import runs
from studio.core.config import RunConfig


def train_command(config_path: str | Path) -> list[str]:
    """The command line that trains from a run.yaml (the same as `studio train --config`)."""
    return [sys.executable, "-m", "studio", "train", "--config", str(config_path)]


def resume_command(run_dir: str | Path) -> list[str]:
    """The command line that continues a run from its last checkpoint."""
    return [sys.executable, "-m", "studio", "train", "--resume", "--output", str(run_dir)]


STOP_BY_FILE = os.name == "nt"
"""How a stop is asked for: the run's stop file on Windows, SIGTERM elsewhere."""


@dataclass
class LaunchedRun:
    run_dir: Path
    config_path: Path
    command: list[str]
    process: subprocess.Popen | None
    """None for a run found still going after a restart (then only `pid` is known)."""
    pid: int = 0

    def __post_init__(self):
        if self.process is not None:
            self.pid = self.process.pid

    @property
    def log_path(self) -> Path:
        return self.run_dir / runs.LOG_FILE

    def poll(self) -> int | None:
        """The exit code once the process ended (None while it runs, or when unknown)."""
        if self.process is not None:
            return self.process.poll()
        return None

    def alive(self) -> bool:
        if self.process is not None:
            return self.process.poll() is None
        info = runs.read_process(self.run_dir)
        return runs.pid_alive(self.pid, info.get("create_time"))

    def terminate(self) -> None:
        """Ask the run to stop: it saves a checkpoint and its adapter, then exits (130).

        POSIX: SIGTERM. Windows: the run's stop file (a child started without a console
        cannot get a console event, and TerminateProcess would not let it save).
        """
        if self.alive():
            if STOP_BY_FILE:
                runs.request_stop(self.run_dir)
            else:
                runs.signal_process(self.pid, runs.stop_signal())

    def kill(self) -> None:
        if self.alive():
            runs.signal_process(self.pid, getattr(signal, "SIGKILL", 9))

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the run to stop, then kill it after timeout (blocks: not for the GUI thread)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def write_run(cfg: RunConfig, run_dir: str | Path) -> Path:
    """Create the run folder and its run.yaml (output set to the folder); return run.yaml."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=False)
    config_path = run_dir / "run.yaml"
    replace(cfg, output=str(run_dir)).save(config_path)
    return config_path


def _start(command: list[str], run_dir: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if os.name == "posix":
        extra = {"start_new_session": True}
    else:  # no console window for the child; stopping goes through the stop file
        extra = {"creationflags": getattr(subprocess, "CREATE_NO_WINDOW", 0)}
    runs.clear_stop(run_dir)  # a request left from an earlier process is not for this one
    with open(run_dir / runs.LOG_FILE, "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(run_dir),
            env=env,
            **extra,
        )
    runs.write_process(run_dir, process.pid, command)
    return process


def launch_run(cfg: RunConfig, run_dir: str | Path) -> LaunchedRun:
    """Write RUN/run.yaml and start training on it in a child process."""
    config_path = write_run(cfg, run_dir)
    command = train_command(config_path)
    process = _start(command, Path(run_dir))
    return LaunchedRun(Path(run_dir), config_path, command, process)


def resume_run(run_dir: str | Path) -> LaunchedRun:
    """Continue a run from its latest kept checkpoint, in a child process."""
    run_dir = Path(run_dir)
    events = run_dir / runs.EVENTS_FILE
    # A kill mid-write can leave a torn last line; start the resumed run's events on a new one.
    if events.exists() and events.stat().st_size:
        with open(events, "rb+") as f:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                f.write(b"\n")
    with open(run_dir / runs.LOG_FILE, "ab") as log:
        log.write(b"\n--- resuming ---\n")
    command = resume_command(run_dir)
    process = _start(command, run_dir)
    return LaunchedRun(run_dir, run_dir / "run.yaml", command, process)


def attach_run(run_dir: str | Path) -> LaunchedRun | None:
    """The run's training process if it is still going (after the app was restarted)."""
    run_dir = Path(run_dir)
    pid = runs.process_alive(run_dir)
    if pid is None:
        return None
    command = runs.read_process(run_dir).get("command") or []
    return LaunchedRun(run_dir, run_dir / "run.yaml", list(command), None, pid=pid)
