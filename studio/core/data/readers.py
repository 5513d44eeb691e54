"""Read a data file into raw rows, each tagged with the line where it starts.

A reader turns a file into `Source.rows`: an iterator of `(line, value, raw)` tuples, where
`line` is the 1-based line in the file, `value` is the parsed row (a dict for JSON objects and
table rows, any JSON value otherwise) or a `BadRow` when the row itself could not be parsed,
and `raw` is the row's source text when it is at hand for free (else None; the caller
re-serialises `value` only for rows it rejects, so the hot path never copies text).

File-level problems (missing, empty, binary, not UTF-8, JSON of the wrong shape) raise
`DataError` with one sentence. Row-level problems never stop the read.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio.core.errors import DataError

Progress = Callable[[int, int], None]
Row = tuple[int, Any, "str | None"]

MAX_RAW = 2000
"""Longest raw text kept for a rejected row (the GUI shows it; whole files must not be)."""

JSON_EXTS = {".json"}
JSONL_EXTS = {".jsonl", ".ndjson"}
CSV_EXTS = {".csv"}
TSV_EXTS = {".tsv", ".tab"}
PARQUET_EXTS = {".parquet", ".pq"}
TEXT_EXTS = {".txt", ".text", ".md"}

# Keys that make a lone JSON object a record rather than a wrapper around a list of records.
RECORD_KEYS = ("messages", "conversations", "instruction", "text")

EXPECTED = "expected JSON, JSONL, CSV/TSV, Parquet or plain text"
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}
_WS = re.compile(r"[ \t\n\r]*")
_decoder = json.JSONDecoder()


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


def open_source(path: str | os.PathLike, progress: Progress | None = None) -> Source:
    """Open `path` and return its rows; raises DataError for a file that cannot be read at all."""
    p = Path(path)
    name = p.name
    try:
        size = p.stat().st_size
        if p.is_dir():
            raise DataError(f"{p} is a folder; expected a data file ({EXPECTED}).")
        with open(p, "rb") as f:
            head = f.read(8192)
    except FileNotFoundError:
        raise DataError(f"{p} does not exist; check the path to the data file.") from None
    except PermissionError:
        raise DataError(f"{p} cannot be read (permission denied).") from None
    except OSError as e:
        raise DataError(f"{p} cannot be read: {e.strerror or e}.") from None

    if head.startswith(b"PAR1"):
        return _parquet(p, progress)
    encoding = _sniff_encoding(head, name)
    text_head = head.decode(encoding, errors="ignore").lstrip("\ufeff")
    if not text_head.strip() and size <= len(head):
        raise DataError(f"{name} is empty; expected records ({EXPECTED}).")

    ext = p.suffix.lower()
    first = text_head.lstrip()[:1]
    if ext in PARQUET_EXTS:
        raise DataError(f"{name} is not a Parquet file (it lacks the PAR1 header); re-export it.")
    if ext in JSONL_EXTS:
        return Source("jsonl", _jsonl_stream(p, encoding, size, progress))
    if ext in CSV_EXTS or ext in TSV_EXTS:
        return _table(p, encoding, ext, size, progress)
    if ext in TEXT_EXTS:
        return Source("txt", _paragraphs(_read_text(p, encoding), size, progress))
    if ext in JSON_EXTS or first in ("[", "{"):
        return _json(p, encoding, size, progress)
    # An unknown extension with no JSON in sight: plain text is the safest reading.
    return Source("txt", _paragraphs(_read_text(p, encoding), size, progress))


def _sniff_encoding(head: bytes, name: str) -> str:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"  # Windows tools (Notepad, Excel) still write UTF-16 with a BOM.
    for magic, kind in _COMPRESSED.items():
        if head.startswith(magic):
            raise DataError(
                f"{name} is a {kind}-compressed file; decompress it first ({EXPECTED})."
            )
    if b"\x00" in head:
        raise DataError(f"{name} looks like a binary file, not text; {EXPECTED}.")
    return "utf-8-sig"


def _read_text(p: Path, encoding: str) -> str:
    data = p.read_bytes()
    try:
        text = data.decode(encoding)
    except UnicodeDecodeError as e:
        raise DataError(
            _not_utf8(p.name, data[e.start], data.count(b"\n", 0, e.start) + 1)
        ) from None
    if text.startswith("\ufeff"):
        text = text[1:]
    if "\x00" in text[:8192] and encoding != "utf-16":
        raise DataError(f"{p.name} looks like a binary file, not text; {EXPECTED}.")
    return text


def _not_utf8(name: str, byte: int, line: int) -> str:
    return (
        f"{name} is not UTF-8 text (undecodable byte 0x{byte:02x} at line {line}); "
        "save it as UTF-8 and try again."
    )


def _clip(text: str) -> str:
    return text if len(text) <= MAX_RAW else text[:MAX_RAW] + "…"


def _bad_json(e: json.JSONDecodeError) -> BadRow:
    return BadRow(f"malformed JSON: {e.msg} at column {e.colno}")


_last_pause = [0.0]


def pause() -> None:
    """Let other threads run: called every couple of thousand records by long loops.

    A long import on a worker thread otherwise keeps the GIL for hundreds of milliseconds at
    a time (stalls of 0.3-0.8 s measured on 200,000 records), which freezes the app's window.
    Handing the GIL over needs a real sleep (sleep(0) may take it straight back); one
    millisecond every 20 ms keeps the window drawing at about 5% of the import's speed.
    """
    now = time.monotonic()
    if now - _last_pause[0] >= 0.02:
        time.sleep(0.001)
        _last_pause[0] = time.monotonic()


# ---------------------------------------------------------------------------- JSONL


def _jsonl_stream(p: Path, encoding: str, total: int, progress: Progress | None) -> Iterator[Row]:
    """Stream a JSONL file line by line: memory stays at one line plus the parsed rows."""
    # newline="\n": split on LF only (CRLF keeps its CR, which JSON treats as whitespace);
    # U+2028 and friends inside strings must not split a record.
    with open(p, encoding=encoding, newline="\n") as f:
        buffer = f.buffer
        tick = None if progress is None else (lambda: progress(buffer.tell(), total))
        try:
            yield from _jsonl_rows(f, tick)
        except UnicodeDecodeError:
            # The stream decodes in chunks, so its error position is vague; decoding the whole
            # file again (only on this failure path) finds the exact line.
            _read_text(p, encoding)
            raise DataError(
                f"{p.name} is not UTF-8 text; save it as UTF-8 and try again."
            ) from None
    if progress is not None:
        progress(total, total)


def _jsonl_rows(lines: Iterable[str], tick: Callable[[], None] | None = None) -> Iterator[Row]:
    """One row per line (blank lines skipped); `tick()` every 8,192 lines reports progress."""
    loads = json.loads
    for line_no, line in enumerate(lines, 1):
        if tick is not None and not line_no & 8191:
            tick()
        try:
            value = loads(line)
        except ValueError as e:
            # Checking blankness only after a failure keeps the common path free of it.
            if line.isspace() or not line:
                continue
            yield line_no, _bad_json(e), _clip(line.rstrip("\r\n"))
            continue
        yield line_no, value, line


# ---------------------------------------------------------------------------- JSON


def _json(p: Path, encoding: str, total: int, progress: Progress | None) -> Source:
    text = _read_text(p, encoding)
    if progress is not None:
        progress(total // 2, total)  # reading is about half the work for a JSON file
    pos = _WS.match(text).end()
    first = text[pos : pos + 1]
    if first == "[":
        rows, end = _parse_array(text, pos, 1)
        rows.extend(_trailing(text, end))
    elif first == "{":
        rows = _parse_object_file(p.name, text, pos)
        if rows is None:  # more than one value: JSON Lines saved as .json
            return Source("jsonl", _done(_jsonl_rows(text.split("\n")), total, progress))
    else:
        # Not a JSON document; reading it as JSON Lines reports each bad line with its number.
        return Source("jsonl", _done(_jsonl_rows(text.split("\n")), total, progress))
    return Source("json", _done(iter(rows), total, progress))


def _done(rows: Iterator[Row], total: int, progress: Progress | None) -> Iterator[Row]:
    yield from rows
    if progress is not None:
        progress(total, total)


def _trailing(text: str, end: int) -> list[Row]:
    pos = _WS.match(text, end).end()
    if pos >= len(text):
        return []
    line = text.count("\n", 0, pos) + 1
    return [
        (
            line,
            BadRow("malformed JSON: unexpected text after the end of the list"),
            _clip(text[pos:]),
        )
    ]


def _parse_array(text: str, pos: int, line: int, line_pos: int = 0) -> tuple[list[Row], int]:
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
            rows.append(
                (
                    line,
                    BadRow("malformed JSON: the file ends before the list is closed with ']'"),
                    "",
                )
            )
            return rows, n
        c = text[pos]
        if c == "]":
            return rows, pos + 1
        if c == ",":  # tolerate stray or trailing commas
            pos += 1
            continue
        line += count("\n", line_pos, pos)
        line_pos = pos
        try:
            value, end = raw_decode(text, pos)
        except json.JSONDecodeError as e:
            resume = _resync(text, pos, e.pos)
            stop = resume if resume is not None else n
            rows.append(
                (line, _bad_json_in(e, text, pos), _clip(text[pos:stop].rstrip(" \t\r\n,")))
            )
            if resume is None:
                return rows, n
            pos = resume
            continue
        rows.append((line, value, None))
        pos = ws(text, end).end()
        if pos < n and text[pos] not in ",]{[":
            # Something that is neither a separator nor a new element: skip to the next one.
            line += count("\n", line_pos, pos)
            line_pos = pos
            resume = _after_comma(text, pos)
            rows.append(
                (
                    line,
                    BadRow("malformed JSON: expected ',' or ']' after a record"),
                    _clip(text[pos : pos + 200]),
                )
            )
            if resume is None:
                return rows, n
            pos = resume


def _bad_json_in(e: json.JSONDecodeError, text: str, start: int) -> BadRow:
    # e.lineno counts from the top of the file; say where inside the record it went wrong.
    line_start = text.rfind("\n", 0, e.pos) + 1
    return BadRow(f"malformed JSON: {e.msg} (line {e.lineno}, column {e.pos - line_start + 1})")


_STRUCTURE = re.compile(r'[\\"{}\[\],]')


def _resync(text: str, start: int, error_pos: int) -> int | None:
    """Where the element after a malformed one starts, or None when none can be found.

    Pretty-printed files put each element at the same indentation, which nested values can
    never share, and that survives any syntax error; compact files are scanned for the comma
    that closes the element, counting brackets outside strings.
    """
    line_start = text.rfind("\n", 0, start) + 1
    indent = text[line_start:start]
    if indent.strip(" \t") == "":
        needle = "\n" + indent + text[start]
        found = text.find(needle, max(start, error_pos - len(needle)) + 1)
        if found != -1:
            return found + 1 + len(indent)
    return _after_comma(text, start)


def _after_comma(text: str, pos: int) -> int | None:
    """The start of the element after the one at `pos` (past the next comma at depth 0), or
    the index of the "]" that closes the list; None when the text ends first."""
    depth = 0
    in_string = False
    skip_to = -1
    for m in _STRUCTURE.finditer(text, pos):
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
        elif c in "{[":
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


def _parse_object_file(name: str, text: str, pos: int) -> list[Row] | None:
    """Rows of a file whose top-level value is an object.

    The object is either one record (it has `messages`, `instruction`...) or a wrapper holding
    exactly one list of records, e.g. {"data": [...]}. Returns None when the file holds more
    than one JSON value (JSON Lines saved as .json).
    """
    try:
        value, end = _decoder.raw_decode(text, pos)
    except json.JSONDecodeError:
        # Broken inside: walk the members so a bad record inside the list loses only itself.
        if _WRAPPER_START.match(text, pos):
            # {"data": [ with one compact record a line looks like JSON Lines too; only when
            # it does not read as one whole wrapper object is it taken for JSON Lines.
            try:
                return _walk_wrapper(name, text, pos, whole=True)
            except DataError:
                pass
        if _looks_like_jsonl(text):
            return None
        return _walk_wrapper(name, text, pos)
    if _WS.match(text, end).end() < len(text):
        return None
    if any(k in value for k in RECORD_KEYS):
        return [(text.count("\n", 0, pos) + 1, value, None)]
    lists = [k for k, v in value.items() if isinstance(v, list)]
    if len(lists) != 1:
        raise DataError(_wrong_object(name, value, lists))
    return _walk_wrapper(name, text, pos)


_WRAPPER_START = re.compile(r'\{[ \t\n\r]*"(?:[^"\\]|\\.)*"[ \t\n\r]*:[ \t\n\r]*\[')
"""The start of an object whose first member is a list: {"data": ["""


def _looks_like_jsonl(text: str) -> bool:
    """True when one of the first few non-blank lines is a whole JSON object on its own."""
    seen = 0
    for line in text.split("\n", 50)[:50]:
        if not line.strip():
            continue
        try:
            if isinstance(json.loads(line), dict):
                return True
        except ValueError:
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


def _walk_wrapper(name: str, text: str, pos: int, whole: bool = False) -> list[Row]:
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
                rows, pos = _parse_array(text, pos, text.count("\n", 0, pos) + 1, pos)
                lists.append((key, rows))
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
    except (ValueError, IndexError):
        line = text.count("\n", 0, min(pos, len(text))) + 1
        raise DataError(
            f"{name} is not valid JSON (the error is near line {line}); expected a list of records or one JSON object per line."
        ) from None
    if len(lists) != 1:
        raise DataError(_wrong_object(name, dict.fromkeys(keys), [k for k, _ in lists]))
    rows = lists[0][1]
    if pos < len(text):
        rows.extend(_trailing(text, pos))
    return rows


# ---------------------------------------------------------------------------- tables


def _table(p: Path, encoding: str, ext: str, total: int, progress: Progress | None) -> Source:
    text = _read_text(p, encoding)
    header_line = text.split("\n", 1)[0]
    delimiter = "\t" if ext in TSV_EXTS else ","
    if delimiter == "," and "," not in header_line:
        # A .csv written with tabs or semicolons (Excel in many locales uses ';').
        delimiter = "\t" if "\t" in header_line else (";" if ";" in header_line else ",")
    # The default limit (128 KiB a field) is too small for documents in a text column.
    csv.field_size_limit(2**31 - 1)
    # The physical lines, split as the csv module splits them (LF, CR or CRLF, kept), so a row
    # can be shown as it is in the file and reading can restart at any line.
    lines = io.StringIO(text, newline="").readlines()
    del text
    reader = csv.reader(iter(lines), delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        raise DataError(f"{p.name} is empty; expected a header row and records.") from None
    except csv.Error as e:
        raise DataError(
            f"{p.name} is not valid CSV ({e}); expected a header row and records."
        ) from None
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{p.name} has an empty header row; the first line must name the columns.")
    kind = "tsv" if delimiter == "\t" else "csv"
    rows = _table_rows(lines, reader, delimiter, header, progress, total)
    return Source(kind, rows, columns=header)


def _source_text(lines: list[str], start: int, end: int) -> str:
    """Physical lines start..end (1-based, inclusive) as they are in the file."""
    return _clip("".join(lines[start - 1 : end]).rstrip("\r\n"))


def _quotes_broken(lines: list[str], start: int, end: int, delimiter: str) -> bool:
    """True when the row on lines start..end is not well-formed CSV on its own.

    The lenient reader lets a quoted field that is never closed (or closed in the wrong place)
    run on across the following lines; a strict reading of the same lines then fails, either
    at the end of the data or at a quote followed by something other than a separator.
    """
    try:
        for _ in csv.reader(lines[start - 1 : end], delimiter=delimiter, strict=True):
            pass
    except csv.Error:
        return True
    return False


def _table_rows(lines, reader, delimiter, header, progress, total) -> Iterator[Row]:
    width = len(header)
    n_lines = len(lines)
    base = 0  # physical lines before the current reader's first line
    last = reader.line_num  # physical lines consumed so far (the header, possibly multi-line)
    while True:
        try:
            values = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            # The reader recovers at the next line; the bad row is reported where it started.
            yield last + 1, BadRow(f"malformed CSV: {e}"), _source_text(lines, last + 1, last + 1)
            if base + reader.line_num == last:
                break
            last = base + reader.line_num
            continue
        start, last = last + 1, base + reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # blank line
        if progress is not None and not start & 8191:
            progress(min(total, total * start // max(1, n_lines)), total)
        if last > start and (len(values) != width or last == n_lines):
            if _quotes_broken(lines, start, last, delimiter):
                # A quote that is never closed properly swallowed the lines after it: report
                # the row where it starts and read again from the next line, so the rows it
                # swallowed are not lost with it.
                msg = (
                    "malformed CSV: a quoted field that starts on this line is not closed "
                    f"properly, so the row runs on to line {last}; check the quotes"
                )
                yield start, BadRow(msg), _source_text(lines, start, start)
                base = last = start
                reader = csv.reader((lines[i] for i in range(start, n_lines)), delimiter=delimiter)
                continue
        if len(values) != width:
            msg = f"the row has {len(values)} values but the header names {width} columns"
            yield start, BadRow(msg), _source_text(lines, start, last)
            continue
        yield start, dict(zip(header, values, strict=True)), None
    if progress is not None:
        progress(total, total)


def _parquet(p: Path, progress: Progress | None) -> Source:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(p)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{p.name} is not a readable Parquet file ({e}); re-export it.") from None
    columns = list(pf.schema_arrow.names)
    total_rows = max(1, pf.metadata.num_rows)
    total = p.stat().st_size

    def rows() -> Iterator[Row]:
        # Parquet has no lines; `line` is the 1-based row number, which is what a viewer shows.
        line = 0
        for batch in pf.iter_batches(batch_size=8192):
            for value in batch.to_pylist():
                line += 1
                yield line, value, None
            if progress is not None:
                progress(total * line // total_rows, total)
        if progress is not None:
            progress(total, total)

    return Source("parquet", rows(), columns=columns)


# ---------------------------------------------------------------------------- plain text


def _paragraphs(text: str, total: int, progress: Progress | None) -> Iterator[Row]:
    """One row per paragraph (blank lines separate documents), at its first line."""
    start = 0
    lines: list[str] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            if not lines:
                start = line_no
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines), None
            lines = []
    if lines:
        yield start, "\n".join(lines), None
    if progress is not None:
        progress(total, total)
