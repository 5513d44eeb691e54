"""The data readers' bounds (studio.core.data.limits) and the hostile files of issue 15:
each over-limit record is reported at its line with the limit and how to raise it, and its
neighbours are kept; a file that is nothing but one deep value is a DataError, not a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import studio
from studio.core.data import limits
from studio.core.data.formats import load_dataset
from studio.core.errors import DataError

REPO = Path(studio.__file__).resolve().parent.parent
GOOD = json.dumps({"instruction": "What is 2+2?", "output": "4"})


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def _inspect(path: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "studio", "data", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


# ---------------------------------------------------------------- the cases of the issue


def test_jsonl_record_50000_deep_is_reported_at_its_line_and_the_next_record_kept(tmp_path):
    path = _write(tmp_path / "d.jsonl", GOOD + "\n" + "[" * 50_000 + "\n" + GOOD + "\n")
    ds = load_dataset(path)
    assert [r.line for r in ds.records] == [1, 3]
    (problem,) = ds.problems
    assert problem.line == 2
    assert "nested more than 100 levels deep" in problem.message
    assert "STUDIO_DATA_MAX_DEPTH" in problem.message


def test_data_inspect_cli_reports_the_deep_record_and_keeps_its_neighbours(tmp_path):
    path = _write(tmp_path / "d.jsonl", GOOD + "\n" + "[" * 50_000 + "\n" + GOOD + "\n")
    proc = _inspect(path)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    report = json.loads(proc.stdout)
    assert report["records"] == 2 and report["skipped"] == 1
    assert report["errors"][0]["line"] == 2
    assert "nested more than 100 levels" in report["errors"][0]["message"]


@pytest.mark.parametrize(
    "text", ["[" * 50_000, "[" * 50_000 + "]" * 50_000, '{"data": ' + "[" * 50_000]
)
def test_a_json_file_of_deep_nesting_is_a_data_error(tmp_path, text):
    path = _write(tmp_path / "deep.json", text)
    with pytest.raises(DataError, match="nested more than 100 levels deep"):
        load_dataset(path)


def test_data_inspect_cli_on_a_deep_json_file_exits_2_with_one_line(tmp_path):
    proc = _inspect(_write(tmp_path / "deep.json", "[" * 50_000))
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: deep.json") and "Traceback" not in proc.stderr
    assert "nested more than 100 levels deep" in proc.stderr


def test_a_deep_element_of_a_json_list_loses_only_itself(tmp_path):
    text = "[" + GOOD + ",\n" + "[" * 50_000 + "]" * 50_000 + ",\n" + GOOD + "]"
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [r.line for r in ds.records] == [1, 3]
    assert [p.line for p in ds.problems] == [2]


# ---------------------------------------------------------------- each bound, exactly


def _nested(depth: int) -> str:
    """An alpaca record whose extra field nests `depth` levels (the record itself is one)."""
    return '{"instruction": "q", "output": "a", "x": ' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_depth_limit_is_exact_and_can_be_raised(tmp_path, monkeypatch):
    path = _write(tmp_path / "d.jsonl", _nested(100) + "\n" + _nested(101) + "\n")
    ds = load_dataset(path)
    assert [r.line for r in ds.records] == [1] and [p.line for p in ds.problems] == [2]
    monkeypatch.setenv("STUDIO_DATA_MAX_DEPTH", "101")
    assert load_dataset(path).kept == 2


def test_brackets_inside_strings_do_not_count_as_depth(tmp_path):
    code = "[" * 500 + "{" * 500
    path = _write(tmp_path / "d.jsonl", json.dumps({"instruction": code, "output": "a"}) + "\n")
    ds = load_dataset(path)
    assert ds.kept == 1 and ds.records[0].messages[0]["content"] == code


def test_an_over_long_line_is_reported_without_being_held_and_the_next_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_MAX_RECORD_CHARS", "1000")
    long = json.dumps({"instruction": "x" * 5000, "output": "a"})
    ds = load_dataset(_write(tmp_path / "d.jsonl", f"{GOOD}\n{long}\n{GOOD}\n"))
    assert [r.line for r in ds.records] == [1, 3]
    (problem,) = ds.problems
    assert problem.line == 2 and f"{len(long):,} characters long" in problem.message
    assert "limit of 1,000" in problem.message and "STUDIO_DATA_MAX_RECORD_CHARS" in problem.message
    assert len(problem.raw) <= 2001  # the shown text is clipped too


def test_bounded_lines_never_returns_more_than_the_limit():
    import io

    from studio.core.data.rows import bounded_lines

    lines = list(bounded_lines(io.StringIO("ab\n" + "x" * 50 + "\ncd"), 10))
    assert lines[0] == "ab\n" and lines[2] == "cd"
    assert len(lines[1]) == 11 and lines[1].size == 50


@pytest.mark.parametrize("ext", [".json", ".csv", ".txt"])
def test_record_size_limit_applies_to_every_reader(tmp_path, monkeypatch, ext):
    monkeypatch.setenv("STUDIO_DATA_MAX_RECORD_CHARS", "500")
    big = "y" * 2000
    if ext == ".json":
        text = json.dumps([{"text": "a"}, {"text": big}, {"text": "b"}], indent=1)
    elif ext == ".csv":
        text = f"text\na\n{big}\nb\n"
    else:
        text = f"a\n\n{big}\n\nb\n"
    ds = load_dataset(_write(tmp_path / f"d{ext}", text))
    assert [r.text for r in ds.records] == ["a", "b"]
    (problem,) = ds.problems
    assert "more than the limit of 500" in problem.message


def test_a_csv_field_over_the_limit_is_one_bad_row(tmp_path, monkeypatch):
    monkeypatch.setenv("STUDIO_DATA_MAX_RECORD_CHARS", "500")
    text = 'instruction,output\nq,a\n"' + "z" * 2000 + '",a\nr,b\n'
    ds = load_dataset(_write(tmp_path / "d.csv", text))
    assert [r.line for r in ds.records] == [2, 4]
    assert "limit of 500" in ds.problems[0].message


def test_column_limit_refuses_the_file_and_says_how_to_raise_it(tmp_path, monkeypatch):
    header = ",".join(["instruction", "output"] + [f"c{i}" for i in range(1200)])
    path = _write(tmp_path / "wide.csv", header + "\n" + "q,a" + "," * 1200 + "\n")
    with pytest.raises(
        DataError, match=r"1,202 columns, more than the limit of 1,000.*STUDIO_DATA_MAX_COLUMNS"
    ):
        load_dataset(path)
    monkeypatch.setenv("STUDIO_DATA_MAX_COLUMNS", "2000")
    assert load_dataset(path).kept == 1


def test_column_limit_applies_to_parquet(tmp_path, monkeypatch):
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("STUDIO_DATA_MAX_COLUMNS", "5")
    pq.write_table(pa.table({f"c{i}": ["x"] for i in range(6)}), tmp_path / "w.parquet")
    with pytest.raises(DataError, match="6 columns, more than the limit of 5"):
        load_dataset(tmp_path / "w.parquet")


def test_limits_come_from_the_environment_and_a_typo_keeps_the_default(monkeypatch):
    assert limits.current() == limits.Limits(100, 16 * 1024 * 1024, 1000)
    monkeypatch.setenv("STUDIO_DATA_MAX_DEPTH", "lots")
    monkeypatch.setenv("STUDIO_DATA_MAX_RECORD_CHARS", "64_000_000")
    assert limits.current() == limits.Limits(100, 64_000_000, 1000)
    monkeypatch.setenv("STUDIO_DATA_MAX_DEPTH", "100000")
    assert limits.current().max_depth == 900  # Python's own stack is the ceiling


# ---------------------------------------------------------------- found by the fuzzers


def test_a_number_too_long_for_python_is_a_bad_record_not_a_crash(tmp_path):
    bad = '{"instruction": "q", "output": ' + "7" * 5000 + "}"
    for name, text in (
        ("d.jsonl", f"{GOOD}\n{bad}\n{GOOD}\n"),
        ("d.json", f"[{GOOD},\n{bad},\n{GOOD}]"),
    ):
        ds = load_dataset(_write(tmp_path / name, text))
        assert [r.line for r in ds.records] == [1, 3], name
        assert "a number has more digits than can be read" in ds.problems[0].message


def test_a_lone_surrogate_escape_is_a_bad_record(tmp_path):
    bad = '{"instruction": "q\\ud800", "output": "a"}'
    emoji = '{"instruction": "\\ud83d\\ude00", "output": "a"}'  # a pair: a real character
    ds = load_dataset(_write(tmp_path / "d.jsonl", f"{GOOD}\n{bad}\n{emoji}\n"))
    assert [r.line for r in ds.records] == [1, 3]
    assert ds.records[1].messages[0]["content"] == "😀"
    assert ds.problems[0].line == 2 and "unpaired surrogate" in ds.problems[0].message
    assert "instruction" in ds.problems[0].message


def test_a_stray_nul_costs_its_record_not_the_file(tmp_path):
    path = tmp_path / "d.json"
    path.write_bytes(("[\n  " + GOOD + ",\n  \x00,\n  " + GOOD + "\n]\n").encode())
    ds = load_dataset(path)
    assert [r.line for r in ds.records] == [2, 4] and [p.line for p in ds.problems] == [3]
    binary = tmp_path / "img.jsonl"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(DataError, match="binary"):
        load_dataset(binary)


@pytest.mark.parametrize("bad", ["]", "]:", "0]", "0[", "[", "]{"])
@pytest.mark.parametrize("wrapped", [False, True])
@pytest.mark.parametrize("at", [0, 1, 3])
def test_a_bracket_in_a_pretty_printed_list_costs_only_its_own_record(tmp_path, bad, wrapped, at):
    items = [GOOD] * 3
    items.insert(at, bad)
    body = "[\n" + ",\n".join("  " + i for i in items) + "\n]\n"
    if wrapped:
        body = '{"data": ' + body + "}\n"
    ds = load_dataset(_write(tmp_path / "d.json", body))
    assert ds.kept == 3, ds.problems
    # Reported where it is (a ']' last in the list closes it, so the list's own ']' after it
    # is the one reported, a line further on).
    assert ds.problems and ds.problems[0].line in (at + 2, at + 3), ds.problems
