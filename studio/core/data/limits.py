"""Bounds on what one data file may ask of the readers, each with a default and a way to raise it.

A data file comes from anywhere. These limits keep a hostile or broken one from exhausting the
stack (deep nesting), memory (a huge line, thousands of columns) or patience, while no real
dataset comes near them. A record over a limit is reported at its line and skipped, like any
other bad record; its neighbours are kept. A file over the column limit is refused as a whole.

Each limit can be raised with an environment variable (read at every import, so it also works
for the app): STUDIO_DATA_MAX_DEPTH, STUDIO_DATA_MAX_RECORD_CHARS, STUDIO_DATA_MAX_COLUMNS.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

MAX_DEPTH = 100
"""Deepest nesting of lists and objects in one JSON record (a chat record nests about 4)."""

MAX_RECORD_CHARS = 16 * 1024 * 1024
"""Longest record, in characters: a JSONL line, a JSON list element, a CSV row, a text
paragraph (16 Mi characters: a book is about 3 Mi). A longer line is never held whole."""

MAX_COLUMNS = 1000
"""Most columns in a CSV/TSV header or a Parquet schema (each row becomes a dict of them)."""

ENV = {
    "max_depth": "STUDIO_DATA_MAX_DEPTH",
    "max_record_chars": "STUDIO_DATA_MAX_RECORD_CHARS",
    "max_columns": "STUDIO_DATA_MAX_COLUMNS",
}


@dataclass(frozen=True)
class Limits:
    max_depth: int = MAX_DEPTH
    max_record_chars: int = MAX_RECORD_CHARS
    max_columns: int = MAX_COLUMNS


def current() -> Limits:
    """The limits in force: the defaults, or what the environment variables say."""
    values = {}
    for name, var in ENV.items():
        text = os.environ.get(var, "").strip().replace("_", "")
        if text:
            try:
                values[name] = max(1, int(text))
            except ValueError:
                # A typo in a variable must not stop every import; the default applies.
                pass
    # JSON nesting is parsed recursively: past ~900 levels Python's own stack gives out.
    if "max_depth" in values:
        values["max_depth"] = min(values["max_depth"], 900)
    return Limits(**values)


def too_deep(limit: int) -> str:
    return (
        f"the record is nested more than {limit} levels deep (lists or objects inside each "
        f"other); flatten it, or raise the limit with {ENV['max_depth']}"
    )


def too_long(size: int, limit: int, what: str = "record") -> str:
    return (
        f"the {what} is {size:,} characters long, more than the limit of {limit:,}; split it, "
        f"or raise the limit with {ENV['max_record_chars']}"
    )


def too_many_columns(name: str, count: int, limit: int) -> str:
    return (
        f"{name} has {count:,} columns, more than the limit of {limit:,}; keep the columns the "
        f"training needs, or raise the limit with {ENV['max_columns']}."
    )


# ---------------------------------------------------------------------------- depth

_STRUCTURE = re.compile(r'[\\"{}\[\],]')


def structure(text: str, start: int = 0, end: int | None = None):
    """(index, character) of each bracket, brace and comma of the JSON in text[start:end]
    that is outside a string (escaped quotes inside strings handled)."""
    in_string = False
    skip_to = -1
    for m in _STRUCTURE.finditer(text, start, len(text) if end is None else end):
        i = m.start()
        if i < skip_to:
            continue
        c = text[i]
        if in_string:
            if c == "\\":
                skip_to = i + 2  # the escaped character, even a quote
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c != "\\":
            yield i, c


def depth_over(text: str, limit: int, start: int = 0, end: int | None = None) -> bool:
    """True when the JSON in text[start:end] nests lists/objects more than `limit` deep.

    Cheap first: a value cannot nest deeper than its count of opening brackets, so almost
    every record is cleared by two `str.count` calls; only a record with many brackets (code
    in a string, say) is scanned, brackets inside strings not counting.
    """
    if end is None:
        end = len(text)
    if text.count("[", start, end) + text.count("{", start, end) <= limit:
        return False
    depth = 0
    for _, c in structure(text, start, end):
        if c in "[{":
            depth += 1
            if depth > limit:
                return True
        elif c in "]}":
            depth -= 1
    return False


# ---------------------------------------------------------------------------- surrogates


def may_hold_surrogate(text: str, start: int = 0, end: int | None = None) -> bool:
    r"""True when text[start:end] has a \uD800-\uDFFF escape (a lone one decodes to a string
    no tokenizer takes). Pairs (emoji written with ensure_ascii) pass this, so it is a filter."""
    if end is None:
        end = len(text)
    if text.find("\\u", start, end) == -1:
        return False
    return text.find("\\ud", start, end) != -1 or text.find("\\uD", start, end) != -1


def lone_surrogate(value: Any, path: str = "") -> str | None:
    """The path of the first string in `value` that is not valid Unicode (a lone surrogate)."""
    stack = [(value, path)]
    while stack:
        v, p = stack.pop()
        if type(v) is str:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return p or "(the record)"
        elif type(v) is dict:
            for k, item in v.items():
                if type(k) is str and lone_surrogate(k) is not None:
                    return f"{p}.{k!a}".lstrip(".")
                stack.append((item, f"{p}.{k}".lstrip(".")))
        elif type(v) is list:
            stack.extend((item, f"{p}[{i}]") for i, item in enumerate(v))
    return None


def surrogate_message(where: str) -> str:
    return (
        f"{where}: holds an unpaired surrogate escape (\\ud800-\\udfff), which is not text; "
        "fix the escape or remove the character"
    )
