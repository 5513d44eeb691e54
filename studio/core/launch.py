"""`studio train` with several processes: torchrun runs the ranks, this process watches them.

The resolved run.yaml is written first, then `python -m torch.distributed.run --standalone
--nproc_per_node N -m studio train --config RUN/run.yaml` starts the ranks (each a plain
`studio train` that sees WORLD_SIZE and trains its share; rank 0 writes the run folder).
This process is what the app and the terminal talk to: a first Ctrl-C or SIGTERM asks the
ranks to stop after the current step (RUN/stop.request, seen by every rank), a second one
ends them. When a rank fails, torchrun stops the others; this process then says which rank
failed and why in events.jsonl, and that the last checkpoint can be resumed.
"""

from __future__ import annotations

import collections
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

RANK_DIR = ".ranks"
"""RUN/.ranks/rank-N.json: a rank's own account of why it failed (written by the rank):
{"message": ..., "kind": "input" for bad input (every rank finds the same), else "error"}."""


def gpu_count() -> int:
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install counts as no GPU
        return 0


def check_gpus(wanted: int, have: int, flag: str = "--gpus") -> None:
    """`--gpus N` on a machine with fewer: one line, exit 2, and the count that would work."""
    from studio.core.errors import ConfigError

    if wanted <= have:
        return
    if have == 0:
        hint = f"leave out {flag} to train on the CPU (or --nproc 2 for two CPU processes)"
    elif have == 1:
        hint = f"use {flag} 1 (or leave it out)"
    else:
        hint = f"use {flag} {have}"
    raise ConfigError(
        f"{flag} {wanted}: this machine has {have or 'no'} CUDA GPU{'s' if have != 1 else ''}; {hint}",
        field="train.processes",
    )


def worker_rank() -> int | None:
    """This process's rank when torchrun started it, else None."""
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return int(os.environ.get("RANK", "0") or 0)
    return None


def record_rank_error(message: str, kind: str = "error") -> None:
    """A rank's own account of its failure, for the launcher to report (see RANK_DIR)."""
    folder = os.environ.get("STUDIO_RANK_DIR")
    rank = worker_rank()
    if not folder or rank is None:
        return
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        data = json.dumps({"message": message, "kind": kind})
        (Path(folder) / f"rank-{rank}.json").write_text(data, encoding="utf-8")
    except OSError:
        pass


@dataclass
class Cause:
    rank: int | None
    text: str
    message: str = ""  # the rank's own words, when it wrote any
    signalled: bool = False
    kind: str = "error"


_FAILURE = re.compile(r"rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)


def signal_deaths(output: str) -> list[tuple[int, int]]:
    """(rank, signal number) of ranks torchrun reports as killed by a signal other than its
    own SIGTERM (which it sends to the survivors when one rank fails)."""
    found = []
    for rank, code in _FAILURE.findall(output):
        code = int(code)
        if code < 0 and -code != signal.SIGTERM:
            found.append((int(rank), -code))
    return found


def root_cause(rank_dir: Path, output: str) -> Cause | None:
    """Why the run failed: a rank killed by a signal first (the others fail after it), else the
    earliest rank's own message, else torchrun's last words."""
    deaths = signal_deaths(output)
    if deaths:
        rank, sig = deaths[0]
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        text = f"training process rank {rank} was killed by {name}"
        if name == "SIGKILL":
            text += " (out of memory, or killed by hand)"
        return Cause(rank, text, signalled=True)
    files = sorted(rank_dir.glob("rank-*.json"), key=lambda p: p.stat().st_mtime)
    if files:
        rank = int(files[0].stem.split("-")[1])
        try:
            said = json.loads(files[0].read_text(encoding="utf-8"))
            message, kind = str(said["message"]), str(said.get("kind", "error"))
        except (OSError, ValueError, KeyError, TypeError):
            message, kind = "failed without a readable account", "error"
        if kind == "input":  # the input is bad for every rank alike: no rank to name
            return Cause(rank, message, message, kind="input")
        return Cause(rank, f"training process rank {rank}: {message}", message)
    lines = [ln for ln in output.splitlines() if ln.strip()]
    return Cause(None, lines[-1].strip() if lines else "the training processes ended unexpectedly")


def _pdeathsig() -> None:
    """In the torchrun child (Linux): end it if this launcher dies, so no ranks are orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def torchrun_command(cfg, resume: bool, quiet: bool) -> list[str]:
    run_dir = Path(cfg.output)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc_per_node={cfg.train.processes}", "-m", "studio", "train",
           "--config", str(run_dir / "run.yaml"), "--output", str(run_dir)]  # fmt: skip
    return cmd + (["--resume"] if resume else []) + (["--quiet"] if quiet else [])


def launch(cfg, *, resume: bool, quiet: bool) -> int:
    """Run cfg on cfg.train.processes ranks; the exit code `studio train` gives."""
    from studio.core import runs
    from studio.core.events import EventLog, Failed, read_events

    run_dir = Path(cfg.output)
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    if not resume or not (run_dir / "run.yaml").exists():
        cfg.save(run_dir / "run.yaml")
    if runs.read_process(run_dir).get("pid") != os.getpid():
        runs.write_process(run_dir, os.getpid(), [sys.executable, *sys.argv])
    rank_dir = run_dir / RANK_DIR
    shutil.rmtree(rank_dir, ignore_errors=True)
    env = dict(os.environ, STUDIO_LAUNCHER_PID=str(os.getpid()), STUDIO_RANK_DIR=str(rank_dir))
    if not quiet:
        print(f"starting {cfg.train.processes} training processes (torchrun)", file=sys.stderr)
    proc = subprocess.Popen(
        torchrun_command(cfg, resume, quiet),
        env=env,
        stderr=subprocess.PIPE,
        start_new_session=True,  # a terminal's Ctrl-C reaches this process only
        preexec_fn=_pdeathsig if sys.platform.startswith("linux") else None,
    )
    tail: collections.deque[str] = collections.deque(maxlen=400)
    echo = threading.Thread(target=_tee, args=(proc.stderr, tail, quiet), daemon=True)
    echo.start()
    asked = {"n": 0}

    def on_signal(signum, frame):
        asked["n"] += 1
        if asked["n"] == 1:
            print("\nstopping after this step (saving the adapter)...", file=sys.stderr)
            runs.request_stop(run_dir)
        else:
            _kill_group(proc.pid, signal.SIGTERM)

    previous = {}
    if threading.current_thread() is threading.main_thread():  # (the API may run in a thread)
        previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        code = proc.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    echo.join(timeout=5)
    events = read_events(run_dir / "events.jsonl")
    last = events[-1] if events else None
    if code != 0:
        cause = root_cause(rank_dir, "\n".join(tail))
        if cause is not None and not (
            last is not None and last.type == "error" and cause.rank == 0
        ):
            latest = runs.checkpoint_steps(run_dir)
            resume_hint = (
                f"; the last checkpoint (step {latest[-1]}) is whole: resume with "
                f"`studio train --output {run_dir} --resume`"
                if latest
                else ""
            )
            steps = [e.step for e in events if e.type == "step"]
            last = Failed(
                message=cause.text
                if cause.kind == "input"
                else f"{cause.text}; the run stopped{resume_hint}",
                step=(steps[-1] + 1) if steps else 0,
                kind=cause.kind,
            )
            log = EventLog(run_dir / "events.jsonl")
            log.write(last)
            log.close()
        if last is not None and last.type == "error":
            print(f"error: {last.message}", file=sys.stderr)  # once, whatever the ranks said
    shutil.rmtree(rank_dir, ignore_errors=True)
    if created and exit_code(last) == 2 and not any(e.type == "start" for e in events):
        shutil.rmtree(
            run_dir, ignore_errors=True
        )  # bad input: no run to keep (as with one process)
    return exit_code(last)


def exit_code(last) -> int:
    if last is None:
        return 1
    if last.type == "done":
        return 130 if last.status == "stopped" else 0
    return 2 if getattr(last, "kind", "") == "input" else 1


def _tee(stream, tail, quiet: bool) -> None:
    for raw in iter(stream.readline, b""):
        line = raw.decode("utf-8", "replace")
        tail.append(line.rstrip("\n"))
        if not quiet:
            sys.stderr.write(line)
            sys.stderr.flush()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except OSError:
        pass
