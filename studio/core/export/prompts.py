"""What an export reads from the run's data: the system prompt it trained with and a few
prompts to check the exported model on."""

from __future__ import annotations

from pathlib import Path

from studio.core.errors import StudioError

FALLBACK_PROMPTS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [{"role": "user", "content": "Write one sentence about the sea."}],
    [{"role": "user", "content": "What is two plus two?"}],
]


def _records(run_dir: Path | None):
    if run_dir is None:
        return []
    from studio.core.config import RunConfig
    from studio.core.data.formats import load_dataset

    try:
        cfg = RunConfig.load(run_dir / "run.yaml")
        return [
            r
            for r in load_dataset(cfg.data.path, cfg.data.format, cfg.data.columns).records
            if r.messages
        ]
    except (StudioError, OSError):
        return []  # the data moved or changed: the export itself does not need it


def trained_system_prompt(records) -> str:
    """The system prompt, when every conversation the run trained on starts with the same one."""
    systems = {
        r.messages[0]["content"] if r.messages[0]["role"] == "system" else None for r in records
    }
    if len(systems) == 1:
        only = systems.pop()
        return only or ""
    return ""


def check_prompts(records, n: int = 3) -> list[list[dict]]:
    """The first n conversations up to their first answer (the fallback prompts without data)."""
    prompts = []
    for r in records:
        head = []
        for m in r.messages:
            if m["role"] == "assistant":
                break
            head.append(m)
        if head and head[-1]["role"] == "user":
            prompts.append(head)
        if len(prompts) == n:
            break
    return prompts or list(FALLBACK_PROMPTS)


def run_records(run_dir: Path | None):
    return _records(run_dir)
