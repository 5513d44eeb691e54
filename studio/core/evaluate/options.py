"""What an evaluation is asked to do: one dataclass, validated on construction.

The CLI flags, the Evaluate page's form and `studio.evaluate(...)` are views of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from studio.core.errors import ConfigError

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,79}$")
DEFAULT_SAMPLES = 10
DEFAULT_MAX_NEW_TOKENS = 64


def _check(cond: bool, name: str, message: str) -> None:
    if not cond:
        raise ConfigError(f"{name}: {message}", field=name)


@dataclass
class EvalOptions:
    runs: list[str]
    """Run folders (or adapter/checkpoint folders) trained on one base model."""
    data: str = ""
    """A held-out file; empty: the first run's validation split."""
    name: str = ""
    """The report's folder under RUN/eval/ (empty: eval-<date>-<time>)."""
    samples: int = DEFAULT_SAMPLES
    """Prompts answered by every model (0: loss only)."""
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    """Longest answer, in tokens (answers are greedy: the same every time)."""
    base: bool = True
    """Evaluate the base model too (the adapters switched off: no second copy of weights)."""
    judge_url: str = ""
    """An OpenAI-compatible endpoint (http://host:port/v1) to score answers 1-10; optional."""
    judge_model: str = ""
    judge_key: str = ""
    """Sent as a Bearer token; never written to the report."""
    lm_eval_tasks: str = ""
    """A task YAML file or a folder of them for lm-evaluation-harness; optional."""
    lm_eval_limit: int | None = None
    """At most this many documents per lm-eval task (None: all)."""
    device: str = "auto"
    batch_size: int = 4
    """Examples per forward pass for the loss."""
    overwrite: bool = False
    """Replace a report of the same name."""

    def __post_init__(self):
        self.runs = [str(r) for r in (self.runs or []) if str(r).strip()]
        _check(bool(self.runs), "runs", "give at least one run folder to evaluate")
        _check(
            not self.name or bool(NAME_RE.match(self.name)),
            "name",
            f"{self.name!r} is not a folder name; use letters, digits, '.', '_' and '-'",
        )
        _check(
            type(self.samples) is int and 0 <= self.samples <= 10000,
            "samples",
            f"must be a whole number from 0 to 10000; got {self.samples!r}",
        )
        _check(
            type(self.max_new_tokens) is int and 1 <= self.max_new_tokens <= 100000,
            "max_new_tokens",
            f"must be a whole number, at least 1; got {self.max_new_tokens!r}",
        )
        _check(
            type(self.batch_size) is int and self.batch_size >= 1,
            "batch_size",
            f"must be a whole number, at least 1; got {self.batch_size!r}",
        )
        _check(
            bool(self.judge_url) == bool(self.judge_model),
            "judge_model" if self.judge_url else "judge_url",
            "the judge needs both an endpoint URL and a model name",
        )
        _check(
            not self.judge_url or self.judge_url.startswith(("http://", "https://")),
            "judge_url",
            f"must start with http:// or https://; got {self.judge_url!r}",
        )
        _check(
            self.lm_eval_limit is None
            or (type(self.lm_eval_limit) is int and self.lm_eval_limit >= 1),
            "lm_eval_limit",
            f"must be a whole number, at least 1; got {self.lm_eval_limit!r}",
        )
