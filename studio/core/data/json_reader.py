"""Read a whole-file JSON dataset: a list of records, or an object wrapping one such list.

The list is parsed element by element, each with the line where it starts, so a malformed
element loses only itself: parsing resumes at the next element (found by its indentation in a
pretty-printed file, else past the comma that closes the bad one). A file that is not one JSON
document (JSON Lines saved as .json) is handed back to be read line by line.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

from studio.core.data import limits as bounds
from studio.core.data.limits import Limits, structure
from studio.core.data.rows import BadRow, Row, bad_json, checked, clip, jsonl_rows
from studio.core.errors import DataError

# Keys that make a lone JSON object a record rather than a wrapper around a list of records.
RECORD_KEYS = ("messages", "conversations", "instruction", "text")

_WS = re.compile(r"[ \t\n\r]*")
_decoder = json.JSONDecoder()
_PARSE_ERRORS = (ValueError, RecursionError)
"""What raw_decode raises: JSONDecodeError, ValueError (a number too long for int()), and
RecursionError (nesting deeper than Python's stack)."""


def json_rows(name: str, text: str, lim: Limits) -> tuple[str, Iterator[Row]]:
    """("json", rows) for a JSON document, or ("jsonl", rows) for JSON Lines saved as .json."""
    pos = _WS.match(text).end()
    first = text[pos : pos + 1]
    if first == "[":
        rows, end = _parse_array(text, pos, 1, lim)
        rows.extend(_trailing(text, end))
        return "json", iter(rows)
    if first == "{":
        found = _parse_object_file(name, text, pos, lim)
        if found is not None:
            return "json", iter(found)
    # More than one value, or no JSON document at all: read as JSON Lines, which reports
    # each bad line with its number.
    return "jsonl", jsonl_rows(text.split("\n"), lim)


def _parse_error(e: Exception, text: str, start: int, lim: Limits) -> BadRow:
    if isinstance(e, RecursionError):
        return BadRow(bounds.too_deep(lim.max_depth))
    if isinstance(e, json.JSONDecodeError):
        # e.lineno counts from the top of the file; say where inside the record it went wrong.
        line_start = text.rfind("\n", 0, e.pos) + 1
        return bad_json(e, f"(line {e.lineno}, column {e.pos - line_start + 1})")
    return bad_json(e)  # type: ignore[arg-type]


def _trailing(text: str, end: int) -> list[Row]:
    pos = _WS.match(text, end).end()
    if pos >= len(text):
        return []
    line = text.count("\n", 0, pos) + 1
    return [
        (
            line,
            BadRow("malformed JSON: unexpected text after the end of the list"),
            clip(text[pos:]),
        )
    ]


def _parse_array(
    text: str, pos: int, line: int, lim: Limits, line_pos: int = 0
) -> tuple[list[Row], int]:
    """Parse the JSON array at text[pos] element by element, with each element's start line.

    Newlines are counted incrementally between element starts, so the whole walk is linear.
    A malformed element becomes a BadRow and parsing resumes at the next element.
    `line` is the line number at `line_pos`. Returns the rows and the index after the `]`.
    """
    raw_decode = _decoder.raw_decode
    ws = _WS.match
    count = text.count
    n = len(text)
    rows: list[Row] = []
    pos += 1
    while True:
        pos = ws(text, pos).end()
        if pos >= n:
            line += count("\n", line_pos, pos)
            message = "malformed JSON: the file ends before the list is closed with ']'"
            rows.append((line, BadRow(message), ""))
            return rows, n
        c = text[pos]
        if c == "]":
            resume = _stray_close(text, pos)
            if resume is None:
                return rows, pos + 1
            line += count("\n", line_pos, pos)
            line_pos = pos
            message = "malformed JSON: a ']' here would end the list, but more records follow"
            rows.append((line, BadRow(message), clip(text[pos:resume].rstrip())))
            pos = resume
            continue
        if c == ",":  # tolerate stray or trailing commas
            pos += 1
            continue
        line += count("\n", line_pos, pos)
        line_pos = pos
        try:
            value, end = raw_decode(text, pos)
        except _PARSE_ERRORS as e:
            error_pos = e.pos if isinstance(e, json.JSONDecodeError) else pos
            resume = _resync(text, pos, error_pos)
            stop = resume if resume is not None else n
            raw = clip(text[pos:stop].rstrip(" \t\r\n,"))
            rows.append((line, _parse_error(e, text, pos, lim), raw))
            if resume is None:
                return rows, n
            pos = resume
            continue
        value = checked(value, text, pos, end, lim)
        rows.append((line, value, clip(text[pos:end]) if type(value) is BadRow else None))
        pos = ws(text, end).end()
        if pos < n and text[pos] not in ",]{[":
            # Something that is neither a separator nor a new element: skip to the next one.
            line += count("\n", line_pos, pos)
            line_pos = pos
            resume = _resync(text, pos, pos)
            message = "malformed JSON: expected ',' or ']' after a record"
            rows.append((line, BadRow(message), clip(text[pos : pos + 200])))
            if resume is None:
                return rows, n
            pos = resume


def _openers(text: str, start: int) -> str:
    """How the element after the one at text[start] may start: as a record ({ or [) or as this
    one does (a list of strings). Not any value: a wrapper's next key starts with a quote."""
    return "{[" + (text[start] if text[start] not in "{[" else "")


def _indent(text: str, pos: int) -> str | None:
    """The whitespace before text[pos] on its line, or None when other text precedes it."""
    line_start = text.rfind("\n", 0, pos) + 1
    indent = text[line_start:pos]
    return indent if indent.strip(" \t") == "" else None


def _line_indent(text: str, pos: int) -> str:
    """The whitespace that starts the line holding text[pos]."""
    line_start = text.rfind("\n", 0, pos) + 1
    return _WS.match(text, line_start).group().lstrip("\r\n")[: pos - line_start]


def _next_element(text: str, indent: str, start: int, openers: str) -> int | None:
    """The first element after `start` that begins a line at `indent` with one of `openers`."""
    found = re.compile("\n" + re.escape(indent) + "[" + re.escape(openers) + "]").search(
        text, start
    )
    return None if found is None else found.end() - 1


def _resync(text: str, start: int, error_pos: int) -> int | None:
    """Where the element after a malformed one starts, or None when none can be found.

    Pretty-printed files put each element at the same indentation, which nested values can
    never share (closing brackets aside), and that survives any syntax error; compact files
    are scanned for the comma that closes the element, counting brackets outside strings.
    """
    indent = _indent(text, start)
    if indent:
        # Anything nested sits deeper, so the next line at this indentation that opens a value
        # is the next element, wherever the error was (an unclosed '[' swallows the rest).
        found = _next_element(text, indent, start + 1, _openers(text, start))
        if found is not None:
            return found
    elif indent == "":
        # Elements at the margin: so may be nested values (indent=0). Only an element that
        # opens as this one did, past the error, is taken for the next.
        found = _next_element(text, "", max(start, error_pos - 1), text[start])
        if found is not None:
            return found
    else:
        # Mid-line (after another value on its line): the comma that closes it, unless that
        # lies past the next line that starts an element at this line's indentation.
        comma = _after_comma(text, start)
        line_indent = _line_indent(text, start)
        if line_indent:
            found = _next_element(text, line_indent, start + 1, _openers(text, start))
            if found is not None and (comma is None or comma > found):
                return found
        return comma
    return _after_comma(text, start)


def _stray_close(text: str, pos: int) -> int | None:
    """For a ']' at text[pos] that does not end the list, where the next element starts.

    In a pretty-printed list a bad record can hold a ']': when the next line that is not
    blank starts a record at the indentation of the line with the ']', the ']' did not close
    the list. The list's real ']' is followed by the end of the file, or '}' in a wrapper.
    """
    indent = _line_indent(text, pos)
    line_end = text.find("\n", pos)
    if line_end == -1:
        return None
    nxt = _WS.match(text, line_end).end()
    if nxt >= len(text) or text[nxt] not in "{[" or _indent(text, nxt) != indent:
        return None
    return nxt


def _after_comma(text: str, pos: int) -> int | None:
    """The start of the element after the one at `pos` (past the next comma at depth 0), or
    the index of the "]" that closes the list; None when the text ends first."""
    depth = 0
    for i, c in structure(text, pos):
        if c in "{[":
            depth += 1
        elif c in "}]":
            depth -= 1
            if depth < 0:
                if c == "]":
                    return i  # the enclosing list ends here; the caller sees its "]"
                depth = 0  # a stray "}": skip it
        elif depth == 0:  # a comma between elements
            return _WS.match(text, i + 1).end()
    return None


_WRAPPER_START = re.compile(r'\{[ \t\n\r]*"(?:[^"\\]|\\.)*"[ \t\n\r]*:[ \t\n\r]*\[')
"""The start of an object whose first member is a list: {"data": ["""


def _parse_object_file(name: str, text: str, pos: int, lim: Limits) -> list[Row] | None:
    """Rows of a file whose top-level value is an object.

    The object is either one record (it has `messages`, `instruction`...) or a wrapper holding
    exactly one list of records, e.g. {"data": [...]}. Returns None when the file holds more
    than one JSON value (JSON Lines saved as .json).
    """
    try:
        value, end = _decoder.raw_decode(text, pos)
    except _PARSE_ERRORS:
        # Broken inside: walk the members so a bad record inside the list loses only itself.
        opener = _WRAPPER_START.match(text, pos)
        if opener is not None:
            if text[opener.end() :].lstrip(" \t\r").startswith("\n"):
                # `{"data": [` alone on its line: no JSON Lines record ends with an open list.
                return _walk_wrapper(name, text, pos, lim)
            # {"data": [ with one compact record a line looks like JSON Lines too; only when
            # it does not read as one whole wrapper object is it taken for JSON Lines.
            try:
                return _walk_wrapper(name, text, pos, lim, whole=True)
            except DataError:
                pass
        if _looks_like_jsonl(text):
            return None
        return _walk_wrapper(name, text, pos, lim)
    if _WS.match(text, end).end() < len(text):
        return None
    if any(k in value for k in RECORD_KEYS):
        record = checked(value, text, pos, end, lim)
        raw = clip(text[pos:end]) if type(record) is BadRow else None
        return [(text.count("\n", 0, pos) + 1, record, raw)]
    lists = [k for k, v in value.items() if isinstance(v, list)]
    if len(lists) != 1:
        raise DataError(_wrong_object(name, value, lists))
    return _walk_wrapper(name, text, pos, lim)


def _looks_like_jsonl(text: str) -> bool:
    """True when one of the first few non-blank lines is a whole JSON object on its own."""
    seen = 0
    for line in text.split("\n", 50)[:50]:
        if not line.strip():
            continue
        try:
            if isinstance(json.loads(line), dict):
                return True
        except _PARSE_ERRORS:
            pass
        seen += 1
        if seen >= 5:
            break
    return False


def _wrong_object(name: str, value: dict, lists: list[str]) -> str:
    keys = ", ".join(list(value)[:8]) or "none"
    if not lists:
        return (
            f"{name} holds a JSON object with no list in it (keys: {keys}); expected a list of "
            'records, or an object holding exactly one list such as {"data": [...]}.'
        )
    return (
        f"{name} holds a JSON object with {len(lists)} lists ({', '.join(lists[:8])}); expected an "
        'object holding exactly one list of records, such as {"data": [...]}.'
    )


def _walk_wrapper(name: str, text: str, pos: int, lim: Limits, whole: bool = False) -> list[Row]:
    """Walk the members of the object at text[pos], parsing list values element by element.

    With `whole`, raise DataError unless the object is closed and nothing follows it (used to
    tell a broken wrapper from JSON Lines); without, report what cannot be read as rows.
    """
    raw_decode = _decoder.raw_decode
    ws = _WS.match
    lists: list[tuple[str, list[Row]]] = []
    keys: list[str] = []
    pos = ws(text, pos + 1).end()
    try:
        while text[pos] != "}":
            key, pos = raw_decode(text, pos)
            pos = ws(text, pos).end()
            if not isinstance(key, str) or text[pos] != ":":
                raise ValueError("expected a key and ':'")
            pos = ws(text, pos + 1).end()
            keys.append(key)
            if text[pos] == "[":
                rows, pos = _parse_array(text, pos, text.count("\n", 0, pos) + 1, lim, pos)
                lists.append((key, rows))
                pos = ws(text, pos).end()
                while not whole and pos < len(text) and text[pos] not in ",}":
                    # Text after the list closed (a bad last record holding a ']' closed it
                    # early): reported, and skipped line by line up to the wrapper's end.
                    line = text.count("\n", 0, pos) + 1
                    end = text.find("\n", pos)
                    end = len(text) if end == -1 else end
                    message = "malformed JSON: unexpected text after the end of the list"
                    rows.append((line, BadRow(message), clip(text[pos:end])))
                    pos = ws(text, end).end()
                if pos >= len(text):
                    if whole:
                        raise ValueError("the list runs to the end of the file")
                    break  # the list ran to the end of the file; its last row says why
            else:
                _, pos = raw_decode(text, pos)
            pos = ws(text, pos).end()
            if text[pos] == ",":
                pos = ws(text, pos + 1).end()
        else:
            pos += 1  # past the closing "}"
            if whole and ws(text, pos).end() < len(text):
                raise ValueError("more text after the object")
    except (ValueError, IndexError, RecursionError) as e:
        line = text.count("\n", 0, min(pos, len(text))) + 1
        why = " (" + bounds.too_deep(lim.max_depth) + ")" if isinstance(e, RecursionError) else ""
        raise DataError(
            f"{name} is not valid JSON (the error is near line {line}){why}; expected a list of "
            "records or one JSON object per line."
        ) from None
    if len(lists) != 1:
        raise DataError(_wrong_object(name, dict.fromkeys(keys), [k for k, _ in lists]))
    rows = lists[0][1]
    if pos < len(text):
        rows.extend(_trailing(text, pos))
    return rows
