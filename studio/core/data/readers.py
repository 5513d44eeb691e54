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
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from studio.core.data import limits
from studio.core.data.json_reader import json_rows
from studio.core.data.rows import (  # noqa: F401 - BadRow, Source and MAX_RAW are re-exported
    MAX_RAW,
    BadRow,
    Row,
    Source,
    bounded_lines,
    clip,
    jsonl_rows,
)
from studio.core.errors import DataError

Progress = Callable[[int, int], None]

JSON_EXTS = {".json"}
JSONL_EXTS = {".jsonl", ".ndjson"}
CSV_EXTS = {".csv"}
TSV_EXTS = {".tsv", ".tab"}
PARQUET_EXTS = {".parquet", ".pq"}
TEXT_EXTS = {".txt", ".text", ".md"}

EXPECTED = "expected JSON, JSONL, CSV/TSV, Parquet or plain text"
_COMPRESSED = {
    b"\x1f\x8b": "gzip",
    b"PK\x03\x04": "zip",
    b"BZh": "bzip2",
    b"\xfd7zXZ\x00": "xz",
    b"\x28\xb5\x2f\xfd": "zstd",
}


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
    if _looks_binary(head):
        raise DataError(f"{name} looks like a binary file, not text; {EXPECTED}.")
    return "utf-8-sig"


def _looks_binary(head: bytes) -> bool:
    """NUL bytes mean a binary file, unless they are a few stray ones in UTF-8 text: one bad
    record holding a NUL must not cost the whole file (it is reported at its own line)."""
    nuls = head.count(b"\x00")
    if not nuls:
        return False
    if nuls * 10 > len(head):
        return True  # UTF-16 without a BOM, images, archives, databases...
    try:
        head.decode("utf-8")
    except UnicodeDecodeError as e:
        return e.start < len(head) - 3  # a character cut off at the end of the head is fine
    return False


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
    return text


def _not_utf8(name: str, byte: int, line: int) -> str:
    return (
        f"{name} is not UTF-8 text (undecodable byte 0x{byte:02x} at line {line}); "
        "save it as UTF-8 and try again."
    )


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
    lim = limits.current()
    with open(p, encoding=encoding, newline="\n") as f:
        buffer = f.buffer
        tick = None if progress is None else (lambda: progress(buffer.tell(), total))
        try:
            # A line over the record limit is never held whole (bounded_lines).
            yield from jsonl_rows(bounded_lines(f, lim.max_record_chars), lim, tick)
        except UnicodeDecodeError:
            # The stream decodes in chunks, so its error position is vague; decoding the whole
            # file again (only on this failure path) finds the exact line.
            _read_text(p, encoding)
            raise DataError(
                f"{p.name} is not UTF-8 text; save it as UTF-8 and try again."
            ) from None
    if progress is not None:
        progress(total, total)


# ---------------------------------------------------------------------------- JSON


def _json(p: Path, encoding: str, total: int, progress: Progress | None) -> Source:
    text = _read_text(p, encoding)
    if progress is not None:
        progress(total // 2, total)  # reading is about half the work for a JSON file
    kind, rows = json_rows(p.name, text, limits.current())
    return Source(kind, _done(rows, total, progress))


def _done(rows: Iterator[Row], total: int, progress: Progress | None) -> Iterator[Row]:
    yield from rows
    if progress is not None:
        progress(total, total)


# ---------------------------------------------------------------------------- tables


def _table(p: Path, encoding: str, ext: str, total: int, progress: Progress | None) -> Source:
    text = _read_text(p, encoding)
    header_line = text.split("\n", 1)[0]
    delimiter = "\t" if ext in TSV_EXTS else ","
    if delimiter == "," and "," not in header_line:
        # A .csv written with tabs or semicolons (Excel in many locales uses ';').
        delimiter = "\t" if "\t" in header_line else (";" if ";" in header_line else ",")
    lim = limits.current()
    # The csv module's default (128 KiB a field) is too small for documents in a text column;
    # a field can be as long as a record may be.
    csv.field_size_limit(lim.max_record_chars)
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
    if len(header) > lim.max_columns:
        raise DataError(limits.too_many_columns(p.name, len(header), lim.max_columns))
    kind = "tsv" if delimiter == "\t" else "csv"
    rows = _table_rows(lines, reader, delimiter, header, progress, total, lim.max_record_chars)
    return Source(kind, rows, columns=header)


def _source_text(lines: list[str], start: int, end: int) -> str:
    """Physical lines start..end (1-based, inclusive) as they are in the file."""
    return clip("".join(lines[start - 1 : end]).rstrip("\r\n"))


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


RESYNC_LINES = 256
"""How far two readings of a suspect row are followed before the file's own reading is kept."""


def _bad_rows(lines: list[str], first: int, width: int, delimiter: str):
    """Rows read leniently from line `first` (1-based): (line the row ends on, is it bad)."""
    base = first - 1
    reader = csv.reader(iter(lines[base:]), delimiter=delimiter)
    done = base
    while True:
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error:
            if base + reader.line_num == done:
                return
            done = base + reader.line_num
            yield done, True
            continue
        row_start, done = done + 1, base + reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue
        broken = done > row_start and _quotes_broken(lines, row_start, done, delimiter)
        yield done, broken or len(values) != width


def _first_reading_wins(lines: list[str], start: int, width: int, delimiter: str) -> bool:
    """Whether the row starting on line `start` is read as the file says, or line `start` is bad.

    Two readings are followed until they end a row on the same line: the lenient one from
    `start`, and one from `start + 1` that counts line `start` as a bad row. The one with fewer
    bad rows wins; on a tie the single stray line is the simpler explanation.
    """
    ends = [start - 1, start]
    bad = [0, 1]
    readings = [
        _bad_rows(lines, start, width, delimiter),
        _bad_rows(lines, start + 1, width, delimiter),
    ]
    n = len(lines)
    while ends[0] != ends[1]:
        i = 0 if ends[0] < ends[1] else 1
        row = next(readings[i], None)
        if row is None:
            ends[i] = n
            continue
        ends[i], is_bad = row
        bad[i] += is_bad
        if ends[i] - start > RESYNC_LINES:
            return True
    return bad[0] < bad[1]


def _swallowed(lines, start, last, n_values, width, delimiter) -> str | None:
    """Why the row on lines start..last is a stray quote that swallowed rows, or None.

    A row that does not read strictly (a quote closed in the wrong place) is one at once.
    Otherwise, when the row has the wrong number of values or the row after it is broken, the
    other reading (line `start` alone is the bad one) is weighed against it
    (`_first_reading_wins`). A well-formed multi-line field is read as it is.
    """
    runs_on = f"a quoted field that starts on this line runs on to line {last}"
    if _quotes_broken(lines, start, last, delimiter):
        return f"malformed CSV: {runs_on} and is not closed properly; check the quotes"
    if n_values == width:
        following = next(_bad_rows(lines, last + 1, width, delimiter), None)
        if following is None or not following[1]:
            return None
    if _first_reading_wins(lines, start, width, delimiter):
        return None
    if n_values != width:
        return (
            f"malformed CSV: {runs_on}, giving {n_values} values where the header names "
            f"{width} columns; check the quotes"
        )
    return (
        f"malformed CSV: {runs_on}, swallowing the rows in between, and the quote that "
        "closes it belongs to another row; check the quotes on this line"
    )


def _csv_error(e: csv.Error, max_chars: int) -> BadRow:
    if "field larger than field limit" in str(e):
        return BadRow("malformed CSV: " + limits.too_long(max_chars + 1, max_chars, "field"))
    return BadRow(f"malformed CSV: {e}")


def _table_rows(lines, reader, delimiter, header, progress, total, max_chars) -> Iterator[Row]:
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
            yield last + 1, _csv_error(e, max_chars), _source_text(lines, last + 1, last + 1)
            if base + reader.line_num == last:
                break
            last = base + reader.line_num
            continue
        start, last = last + 1, base + reader.line_num
        if not values or (len(values) == 1 and not values[0].strip()):
            continue  # blank line
        if progress is not None and not start & 8191:
            progress(min(total, total * start // max(1, n_lines)), total)
        if last > start:
            msg = _swallowed(lines, start, last, len(values), width, delimiter)
            if msg:
                # A quote that is never closed (or closed in the wrong place) swallowed the
                # lines after it: report the row where it starts and read again from the next
                # line, so the rows it swallowed are not lost with it.
                yield start, BadRow(msg), _source_text(lines, start, start)
                base = last = start
                reader = csv.reader((lines[i] for i in range(start, n_lines)), delimiter=delimiter)
                continue
        if len(values) != width:
            msg = f"the row has {len(values)} values but the header names {width} columns"
            yield start, BadRow(msg), _source_text(lines, start, last)
            continue
        size = len(lines[start - 1]) if last == start else sum(map(len, lines[start - 1 : last]))
        if size > max_chars:
            yield (
                start,
                BadRow(limits.too_long(size, max_chars, "row")),
                _source_text(lines, start, start),
            )
            continue
        yield start, dict(zip(header, values, strict=True)), None
    if progress is not None:
        progress(total, total)


def _parquet(p: Path, progress: Progress | None) -> Source:
    try:
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(p)
        columns = list(pf.schema_arrow.names)
        groups = [pf.metadata.row_group(i).num_rows for i in range(pf.num_row_groups)]
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DataError(f"{p.name} is not a readable Parquet file ({e}); re-export it.") from None
    lim = limits.current()
    if len(columns) > lim.max_columns:
        raise DataError(limits.too_many_columns(p.name, len(columns), lim.max_columns))
    total_rows = max(1, sum(groups))
    total = p.stat().st_size

    def rows() -> Iterator[Row]:
        # Parquet has no lines; `line` is the 1-based row number, which is what a viewer shows.
        first = 0  # rows before the current row group
        for index, count in enumerate(groups):
            line = first
            try:
                for batch in pf.iter_batches(batch_size=8192, row_groups=[index]):
                    for value in batch.to_pylist():
                        line += 1
                        yield line, value, None
                    if progress is not None:
                        progress(total * line // total_rows, total)
            except Exception as e:  # a damaged row group costs its own rows, not the others'
                why = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                msg = (
                    f"rows {line + 1}-{first + count} of the Parquet file cannot be read ({why}); "
                    "re-export the file"
                )
                yield line + 1, BadRow(msg), ""
            first += count
        if progress is not None:
            progress(total, total)

    return Source("parquet", rows(), columns=columns)


# ---------------------------------------------------------------------------- plain text


def _paragraphs(text: str, total: int, progress: Progress | None) -> Iterator[Row]:
    """One row per paragraph (blank lines separate documents), at its first line."""
    max_chars = limits.current().max_record_chars
    start = 0
    lines: list[str] = []
    for line_no, line in enumerate(text.split("\n"), 1):
        line = line.rstrip("\r")
        if line.strip():
            if not lines:
                start = line_no
            lines.append(line)
        elif lines:
            yield _paragraph(start, lines, max_chars)
            lines = []
    if lines:
        yield _paragraph(start, lines, max_chars)
    if progress is not None:
        progress(total, total)


def _paragraph(start: int, lines: list[str], max_chars: int) -> Row:
    text = "\n".join(lines)
    if len(text) > max_chars:
        return start, BadRow(limits.too_long(len(text), max_chars, "paragraph")), clip(lines[0])
    return start, text, None
