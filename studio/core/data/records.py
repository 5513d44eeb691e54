"""The shapes every importer produces and every later stage reads.

A `Record` is one training sample in a normal form: a conversation (`messages`, a list
of {"role": "system"|"user"|"assistant", "content": str}), plain text (`text`, for
continued pre-training), or a preference pair (the prompt's `messages` with a `chosen` and a
`rejected` answer). `line` is the 1-based line in the source file where it starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ROLES = ("system", "user", "assistant")


@dataclass
class Record:
    line: int
    messages: list[dict[str, str]] | None = None
    text: str | None = None
    chosen: str | None = None
    """A preference pair's better answer (then `messages` are the prompt's turns, ending with
    the user's)."""
    rejected: str | None = None
    """A preference pair's worse answer."""

    @property
    def is_text(self) -> bool:
        return self.text is not None

    @property
    def is_pair(self) -> bool:
        return self.chosen is not None


@dataclass
class Problem:
    """A record that was skipped: where it is, which field, and why."""

    line: int
    message: str
    field: str = ""
    raw: str = ""

    def to_dict(self) -> dict:
        return {"line": self.line, "field": self.field, "message": self.message}


def first_problems(problems: list[Problem], limit: int = 3) -> str:
    """'line 4: malformed JSON ...; line 9: ... (and 12 more)' for a message or a log line."""
    text = "; ".join(f"line {p.line}: {p.message}" for p in problems[:limit])
    return text + (f" (and {len(problems) - limit} more)" if len(problems) > limit else "")


@dataclass
class Dataset:
    """The result of importing one file: every record is either kept or listed in problems."""

    path: str
    format: str
    records: list[Record] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    columns: dict[str, str] | None = None
    """For CSV/Parquet: the column mapping used (role -> column name)."""
    available_columns: list[str] | None = None

    @property
    def kept(self) -> int:
        return len(self.records)

    @property
    def skipped(self) -> int:
        return len(self.problems)
