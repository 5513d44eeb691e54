"""Start a training run as a child process: `python -m studio train --config RUN/run.yaml`.

A crash, an out-of-memory error or a segfault in training can never take the window down.
The run folder is the one of DESIGN.md; the child's output goes to RUN/train.log. The Train
page will supervise the process and read RUN/events.jsonl.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, replace
from pathlib import Path

from studio.core.config import RunConfig


def train_command(config_path: str | Path) -> list[str]:
    """The command line that trains from a run.yaml (the same as `studio train --config`)."""
    return [sys.executable, "-m", "studio", "train", "--config", str(config_path)]


@dataclass
class LaunchedRun:
    run_dir: Path
    config_path: Path
    command: list[str]
    process: subprocess.Popen

    @property
    def log_path(self) -> Path:
        return self.run_dir / "train.log"

    def poll(self) -> int | None:
        return self.process.poll()

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the run to stop (it saves its adapter), then kill it after timeout."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
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


def launch_run(cfg: RunConfig, run_dir: str | Path) -> LaunchedRun:
    """Write RUN/run.yaml and start training on it in a child process."""
    config_path = write_run(cfg, run_dir)
    command = train_command(config_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    with open(Path(run_dir) / "train.log", "ab") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=str(run_dir),
            env=env,
        )
    return LaunchedRun(Path(run_dir), config_path, command, process)
