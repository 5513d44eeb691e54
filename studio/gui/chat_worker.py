"""Chat work that runs off the GUI thread: loading a model, and generating answers.

Both run through the one bridge (`studio.gui.workers.run_task`), so their progress and
results reach the page as queued signals and the app (and the tests) can wait for them.
Nothing here touches a widget. torch is imported only inside these functions, on the worker
thread, so the window never waits for it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

# Text pieces are gathered for this long before being sent to the GUI thread: fast models
# produce hundreds of pieces a second, and one repaint per frame is plenty.
FLUSH_S = 0.03


@dataclass
class ModelChoice:
    """What to load into one chat slot."""

    model: str = ""
    adapter: str = ""
    quant: str = "none"

    def label(self) -> str:
        name = Path(self.model).name if self.model else "run's base model"
        return f"{name} + {Path(self.adapter).name}" if self.adapter else name


@dataclass
class Job:
    """One answer to generate: `slot` says which pane it belongs to."""

    slot: int
    model: object
    """A studio.core.infer.ChatModel."""
    messages: list
    settings: object
    """A studio.core.generation.GenerationSettings."""


def load_model(choice: ModelChoice, share_with=None, progress=None, cancel=None):
    """Load a ChatModel; `progress(done, total)` reports the loading stages, and
    `progress("download", DownloadProgress)` the bytes of a hub model being downloaded
    first (setting `cancel`, a threading.Event, stops that download).

    `share_with` is the other slot's ChatModel in compare mode: on the same base model the
    two answer from one copy of its weights.
    """
    from studio.core.hub import ensure_model, is_hub_id
    from studio.core.infer import load_chat_model

    base = choice.model or (run_base_model(choice.adapter) if choice.adapter else "")
    if is_hub_id(base):
        report = (lambda p: progress("download", p)) if progress is not None else None
        ensure_model(base, on_progress=report, cancel=cancel)

    return load_chat_model(
        choice.model,
        choice.adapter or None,
        quant=choice.quant,
        progress=progress,
        share_with=share_with,
    )


def generate_answers(jobs: list[Job], cancel, progress) -> None:
    """Generate each job's answer in turn (one generation on the device at a time).

    Sends progress(slot, ("text", piece)) while streaming and progress(slot, ("done", stats))
    when an answer ends. Setting `cancel` (a CancelToken) ends the current answer within one
    token, keeps what was written, and skips the jobs not started yet.
    """
    for job in jobs:
        if cancel.cancelled:  # stopped before this side began: an empty, stopped answer
            progress(job.slot, ("done", dict(SKIPPED)))
            continue
        with job.model.lock:
            gen = job.model.chat(job.messages, job.settings, cancel)
            buffer, sent = "", time.monotonic()
            for piece in gen:
                buffer += piece
                if time.monotonic() - sent >= FLUSH_S:
                    progress(job.slot, ("text", buffer))
                    buffer, sent = "", time.monotonic()
            if buffer:
                progress(job.slot, ("text", buffer))
        progress(job.slot, ("done", stats(gen)))


SKIPPED = {
    "text": "",
    "tokens": 0,
    "tokens_per_s": 0.0,
    "ttft_s": 0.0,
    "finish_reason": "cancelled",
}


def stats(gen) -> dict:
    return {
        "text": gen.text,
        "tokens": gen.completion_tokens,
        "tokens_per_s": gen.tokens_per_s,
        "ttft_s": gen.ttft_s,
        "finish_reason": gen.finish_reason,
    }


def describe(stats: dict) -> str:
    """The line under an answer: tokens, speed, first-token time, and why it ended."""
    if not stats["tokens"] and stats["finish_reason"] == "cancelled":
        return "Stopped before answering."
    why = {"length": " · hit the token limit", "cancelled": " · stopped"}.get(
        stats["finish_reason"], ""
    )
    return (
        f"{stats['tokens']} tokens · {stats['tokens_per_s']:.1f} tokens/s · "
        f"first token {stats['ttft_s'] * 1000:.0f} ms{why}"
    )


def run_adapters(runs_dir: Path | None) -> list[tuple[str, str]]:
    """(label, folder) for each run's final adapter and its checkpoints, newest run first."""
    from studio.core.checkpoint import recover_folder

    if runs_dir is None or not Path(runs_dir).is_dir():
        return []
    out = []
    folders = [p for p in Path(runs_dir).iterdir() if (p / "run.yaml").is_file()]
    for run in sorted(folders, key=lambda p: p.stat().st_mtime, reverse=True):
        recover_folder(run / "adapter")  # a run killed while replacing its final adapter
        if (run / "adapter" / "adapter_config.json").is_file():
            out.append((f"{run.name} (final adapter)", str(run / "adapter")))
        ckpts = (
            sorted((run / "checkpoints").glob("step-*")) if (run / "checkpoints").is_dir() else []
        )
        for ckpt in reversed(ckpts):
            if (ckpt / "adapter_config.json").is_file():
                out.append((f"{run.name} / {ckpt.name}", str(ckpt)))
    return out


def run_base_model(adapter_folder: str) -> str:
    """The base model a run trained on, read from run.yaml (one or two levels up)."""
    from studio.core.config import RunConfig
    from studio.core.errors import StudioError

    p = Path(adapter_folder)
    for run in (p, p.parent, p.parent.parent):
        if (run / "run.yaml").is_file():
            try:
                return RunConfig.load(run / "run.yaml").model.path
            except StudioError:
                return ""
    return ""
