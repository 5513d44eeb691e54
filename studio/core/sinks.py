"""Where a training run's events go: a small protocol and its sinks.

`events.jsonl` (studio.core.events.EventLog) is the source of truth and is always written;
other sinks are optional views of the same stream for tools people already use. Each sink
gets every event in order and is closed once at the end; only rank 0 has sinks (see
studio.core.train.run_training).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Protocol, runtime_checkable

from studio.core.config import RunConfig
from studio.core.errors import ConfigError
from studio.core.events import Eval, Event, EventLog, Started, Step

TENSORBOARD_DIR = "tensorboard"
"""RUN/tensorboard/: one folder a run, so `tensorboard --logdir runs/` lists every run."""


@runtime_checkable
class Sink(Protocol):
    def write(self, event: Event) -> None: ...

    def close(self) -> None: ...


JsonlSink = EventLog
"""events.jsonl's writer already has the protocol's shape; the name says what it is here."""


def step_scalars(event: Step) -> dict[str, float]:
    """A step's figures under the names the Hugging Face Trainer gives them in TensorBoard
    (train/loss, train/grad_norm...), so runs of both tools sit side by side."""
    scalars = {
        "train/loss": event.loss,
        "train/lr": event.lr,
        "train/grad_norm": event.grad_norm,
        "train/tokens_per_s": event.tokens_per_s,
        "train/epoch": event.epoch,
    }
    scalars.update({f"train/{k}": v for k, v in event.metrics.items()})
    return scalars


def eval_scalars(event: Eval) -> dict[str, float]:
    scalars = {"eval/loss": event.eval_loss}
    scalars.update({f"eval/{k}": v for k, v in event.metrics.items()})
    return scalars


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # torch's writer needs the tensorboard package, an optional extra
        raise ConfigError(
            "train.tensorboard: TensorBoard logging needs the tensorboard package; "
            "pip install tensorboard (or pip install 'studio[tensorboard]'), or turn "
            "--tensorboard off",
            field="train.tensorboard",
        ) from None
    return SummaryWriter


class TensorBoardSink:
    """Step and evaluation scalars into RUN/tensorboard/, one point per optimizer step."""

    # A live run shows up in TensorBoard within seconds (torch's default waits two minutes);
    # a kill loses at most this much here, and events.jsonl keeps everything anyway.
    FLUSH_SECS = 5

    def __init__(self, run_dir: str | Path):
        self.log_dir = Path(run_dir) / TENSORBOARD_DIR
        self._writer_class = _summary_writer_class()  # fail now, before the model loads
        self._writer = None

    def _open(self, event: Event):
        purge = None
        if isinstance(event, Started) and event.start_step:
            # A resumed run re-logs the steps after its checkpoint; TensorBoard hides the
            # killed run's points from there on instead of drawing both.
            purge = event.start_step + 1
        return self._writer_class(
            log_dir=str(self.log_dir), purge_step=purge, flush_secs=self.FLUSH_SECS
        )

    def write(self, event: Event) -> None:
        if self._writer is None:
            self._writer = self._open(event)
        if isinstance(event, Step):
            scalars = step_scalars(event)
        elif isinstance(event, Eval):
            scalars = eval_scalars(event)
        else:
            return
        for tag, value in scalars.items():
            if value is None:  # a figure events.jsonl has as null (read back from a file)
                value = math.nan
            self._writer.add_scalar(tag, float(value), global_step=event.step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def open_sinks(cfg: RunConfig, run_dir: str | Path) -> list[Sink]:
    """The optional sinks `cfg` asks for (events.jsonl is not one of them: it is always
    written). Raises ConfigError when one needs a package that is not installed."""
    sinks: list[Sink] = []
    if cfg.train.tensorboard:
        sinks.append(TensorBoardSink(run_dir))
    return sinks
