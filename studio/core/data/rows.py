"""Raw rows as the readers produce them, and JSON values parsed within the limits.

A row is `(line, value, raw)`: the 1-based line where it starts, the parsed value (or a
`BadRow` saying why it could not be used) and its source text when that is at hand for free.
Parsing a JSON record here never raises: a value too deep, too long, with a number Python
will not read or with a lone surrogate becomes a BadRow, reported at its line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from studio.core.data import limits as bounds
from studio.core.data.limits import Limits

Row = tuple[int, Any, "str | None"]

MAX_RAW = 2000
"""Longest raw text kept for a rejected row (the GUI shows it; whole files must not be)."""


@dataclass
class BadRow:
    """A row that could not be parsed at all (for example a malformed JSONL line)."""

    message: str


@dataclass
class Source:
    kind: str
    """jsonl, json, csv, tsv, parquet or txt."""
    rows: Iterator[Row]
    columns: list[str] | None = None
    """For tables (CSV/TSV/Parquet): the column names, in file order."""


class LongLine(str):
    """The first part of a line longer than the record limit; `size` is the whole length."""

    size: int


def clip(text: str) -> str:
    return text if len(text) <= MAX_RAW else text[:MAX_RAW] + "…"


def bad_json(e: ValueError, where: str = "") -> BadRow:
    """A BadRow for what json raised: a syntax error, or a number too long for int()."""
    if isinstance(e, json.JSONDecodeError):
        return BadRow(f"malformed JSON: {e.msg} {where or f'at column {e.colno}'}")
    # int() refuses more than 4300 digits (CPython's guard against slow conversions).
    return BadRow(
        "malformed JSON: a number has more digits than can be read (4300 at most); "
        "write it as a string"
    )


def checked(value: Any, text: str, start: int, end: int, lim: Limits) -> Any:
    """`value` (parsed from text[start:end]) or a BadRow when it is over a limit."""
    if end - start > lim.max_record_chars:
        return BadRow(bounds.too_long(end - start, lim.max_record_chars))
    if bounds.depth_over(text, lim.max_depth, start, end):
        return BadRow(bounds.too_deep(lim.max_depth))
    if bounds.may_hold_surrogate(text, start, end):
        where = bounds.lone_surrogate(value)
        if where is not None:
            return BadRow(bounds.surrogate_message(where))
    return value


def jsonl_rows(
    lines: Iterable[str], lim: Limits, tick: Callable[[], None] | None = None
) -> Iterator[Row]:
    """One row per line (blank lines skipped); `tick()` every 8,192 lines reports progress."""
    loads = json.loads
    max_chars, max_depth = lim.max_record_chars, lim.max_depth
    deep = 2 * max_depth  # a shorter line cannot hold max_depth + 1 opening brackets
    for line_no, line in enumerate(lines, 1):
        if tick is not None and not line_no & 8191:
            tick()
        if len(line) > max_chars:
            size = getattr(line, "size", len(line.rstrip("\r\n")))
            if size > max_chars:
                yield line_no, BadRow(bounds.too_long(size, max_chars, "line")), clip(line)
                continue
        try:
            value = loads(line)
        except ValueError as e:
            # Checking blankness only after a failure keeps the common path free of it.
            if line.isspace() or not line:
                continue
            yield line_no, bad_json(e), clip(line.rstrip("\r\n"))
            continue
        except RecursionError:  # deeper than Python's stack: surely over the depth limit
            yield line_no, BadRow(bounds.too_deep(max_depth)), clip(line.rstrip("\r\n"))
            continue
        # Cheap scans clear almost every line; only a suspect one is looked at closely. A
        # value can nest no deeper than its count of opening brackets; a lone surrogate needs
        # a backslash (one fast scan: most lines have none).
        if (len(line) > deep and line.count("[") + line.count("{") > max_depth) or (
            "\\" in line and bounds.may_hold_surrogate(line)
        ):
            value = checked(value, line, 0, len(line), lim)
            if type(value) is BadRow:
                yield line_no, value, clip(line.rstrip("\r\n"))
                continue
        yield line_no, value, line


def bounded_lines(f, limit: int) -> Iterator[str]:
    """The lines of text stream `f`, none held longer than `limit` + 1 characters.

    A longer line comes as a LongLine: its first `limit` + 1 characters, with `size` its full
    length; the rest is read and dropped in 1 MiB pieces, so memory stays bounded.
    """
    readline = f.readline
    cap = limit + 1
    while True:
        line = readline(cap)
        if not line:
            return
        if len(line) == cap and line[-1] != "\n":
            size = len(line)
            while True:
                more = readline(1 << 20)
                size += len(more)
                if not more or more[-1] == "\n":
                    break
            long = LongLine(line)
            long.size = size - (1 if more.endswith("\n") else 0)
            yield long
            continue
        yield line
