"""Typed events that long work in the core yields.

One stream feeds the GUI plots, the terminal progress bar and `events.jsonl`. Each event
turns into one JSON object with a `"type"` key (see `to_dict`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Event:
    type = "event"
    time: float = field(default_factory=time.time, kw_only=True)

    def to_dict(self) -> dict[str, Any]:
        """As written to events.jsonl: standard JSON, so inf and NaN (a grad norm skipped by
        fp16 loss scaling) are written as null."""
        d = {
            k: None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in asdict(self).items()
        }
        if d.get("metrics") == {}:  # a step's extras, written only when there are some
            del d["metrics"]
        d["type"] = self.type
        return d


@dataclass
class Started(Event):
    type = "start"
    total_steps: int
    run_dir: str = ""
    start_step: int = 0
    num_examples: int = 0
    num_tokens: int = 0
    steps_per_epoch: int = 0


@dataclass
class Step(Event):
    type = "step"
    step: int
    epoch: float
    loss: float
    lr: float
    grad_norm: float
    tokens_per_s: float
    elapsed_s: float
    eta_s: float
    metrics: dict[str, float] = field(default_factory=dict)
    """Extra figures of this step: bytes of gradients sent with several processes..."""


@dataclass
class Eval(Event):
    type = "eval"
    step: int
    eval_loss: float
    metrics: dict[str, float] = field(default_factory=dict)
    """The objective's own figures on the validation data (preference rewards...)."""


@dataclass
class Checkpoint(Event):
    type = "checkpoint"
    step: int
    path: str


@dataclass
class Log(Event):
    type = "log"
    message: str
    level: str = "info"


@dataclass
class Progress(Event):
    """Progress of work that is not training steps (an export, an evaluation)."""

    type = "progress"
    done: int
    total: int
    stage: str = ""
    eta_s: float = 0.0


@dataclass
class Row(Event):
    """A record made by data generation, as written to its output file (for a live preview)."""

    type = "row"
    index: int
    """Its 0-based position in the output file."""
    record: dict = field(default_factory=dict)


@dataclass
class Done(Event):
    type = "done"
    step: int
    adapter: str
    status: str = "completed"  # or "stopped" when cancelled
    final_loss: float | None = None
    eval_loss: float | None = None


@dataclass
class Failed(Event):
    type = "error"
    message: str
    step: int = 0
    kind: str = "error"  # "nan", "oom", "error"


EVENT_TYPES = {
    cls.type: cls for cls in (Started, Step, Eval, Checkpoint, Log, Progress, Row, Done, Failed)
}


def event_from_dict(d: dict[str, Any]) -> Event:
    """Rebuild a typed event from one line of events.jsonl (unknown keys are ignored)."""
    cls = EVENT_TYPES[d["type"]]
    names = set(cls.__dataclass_fields__)
    return cls(**{k: v for k, v in d.items() if k in names})


class EventLog:
    """Appends events to `events.jsonl`, one JSON object a line, flushed at once."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        # A kill mid-write leaves a torn last line; start on a fresh one so the next event
        # (a resumed run's start) is not glued to it and lost.
        if self._fh.tell() > 0:
            with open(self.path, "rb") as fh:
                fh.seek(-1, 2)
                if fh.read(1) != b"\n":
                    self._fh.write("\n")

    def write(self, event: Event) -> None:
        self._fh.write(json.dumps(event.to_dict(), ensure_ascii=False) + "\n")
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


def read_events(path: str | Path) -> list[Event]:
    """Read events.jsonl; a torn last line (from a kill mid-write) is skipped."""
    events = []
    p = Path(path)
    if not p.exists():
        return events
    for line in p.read_text(encoding="utf-8").splitlines():
        try:
            events.append(event_from_dict(json.loads(line)))
        except (ValueError, KeyError, TypeError):
            continue
    return events
