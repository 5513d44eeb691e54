"""Fuzzed data import: every reader (JSON, JSONL, CSV/TSV, Parquet, TXT) and format detection.

The properties (issue 15): an import never raises past DataError; every record it keeps is
valid; and one arbitrary bad record inserted among valid ones changes the kept set by at most
that record. Counts are bounded for the suite; STUDIO_FUZZ_EXAMPLES raises them (tests/fuzzing.py).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json

import pytest
from hypothesis import assume, example, given
from hypothesis import strategies as st

from studio.core.config import FORMATS
from studio.core.data.formats import FORMAT_NAMES, detect_format, guess_columns, load_dataset
from studio.core.errors import DataError
from tests.fuzzing import (
    assert_valid_dataset,
    deep,
    differs_by_at_most,
    fuzz,
    json_values,
    kept,
    near_records,
    words,
)

# ------------------------------------------------------------------ valid records


def alpaca(q: str, a: str) -> dict:
    return {"instruction": q, "output": a}


def chat(q: str, a: str) -> dict:
    return {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}


def sharegpt(q: str, a: str) -> dict:
    return {"conversations": [{"from": "human", "value": q}, {"from": "gpt", "value": a}]}


MAKERS = {"alpaca": alpaca, "messages": chat, "sharegpt": sharegpt}


def normal(rows) -> list:
    """What every maker's record reads as: the question and the answer, as written."""
    return [[{"role": "user", "content": q}, {"role": "assistant", "content": a}] for q, a in rows]


pairs = st.lists(st.tuples(words, words), min_size=3, max_size=8)

# One bad JSON record: arbitrary text on one line, any JSON value, a nearly right record, a
# deeply nested value, a number too long for int(), a lone surrogate, an over-long line.
LONG = 2000  # record-size limit for these tests (STUDIO_DATA_MAX_RECORD_CHARS, see fixture)
bad_json_line = st.one_of(
    st.text(max_size=40).map(lambda s: s.replace("\n", " ")),
    json_values.map(json.dumps),
    near_records.map(json.dumps),
    st.integers(60, 60_000).map(deep),
    st.integers(60, 60_000).map(lambda n: deep(n, '{"a":')),
    st.integers(60, 60_000).map(lambda n: "[" * n),
    st.integers(4301, 20_000).map(lambda n: '{"instruction": "q", "output": ' + "7" * n + "}"),
    st.sampled_from(["\\ud800", "\\udfff", "a\\udc80b"]).map(
        lambda s: '{"instruction": "' + s + '", "output": "a"}'
    ),
    st.integers(LONG + 1, 3 * LONG).map(lambda n: json.dumps(alpaca("x" * n, "a"))),
)


@pytest.fixture
def small_limits(monkeypatch):
    """Limits small enough for a fuzz example to cross them."""
    monkeypatch.setenv("STUDIO_DATA_MAX_DEPTH", "50")
    monkeypatch.setenv("STUDIO_DATA_MAX_RECORD_CHARS", str(LONG))
    monkeypatch.setenv("STUDIO_DATA_MAX_COLUMNS", "20")


def _load(path, **kw):
    try:
        return load_dataset(path, **kw)
    except DataError as e:
        assert e.message.strip()
        return None


def _lines(path) -> int:
    return path.read_bytes().count(b"\n") + 1


# ------------------------------------------------------------------ JSONL


@fuzz(80)
@given(kind=st.sampled_from(sorted(MAKERS)), rows=pairs, bad=bad_json_line, at=st.integers(0, 8))
def test_jsonl_one_bad_line_costs_at_most_itself(tmp_path, small_limits, kind, rows, bad, at):
    lines = [json.dumps(MAKERS[kind](q, a)) for q, a in rows]
    clean, dirty = tmp_path / "clean.jsonl", tmp_path / "dirty.jsonl"
    clean.write_text("\n".join(lines) + "\n", encoding="utf-8")
    lines.insert(min(at, len(lines)), bad)
    dirty.write_text("\n".join(lines) + "\n", encoding="utf-8")
    without = load_dataset(clean)
    assert kept(without) == normal(rows)
    with_bad = load_dataset(dirty)  # never raises: the valid rows are there
    assert_valid_dataset(with_bad, _lines(dirty))
    assert differs_by_at_most(kept(with_bad), kept(without)), (bad[:200], with_bad.problems)
    if len(with_bad.records) == len(without.records):
        # The bad line is reported where it is, not silently dropped (blank lines excepted).
        assert bad.strip() == "" or [p.line for p in with_bad.problems] == [min(at, len(rows)) + 1]


# ------------------------------------------------------------------ JSON arrays


@fuzz(70)
@given(
    kind=st.sampled_from(sorted(MAKERS)),
    rows=pairs,
    bad=bad_json_line,
    at=st.integers(0, 8),
    wrapped=st.booleans(),
)
def test_json_array_one_bad_element_costs_at_most_itself(
    tmp_path, small_limits, kind, rows, bad, at, wrapped
):
    """Pretty-printed, as people save them: each element starts a line at the same indent."""
    elements = [json.dumps(MAKERS[kind](q, a)) for q, a in rows]

    def write(path, items):
        body = "[\n" + ",\n".join("  " + e for e in items) + "\n]\n"
        if wrapped:
            body = '{"data": ' + body + "}\n"
        path.write_text(body, encoding="utf-8")

    clean, dirty = tmp_path / "clean.json", tmp_path / "dirty.json"
    write(clean, elements)
    write(dirty, elements[:at] + [bad] + elements[at:])
    without = load_dataset(clean)
    assert kept(without) == normal(rows)
    with_bad = load_dataset(dirty)
    assert_valid_dataset(with_bad, _lines(dirty))
    assert differs_by_at_most(kept(with_bad), kept(without)), (bad[:200], with_bad.problems)


@fuzz(40)
@given(rows=pairs, bad=json_values | near_records, at=st.integers(0, 8))
def test_compact_json_array_one_wrong_value_costs_at_most_itself(tmp_path, rows, bad, at):
    """Well-formed JSON of any shape among the records of a one-line array."""
    items = [alpaca(q, a) for q, a in rows]
    clean, dirty = tmp_path / "clean.json", tmp_path / "dirty.json"
    clean.write_text(json.dumps(items), encoding="utf-8")
    dirty.write_text(json.dumps(items[:at] + [bad] + items[at:]), encoding="utf-8")
    with_bad = load_dataset(dirty)
    assert_valid_dataset(with_bad, 1)
    assert kept(load_dataset(clean)) == normal(rows)
    assert differs_by_at_most(kept(with_bad), kept(load_dataset(clean)))


# ------------------------------------------------------------------ CSV / TSV

bad_csv_line = st.one_of(
    st.text(max_size=40).map(lambda s: s.replace("\n", " ").replace("\r", " ")),
    st.text(st.sampled_from('",\t;\\ab'), max_size=12),
    st.lists(st.text(max_size=5), max_size=30).map(",".join),
    st.integers(LONG + 1, 3 * LONG).map(lambda n: '"' + "x" * n + '",a'),
)


@fuzz(80)
@given(rows=pairs, bad=bad_csv_line, at=st.integers(0, 8), tsv=st.booleans())
# Found by the fuzzer: an unclosed quote that swallows whole rows up to a valid row's own quote,
# which the lenient reader then read as a row of the right width.
@example(rows=[("0", "0"), ("0", "0"), ("0", "0\n")], bad=',"', at=0, tsv=False)
@example(rows=[("0", "0"), ("0", "0"), ("0", "0\n")], bad=',"', at=1, tsv=False)
@example(rows=[("0", "0"), ("0", "0"), ("0", "\n0")], bad='"', at=0, tsv=False)
# ...and one it closes at a valid row's quote, which reads as well-formed CSV of the right
# width until the remainder of that row.
@example(rows=[("0", "0"), ("0", "0"), ("0", "\n0")], bad='0,"', at=0, tsv=False)
# ...and one whose stray quote pairs with quotes of two valid rows in turn (found by a sweep
# over small fields): the two readings are followed until they meet again.
@example(rows=[("q1", '"\r'), ("q2", "\n0"), ("q3", "a3")], bad='0,"', at=0, tsv=False)
def test_csv_one_bad_row_costs_at_most_itself(tmp_path, small_limits, rows, bad, at, tsv):
    delimiter = "\t" if tsv else ","
    if tsv:
        bad = bad.replace(",", "\t")

    def write(path, extra):
        buf = io.StringIO()
        w = csv.writer(buf, delimiter=delimiter, lineterminator="\r\n")
        w.writerow(["instruction", "output"])
        body = [buf.getvalue()]
        for q, a in rows:
            buf = io.StringIO()
            csv.writer(buf, delimiter=delimiter, lineterminator="\r\n").writerow([q, a])
            body.append(buf.getvalue())
        if extra is not None:
            body.insert(1 + min(at, len(rows)), extra + "\r\n")
        path.write_text("".join(body), encoding="utf-8")

    ext = ".tsv" if tsv else ".csv"
    clean, dirty = tmp_path / f"clean{ext}", tmp_path / f"dirty{ext}"
    write(clean, None)
    write(dirty, bad)
    without = load_dataset(clean)
    assert kept(without) == normal(rows)
    with_bad = load_dataset(dirty)
    # The csv module ends a line at CR, LF or CRLF (a quoted CR inside a field counts too).
    physical = len(io.StringIO(dirty.read_text(encoding="utf-8"), newline="").readlines())
    assert_valid_dataset(with_bad, physical)
    assert differs_by_at_most(kept(with_bad), kept(without)), (bad[:200], with_bad.problems)


# ------------------------------------------------------------------ plain text


@fuzz(40)
@given(
    paras=st.lists(words.map(lambda s: s.replace("\n", " ").replace("\r", " ")), min_size=3),
    bad=st.text(max_size=40).map(lambda s: s.replace("\n", " ")) | st.just("x" * (LONG + 1)),
    at=st.integers(0, 8),
)
def test_txt_one_bad_paragraph_costs_at_most_itself(tmp_path, small_limits, paras, bad, at):
    assume(all(p.strip() for p in paras))
    clean, dirty = tmp_path / "clean.txt", tmp_path / "dirty.txt"
    clean.write_text("\n\n".join(paras) + "\n", encoding="utf-8")
    dirty.write_text("\n\n".join(paras[:at] + [bad] + paras[at:]) + "\n", encoding="utf-8")
    without = load_dataset(clean)
    assert kept(without) == paras  # each paragraph, exactly as written
    with_bad = load_dataset(dirty)
    assert_valid_dataset(with_bad, _lines(dirty))
    assert differs_by_at_most(kept(with_bad), kept(without))


# ------------------------------------------------------------------ Parquet

cells = st.none() | st.text(max_size=10)


@fuzz(20)
@given(rows=pairs, bad=st.tuples(cells, cells), at=st.integers(0, 8))
def test_parquet_one_bad_row_costs_at_most_itself(tmp_path, rows, bad, at):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(path, items):
        table = pa.table({"instruction": [q for q, _ in items], "output": [a for _, a in items]})
        pq.write_table(table, path)

    clean, dirty = tmp_path / "clean.parquet", tmp_path / "dirty.parquet"
    write(clean, rows)
    write(dirty, rows[:at] + [bad] + rows[at:])
    with_bad = load_dataset(dirty)
    assert_valid_dataset(with_bad, len(rows) + 1)
    assert kept(load_dataset(clean)) == normal(rows)
    assert differs_by_at_most(kept(with_bad), kept(load_dataset(clean)))


# ------------------------------------------------------------------ any bytes at all


def _sample_files() -> dict[str, bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [alpaca("q1", "a1"), chat("q2", "a2"), {"text": "t3"}]
    buf = io.BytesIO()
    pq.write_table(pa.table({"instruction": ["q", "r"], "output": ["a", "b"]}), buf)
    return {
        ".jsonl": "\n".join(map(json.dumps, recs)).encode(),
        ".json": json.dumps({"data": recs}, indent=2).encode(),
        ".csv": b'instruction,output\nq,a\n"multi\nline",b\n',
        ".tsv": b"instruction\toutput\nq\ta\n",
        ".txt": "one paragraph\n\nanother, with 你好\n".encode(),
        ".parquet": buf.getvalue(),
        ".dat": b'[{"text": "x"}]',
    }


SAMPLES = _sample_files()


@st.composite
def mutated(draw, base: bytes):
    data = bytearray(base)
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        i = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[i] = draw(st.integers(0, 255))
        elif op == "insert":
            data[i:i] = draw(st.binary(max_size=8) | st.sampled_from([b"[" * 3000, b'"', b"\xff"]))
        elif op == "delete":
            del data[i : i + draw(st.integers(1, 8))]
        else:
            del data[i:]
    return bytes(data)


@st.composite
def any_file(draw):
    ext = draw(st.sampled_from(sorted(SAMPLES)))
    content = draw(
        st.one_of(
            mutated(SAMPLES[ext]),
            mutated(SAMPLES[draw(st.sampled_from(sorted(SAMPLES)))]),
            st.binary(max_size=200),
            st.text(max_size=200).map(lambda s: s.encode("utf-8")),
            st.text(max_size=100).map(lambda s: s.encode("utf-16")),
        )
    )
    return ext, content


column_maps = st.none() | st.dictionaries(
    st.sampled_from(["instruction", "input", "output", "system", "text", "bogus"]),
    st.sampled_from(["", "instruction", "output", "q", "text", "missing"]),
    max_size=3,
)


@fuzz(150)
@given(
    file=any_file(),
    fmt=st.sampled_from(FORMATS),
    columns=column_maps,
)
def test_any_bytes_import_or_data_error(tmp_path, small_limits, file, fmt, columns):
    ext, content = file
    path = tmp_path / f"data{ext}"
    path.write_bytes(content)
    ds = _load(path, format=fmt, columns=columns)
    if ds is not None:
        # CR, LF or CRLF end a line (CRLF counted twice here: an upper bound).
        lines = content.count(b"\n") + content.count(b"\r") + 1
        assert_valid_dataset(ds, None if ds.format == "parquet" or ext == ".parquet" else lines)


# ------------------------------------------------------------------ format detection


@fuzz(60)
@given(rows=st.lists(json_values | near_records, max_size=8))
def test_detect_format_names_a_format_or_says_why(rows):
    try:
        fmt = detect_format(rows)
    except DataError as e:
        assert "cannot tell the data format" in e.message
        return
    assert fmt in FORMAT_NAMES


@fuzz(50)
@given(
    kind=st.sampled_from(sorted(MAKERS)),
    rows=pairs,
    noise=st.lists(json_values | near_records | st.text(max_size=5), max_size=2),
)
def test_detect_format_follows_the_majority(kind, rows, noise):
    """Valid records outnumbering the noise decide the format, whatever the noise is."""
    assume(len(rows) > len(noise))
    assert detect_format([MAKERS[kind](q, a) for q, a in rows] + noise) == kind


# Column names as exports spell them: known names in any case, with spaces or dashes, and noise.
SYNONYMS = ["instruction", "prompt", "question", "input", "context", "output", "response",
            "answer", "system", "system prompt", "text", "content", "user", "assistant"]  # fmt: skip
column_names = st.sampled_from(SYNONYMS).flatmap(
    lambda s: st.sampled_from([s, s.upper(), s.title(), f" {s}", s.replace(" ", "-")])
) | st.text(max_size=12)


@fuzz(60)
@given(names=st.lists(column_names, max_size=12))
def test_guess_columns_maps_roles_to_distinct_given_columns(names):
    mapping = guess_columns(names)
    assert set(mapping) <= {"instruction", "input", "output", "system", "text"}
    assert set(mapping.values()) <= set(names)
    assert len(set(mapping.values())) == len(mapping)


# ------------------------------------------------------------------ the CLI on any bytes


@fuzz(40)
@given(file=any_file())
def test_data_inspect_cli_exits_0_or_2_with_json_out(tmp_path, small_limits, file):
    from studio.cli import main

    ext, content = file
    path = tmp_path / f"data{ext}"
    path.write_bytes(content)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["data", "inspect", str(path), "--json"])
    if code == 0:
        report = json.loads(out.getvalue())
        assert report["records"] >= 1 and report["skipped"] == len(report["errors"])
    else:
        assert code == 2 and err.getvalue().startswith("error: "), err.getvalue()
