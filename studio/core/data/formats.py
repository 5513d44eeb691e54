"""Format detection and normalisation: raw rows -> `Record`s, and a `Problem` for each bad row.

Formats: alpaca (instruction/input/output, optional system and history), sharegpt
(`conversations` of from/value), messages (OpenAI `messages` of role/content) and text
(a `text` field, or paragraphs of a .txt file), and pairs (preference pairs: prompt, chosen
and rejected, read by studio.core.data.pair_records). Every chat format ends up as a list of
{"role": "system"|"user"|"assistant", "content": str}.

The per-record converters are the hot path of an import (200k records should cost at most
3x a bare json.loads loop), so they check types with `type(x) is str` and build plain dicts;
the slow, friendly error messages are only computed for rows that fail.
"""

from __future__ import annotations

import gc
import json
import os
from collections import Counter
from collections.abc import Callable, Iterable
from itertools import chain
from pathlib import Path
from typing import Any

from studio.core.config import FORMATS
from studio.core.data.readers import BadRow, Progress, open_source, pause
from studio.core.data.records import Dataset, Problem, Record, first_problems
from studio.core.errors import DataError

FORMAT_NAMES = tuple(f for f in FORMATS if f != "auto")
COLUMN_ROLES = ("instruction", "input", "output", "system", "text")

# Column names people use for each role, most specific first (compared after lowercasing and
# turning spaces and dashes into underscores).
_SYNONYMS = {
    "instruction": "instruction instructions prompt question query problem request task user human user_input".split(),
    "input": "input context additional_context input_context".split(),
    "output": "output response answer completion target assistant gpt reply solution chosen output_text".split(),
    "system": "system system_prompt system_message".split(),
    "text": "text content document body raw_text passage".split(),
}

ROLE_ALIASES = {
    "system": "system",
    "user": "user",
    "assistant": "assistant",
    "human": "user",
    "gpt": "assistant",
    "model": "assistant",
}

_EXPECTED = {
    "alpaca": 'objects with "instruction" and "output" fields',
    "sharegpt": 'objects with "conversations": a list of {"from", "value"} turns ending with gpt',
    "messages": 'objects with "messages": a list of {"role", "content"} turns ending with assistant',
    "text": 'objects with a "text" field, or plain text',
    "pairs": 'objects with "prompt", "chosen" and "rejected" (strings, or lists of messages)',
}

_SAMPLE = 50
"""Good rows looked at to detect the format and the columns."""


_FREEZE_MIN = 50_000
"""Rows from which an import freezes the garbage collector's view of the heap (see below)."""


class Invalid(Exception):
    """Why one row was rejected; becomes a Problem. Raised only on the slow path."""

    def __init__(self, field: str, reason: str):
        super().__init__(reason)
        self.field = field
        self.reason = reason

    @property
    def message(self) -> str:
        return f"{self.field}: {self.reason}" if self.field else self.reason


# ---------------------------------------------------------------------------- detection


def _norm(name: str) -> str:
    return str(name).strip().lower().replace(" ", "_").replace("-", "_")


def guess_columns(column_names: Iterable[str]) -> dict[str, str]:
    """Guess which column plays which role: keys among instruction, input, output, system, text.

    >>> guess_columns(["question", "context", "answer"])
    {'instruction': 'question', 'input': 'context', 'output': 'answer'}
    """
    by_norm: dict[str, str] = {}
    for name in column_names:
        by_norm.setdefault(_norm(name), name)
    out: dict[str, str] = {}
    used: set[str] = set()
    for role, synonyms in _SYNONYMS.items():
        for s in synonyms:
            col = by_norm.get(s)
            if col is not None and col not in used:
                out[role] = col
                used.add(col)
                break
    if "instruction" not in out and "input" in out:
        # "input"/"output" pairs: the input is the instruction.
        out["instruction"] = out.pop("input")
    return out


def _row_format(row: Any) -> str | None:
    if isinstance(row, str):
        return "text"
    if not isinstance(row, dict):
        return None
    # Before the others: pair files often carry "messages" too, and "prompt" + "chosen" would
    # pass for alpaca's instruction and output.
    if "chosen" in row and "rejected" in row:
        return "pairs"
    if "messages" in row:
        return "messages"
    if "conversations" in row:
        return "sharegpt"
    roles = guess_columns(row)
    if "instruction" in roles and "output" in roles:
        return "alpaca"
    if "text" in roles:
        return "text"
    return None


def detect_format(sample_rows: list) -> str:
    """The format most of `sample_rows` (parsed rows: dicts, or strings for text) are in.

    Raises DataError when no row looks like any known format.
    """
    votes = Counter(f for f in map(_row_format, sample_rows) if f is not None)
    if votes:
        return votes.most_common(1)[0][0]
    first = next((r for r in sample_rows if not isinstance(r, BadRow)), None)
    if isinstance(first, dict):
        what = f"the first record has the keys {', '.join(map(str, list(first)[:10])) or '(none)'}"
    elif first is None:
        what = "it has no record"
    else:
        what = f"the first record is a {_type_name(first)}"
    raise DataError(
        f'cannot tell the data format: {what}; expected "messages" (OpenAI), "conversations" '
        '(ShareGPT), "instruction" and "output" (Alpaca), "text", or "prompt", "chosen" and "rejected" '
        "(preference pairs), or choose the format."
    )


# ---------------------------------------------------------------------------- converters


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true/false"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, BadRow):
        return "malformed row"
    return type(value).__name__


_MISSING = object()


def _string(value: Any, field: str) -> str:
    """Slow path for a field that is not a plain string: accept OpenAI text parts, else reject."""
    if value is _MISSING:
        raise Invalid(field, "missing field")
    if (
        isinstance(value, list)
        and value
        and all(
            isinstance(p, dict) and p.get("type") == "text" and type(p.get("text")) is str
            for p in value
        )
    ):
        return "".join(p["text"] for p in value)
    raise Invalid(field, f"must be a string, got {_type_name(value)}")


def _not_object(row: Any, expected: str) -> Invalid:
    if isinstance(row, BadRow):
        return Invalid("", row.message)
    return Invalid("", f"expected {expected}, got {_type_name(row)}")


def _turns(turns: Any, key: str, keys: tuple[str, str], system: Any = None) -> list[dict[str, str]]:
    """Normalise a list of turns; raise Invalid on the first fault.

    `keys` is the (role, content) key pair the format normally uses: ("role", "content") for
    messages, ("from", "value") for ShareGPT. Turns using the other pair, odd role spellings
    and OpenAI content parts go through `_slow_turn`, which also writes the error messages.
    """
    if type(turns) is not list or not turns:
        raise _bad_turns(turns, key)
    role_key, content_key = keys
    messages = []
    append = messages.append
    has_user = False
    i = 0
    for turn in turns:
        try:
            role = ROLE_ALIASES[turn[role_key]]
            content = turn[content_key]
        except (KeyError, TypeError):
            role, content = _slow_turn(turn, key, i)
        if type(content) is not str:
            role, content = _slow_turn(turn, key, i)
        if role == "assistant":
            if not content or content.isspace():
                raise Invalid(f"{key}[{i}].{_content_key(turn)}", "empty assistant turn")
        elif role == "user":
            has_user = True
        elif i:
            raise Invalid(f"{key}[{i}].{_role_key(turn)}", "a system turn may only come first")
        append({"role": role, "content": content})
        i += 1
    if not has_user:
        raise Invalid(key, "the conversation has no user turn")
    if role != "assistant":
        raise Invalid(
            key, f"the conversation ends with a {role} turn; it must end with an assistant turn"
        )
    if system and type(system) is str and messages[0]["role"] != "system":
        # ShareGPT exports often carry the system prompt beside the conversation.
        messages.insert(0, {"role": "system", "content": system})
    return messages


def _bad_turns(turns: Any, key: str) -> Invalid:
    if turns is _MISSING:
        return Invalid(key, "missing field")
    if isinstance(turns, list):
        return Invalid(key, "the conversation is empty")
    return Invalid(key, f"must be a list of turns, got {_type_name(turns)}")


def _role_key(turn: dict) -> str:
    return "role" if "role" in turn else "from"


def _content_key(turn: dict) -> str:
    # The content key that goes with the role key, unless only the other one is there.
    usual, other = ("content", "value") if "role" in turn else ("value", "content")
    return other if usual not in turn and other in turn else usual


def _slow_turn(turn: Any, key: str, i: int) -> tuple[str, str]:
    """The role and content of a turn the fast path could not read, or Invalid saying why."""
    if type(turn) is not dict:
        raise Invalid(f"{key}[{i}]", f"each turn must be an object, got {_type_name(turn)}")
    if "role" not in turn and "from" not in turn:
        raise Invalid(f"{key}[{i}]", "missing field 'role' (or 'from')")
    role_key = _role_key(turn)
    name = turn[role_key]
    role = ROLE_ALIASES.get(name.strip().lower()) if type(name) is str else None
    if role is None:
        raise Invalid(
            f"{key}[{i}].{role_key}", f"unknown role {name!r} (expected system, user or assistant)"
        )
    content_key = _content_key(turn)
    content = turn.get(content_key, _MISSING)
    if type(content) is not str:
        content = _string(content, f"{key}[{i}].{content_key}")
    return role, content


def _conversation_converter(key: str, keys: tuple[str, str]) -> Callable[[Any, int], Record]:
    def convert(row: Any, line: int) -> Record:
        if type(row) is not dict:
            raise _not_object(row, f'an object with "{key}"')
        return Record(line, _turns(row.get(key, _MISSING), key, keys, row.get("system")))

    return convert


def _alpaca_converter(columns: dict[str, str]) -> Callable[[Any, int], Record]:
    ci = columns.get("instruction", "instruction")
    co = columns.get("output", "output")
    cn = columns.get("input")
    cs = columns.get("system")

    def convert(row: Any, line: int) -> Record:
        if type(row) is not dict:
            raise _not_object(row, 'an object with "instruction" and "output"')
        instruction = row.get(ci, _MISSING)
        if type(instruction) is not str:
            instruction = _string(instruction, ci)
        output = row.get(co, _MISSING)
        if type(output) is not str:
            output = _string(output, co)
        if not output or output.isspace():
            raise Invalid(co, "empty assistant turn")
        messages = []
        if cs is not None:
            system = row.get(cs)
            if system is not None:
                if type(system) is not str:
                    system = _string(system, cs)
                if system:
                    messages.append({"role": "system", "content": system})
        history = row.get("history")
        if history:
            messages.extend(_history(history))
        if cn is not None:
            extra = row.get(cn)
            if extra is not None:
                if type(extra) is not str:
                    extra = _string(extra, cn)
                if extra and not extra.isspace():
                    instruction = f"{instruction}\n\n{extra}" if instruction else extra
        if not instruction or instruction.isspace():
            raise Invalid(ci, "empty instruction (no user turn)")
        messages.append({"role": "user", "content": instruction})
        messages.append({"role": "assistant", "content": output})
        return Record(line, messages)

    return convert


def _history(history: Any) -> list[dict[str, str]]:
    if not isinstance(history, list):
        raise Invalid(
            "history", f"must be a list of [user, assistant] pairs, got {_type_name(history)}"
        )
    out = []
    for i, pair in enumerate(history):
        if not isinstance(pair, (list, tuple)) or len(pair) != 2:
            raise Invalid(f"history[{i}]", "must be a [user, assistant] pair")
        user = pair[0] if type(pair[0]) is str else _string(pair[0], f"history[{i}][0]")
        assistant = pair[1] if type(pair[1]) is str else _string(pair[1], f"history[{i}][1]")
        if not assistant or assistant.isspace():
            raise Invalid(f"history[{i}][1]", "empty assistant turn")
        out.append({"role": "user", "content": user})
        out.append({"role": "assistant", "content": assistant})
    return out


def _text_converter(columns: dict[str, str]) -> Callable[[Any, int], Record]:
    ct = columns.get("text", "text")

    def convert(row: Any, line: int) -> Record:
        if type(row) is str:
            text = row
        elif type(row) is dict:
            text = row.get(ct, _MISSING)
            if type(text) is not str:
                text = _string(text, ct)
        else:
            raise _not_object(row, 'an object with "text", or a string')
        if not text or text.isspace():
            raise Invalid(ct if type(row) is dict else "", "empty text")
        return Record(line, None, text)

    return convert


def _unknown_converter(row: Any, line: int) -> Record:
    raise _not_object(row, "a record")


def _converter(fmt: str, columns: dict[str, str] | None) -> Callable[[Any, int], Record]:
    if fmt == "messages":
        return _conversation_converter("messages", ("role", "content"))
    if fmt == "sharegpt":
        return _conversation_converter("conversations", ("from", "value"))
    if fmt == "alpaca":
        return _alpaca_converter(columns or {})
    if fmt == "text":
        return _text_converter(columns or {})
    if fmt == "pairs":
        from studio.core.data.pair_records import convert_pair  # it imports this module

        return convert_pair
    return _unknown_converter


# ---------------------------------------------------------------------------- loading


def _resolve_columns(
    name: str, fmt: str, available: list[str], columns: dict[str, str] | None, tabular: bool
) -> dict[str, str]:
    wanted = ("instruction", "input", "output", "system") if fmt == "alpaca" else ("text",)
    required = ("instruction", "output") if fmt == "alpaca" else ("text",)
    mapping = {r: c for r, c in guess_columns(available).items() if r in wanted}
    shown = ", ".join(map(str, available[:30])) or "(none)"
    for role, col in (columns or {}).items():
        if role not in COLUMN_ROLES:
            raise DataError(
                f"unknown column role {role!r}; expected one of {', '.join(COLUMN_ROLES)}."
            )
        if not col:
            mapping.pop(role, None)
        elif col not in available:
            raise DataError(
                f"column {col!r} (mapped to {role}) is not in {name}; available columns: {shown}."
            )
        elif role in wanted:
            mapping[role] = col
    if not tabular and fmt == "alpaca":
        # JSON rows need not share their keys: the first rows may lack the optional ones that
        # later rows carry. Reading the standard names costs nothing when they are absent, and
        # guessing them from a sample would silently drop a later row's context or system prompt.
        for role in ("input", "system"):
            if role not in mapping and role not in (columns or {}) and role not in mapping.values():
                mapping[role] = role
    for role in required:
        if role not in mapping:
            if tabular:
                raise DataError(
                    f"{name} has no column for the {role} (columns: {shown}); "
                    f"say which column it is with columns={{{role!r}: ...}}."
                )
            mapping[role] = role  # JSON: each record then reports its missing field
    return mapping


def _raw_text(raw: str | None, value: Any) -> str:
    if isinstance(raw, str):
        text = raw.rstrip("\r\n")
    elif isinstance(value, BadRow):
        text = ""
    else:
        try:
            text = json.dumps(value, ensure_ascii=False, default=str)
        except (TypeError, ValueError, RecursionError):
            text = repr(value)
    return text if len(text) <= 2000 else text[:2000] + "…"


def load_dataset(
    path: str | os.PathLike,
    format: str = "auto",
    columns: dict[str, str] | None = None,
    progress: Progress | None = None,
) -> Dataset:
    """Read `path`, detect (or take) its format and normalise every record.

    Each row becomes a `Record` or a `Problem` (line, field, reason, raw text). Raises
    DataError when the file cannot be used at all: missing, empty, binary, not UTF-8, JSON of
    the wrong shape, or no valid record.
    """
    if format not in FORMATS:
        raise DataError(f"unknown data format {format!r}; expected one of {', '.join(FORMATS)}.")
    name = Path(path).name
    source = open_source(path, progress)
    rows = source.rows

    # Look at the first good rows to decide the format and the column mapping, then carry on
    # from where the sample stopped: the file is read once.
    sample = []
    good = 0
    for row in rows:
        sample.append(row)
        if type(row[1]) is not BadRow:
            good += 1
            if good >= _SAMPLE:
                break
    if not sample:
        raise DataError(f"{name} holds no records; expected {_EXPECTED.get(format, 'records')}.")
    values = [v for _, v, _ in sample if type(v) is not BadRow]

    fmt = format
    mapped = {role for role, col in (columns or {}).items() if col}
    if fmt == "auto":
        if source.kind == "txt":
            fmt = "text"
        elif mapped & {"instruction", "output"}:
            fmt = "alpaca"  # mapping columns to chat roles says what the rows are
        elif "text" in mapped:
            fmt = "text"
        elif values:
            try:
                fmt = detect_format(values)
            except DataError as e:
                raise DataError(f"{name}: {e.message}") from None
        else:
            fmt = "unknown"

    mapping = None
    available = source.columns
    if available is None:
        available = list(dict.fromkeys(k for v in values if isinstance(v, dict) for k in v))
    if fmt in ("alpaca", "text") and source.kind != "txt":
        mapping = _resolve_columns(name, fmt, available, columns, source.columns is not None)
    convert = _converter(fmt, mapping)

    records: list[Record] = []
    problems: list[Problem] = []
    append = records.append
    # Every record survives, so the cyclic collector would rescan the growing heap again and
    # again (most of the import time on big files); records hold no cycles, so pause it.
    # No gc.collect() here: the import runs on the app's worker thread, and a collection there
    # can finalise Qt objects off the GUI thread (it crashed the app: a segfault).
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for n, (line, value, raw) in enumerate(chain(sample, rows)):
            try:
                append(convert(value, line))
            except Invalid as e:
                problems.append(Problem(line, e.message, e.field, _raw_text(raw, value)))
            if not n & 2047:
                pause()
    finally:
        # After a big import, the collector's next passes would scan every new record (about
        # 0.1 s a pass per 200,000 records, GIL held: the app's window freezes), whichever
        # thread collects (the app's GUI thread does). gc.freeze() moves everything that exists
        # now out of its reach instead. The cost: cyclic garbage existing now is never
        # collected (acyclic objects, records included, are still freed by reference counting).
        # So freeze only when the import is big enough for the stall to show; a small one
        # costs the collector a few milliseconds.
        if len(records) + len(problems) >= _FREEZE_MIN:
            gc.freeze()
        if gc_was_enabled:
            gc.enable()

    if not records:
        raise DataError(_no_valid_record(name, fmt, problems))
    shown_columns = mapping
    if source.columns is None and mapping is not None:
        # The standard optional names read by default are not worth showing when no row had them.
        shown_columns = {
            r: c for r, c in mapping.items() if c in available or r not in ("input", "system")
        }
    if source.columns is None and shown_columns is not None and not columns:
        if all(role == col for role, col in shown_columns.items()):
            shown_columns = None  # plain JSON with the standard names: nothing was mapped
    return Dataset(
        path=str(path),
        format=fmt,
        records=records,
        problems=problems,
        columns=shown_columns,
        available_columns=available or None,
    )


def _no_valid_record(name: str, fmt: str, problems: list[Problem]) -> str:
    expected = _EXPECTED.get(
        fmt, "JSON records in a known format (alpaca, sharegpt, messages, text or pairs)"
    )
    return f"{name} has no valid record: {first_problems(problems)}; expected {expected}."
