"""Importing files: every container (JSON, JSONL, CSV/TSV, Parquet, TXT), line numbers,
encodings, and the one-sentence errors for files that cannot be used at all."""

from __future__ import annotations

import json

import pytest

from studio.core.data.formats import load_dataset
from studio.core.errors import DataError

CHAT = [
    {"role": "system", "content": "你是一个乐于助人的助手。"},
    {"role": "user", "content": "讲个笑话 🙂"},
    {"role": "assistant", "content": "好的！🚀\n第二行"},
]


def _msgs(user: str, answer: str) -> dict:
    return {
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    }


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


# ---------------------------------------------------------------- JSONL


def test_jsonl_broken_line_in_the_middle_keeps_every_other_record(tmp_path):
    lines = [json.dumps(_msgs(f"q{i}", f"a{i}"), ensure_ascii=False) for i in range(5)]
    lines[2] = '{"messages": [{"role": "user", "content": "oops"'  # truncated line 3
    ds = load_dataset(_write(tmp_path / "d.jsonl", "\n".join(lines) + "\n"))
    assert ds.format == "messages"
    assert [r.line for r in ds.records] == [1, 2, 4, 5]
    assert [r.messages[0]["content"] for r in ds.records] == ["q0", "q1", "q3", "q4"]
    assert len(ds.problems) == 1
    p = ds.problems[0]
    assert p.line == 3
    assert p.message.startswith("malformed JSON")
    assert p.raw == lines[2]


def test_jsonl_blank_lines_are_skipped_silently_and_lines_still_count(tmp_path):
    text = "\n" + json.dumps(_msgs("a", "b")) + "\n   \n\n" + json.dumps(_msgs("c", "d")) + "\n\n"
    ds = load_dataset(_write(tmp_path / "d.jsonl", text))
    assert [r.line for r in ds.records] == [2, 5]
    assert ds.problems == []


def test_jsonl_crlf_bom_chinese_and_emoji(tmp_path):
    rows = [{"messages": CHAT}, _msgs("第二个问题", "答案 👍")]
    text = "\r\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\r\n"
    ds = load_dataset(_write(tmp_path / "d.jsonl", "\ufeff" + text))
    assert ds.problems == []
    assert ds.records[0].messages == CHAT
    assert ds.records[1].messages[1]["content"] == "答案 👍"
    assert [r.line for r in ds.records] == [1, 2]


def test_jsonl_line_separator_characters_inside_strings_do_not_split_records(tmp_path):
    row = _msgs("a\u2028b\u0085c", "d\u2029e")
    ds = load_dataset(_write(tmp_path / "d.jsonl", json.dumps(row, ensure_ascii=False) + "\n"))
    assert ds.records[0].messages[0]["content"] == "a\u2028b\u0085c"


def test_utf16_with_bom_is_read(tmp_path):
    text = json.dumps(_msgs("héllo 你好", "ok")) + "\n"
    ds = load_dataset(_write(tmp_path / "d.jsonl", "\ufeff" + text, "utf-16-le"))
    assert ds.records[0].messages[0]["content"] == "héllo 你好"


def test_progress_is_reported_and_ends_at_the_total(tmp_path):
    path = _write(
        tmp_path / "d.jsonl", "".join(json.dumps(_msgs(f"q{i}", "a")) + "\n" for i in range(20000))
    )
    calls = []
    load_dataset(path, progress=lambda done, total: calls.append((done, total)))
    total = path.stat().st_size
    assert len(calls) >= 2
    assert calls[-1] == (total, total)
    assert all(0 <= d <= t == total for d, t in calls)
    assert [d for d, _ in calls] == sorted(d for d, _ in calls)


# ---------------------------------------------------------------- JSON


def test_json_array_reports_the_line_where_each_record_starts(tmp_path):
    rows = [
        _msgs("q0", "a0"),
        {"messages": [{"role": "robot", "content": "x"}]},
        {"messages": CHAT},
    ]
    text = json.dumps(rows, indent=2, ensure_ascii=False)
    ds = load_dataset(_write(tmp_path / "d.json", text))
    starts = [i + 1 for i, line in enumerate(text.split("\n")) if line == "  {"]
    assert [r.line for r in ds.records] == [starts[0], starts[2]]
    assert ds.problems[0].line == starts[1]
    assert ds.problems[0].field == "messages[0].role"
    assert "robot" in ds.problems[0].message
    assert json.loads(ds.problems[0].raw) == rows[1]


def test_json_array_compact_on_one_line_and_crlf(tmp_path):
    text = "[\r\n" + ",\r\n".join(json.dumps(_msgs(f"q{i}", "a")) for i in range(3)) + "\r\n]\r\n"
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [r.line for r in ds.records] == [2, 3, 4]
    one_line = load_dataset(_write(tmp_path / "e.json", json.dumps([_msgs("a", "b")] * 3)))
    assert [r.line for r in one_line.records] == [1, 1, 1]


def test_json_array_malformed_element_loses_only_itself(tmp_path):
    good = json.dumps(_msgs("q", "a"), indent=2).replace("\n", "\n  ")
    bad = '{\n    "messages": [{"role": "user" "content": "missing comma"}]\n  }'
    text = f"[\n  {good},\n  {bad},\n  {good}\n]\n"
    ds = load_dataset(_write(tmp_path / "d.json", text))
    starts = [i + 1 for i, line in enumerate(text.split("\n")) if line.startswith("  {")]
    assert [r.line for r in ds.records] == [starts[0], starts[2]]
    assert [p.line for p in ds.problems] == [starts[1]]
    assert ds.problems[0].message.startswith("malformed JSON")
    assert ds.problems[0].raw == bad


def test_json_array_malformed_element_compact(tmp_path):
    text = '[{"text": "one"}, {"text": "two" "x": 1}, {"text": "three"}]'
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [r.text for r in ds.records] == ["one", "three"]
    assert len(ds.problems) == 1


def test_json_object_holding_one_list(tmp_path):
    text = json.dumps(
        {"version": 2, "data": [{"text": "甲"}, {"text": "乙"}]}, indent=2, ensure_ascii=False
    )
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert ds.format == "text"
    assert [r.text for r in ds.records] == ["甲", "乙"]
    assert [r.line for r in ds.records] == [4, 7]


def test_json_single_record_object_is_one_record(tmp_path):
    ds = load_dataset(
        _write(tmp_path / "d.json", json.dumps({"messages": CHAT}, ensure_ascii=False))
    )
    assert len(ds.records) == 1 and ds.records[0].messages == CHAT


def test_jsonl_saved_as_json_is_read_as_lines(tmp_path):
    text = "\n".join(json.dumps(_msgs(f"q{i}", "a")) for i in range(3))
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [r.line for r in ds.records] == [1, 2, 3]


def test_json_list_of_strings_is_text(tmp_path):
    ds = load_dataset(_write(tmp_path / "d.json", json.dumps(["first doc", "second doc"])))
    assert ds.format == "text"
    assert [r.text for r in ds.records] == ["first doc", "second doc"]


@pytest.mark.parametrize(
    "text, words",
    [
        ("42", "number"),
        ('{"a": 1, "b": "x"}', "no list"),
        ('{"a": [1], "b": [2]}', "2 lists"),
    ],
)
def test_json_of_the_wrong_shape_is_one_sentence(tmp_path, text, words):
    with pytest.raises(DataError) as e:
        load_dataset(_write(tmp_path / "d.json", text))
    assert words in str(e.value)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- CSV / TSV


def test_csv_quoted_newlines_bom_crlf_and_line_numbers(tmp_path):
    text = (
        "\ufeffquestion,context,answer\r\n"
        'What is 1+1?,,"Two.\r\nReally, two."\r\n'
        '"多行\r\n问题 🙂",背景,答案\r\n'
        "\r\n"
        "Third,ctx,Three\r\n"
    )
    ds = load_dataset(_write(tmp_path / "d.csv", text))
    assert ds.format == "alpaca"
    assert ds.columns == {"instruction": "question", "input": "context", "output": "answer"}
    assert ds.available_columns == ["question", "context", "answer"]
    assert [r.line for r in ds.records] == [2, 4, 7]
    assert ds.records[0].messages == [
        {"role": "user", "content": "What is 1+1?"},
        {"role": "assistant", "content": "Two.\r\nReally, two."},
    ]
    assert ds.records[1].messages[0]["content"] == "多行\r\n问题 🙂\n\n背景"


def test_csv_bad_rows_are_problems_with_their_physical_line(tmp_path):
    text = 'prompt,response\n"a\nb",ok\nonly-one-value\nq,\nq2,a2\n'
    ds = load_dataset(_write(tmp_path / "d.csv", text))
    assert [r.line for r in ds.records] == [2, 6]
    assert [(p.line, p.field) for p in ds.problems] == [(4, ""), (5, "response")]
    assert "empty assistant turn" in ds.problems[1].message
    assert json.loads(ds.problems[1].raw) == {"prompt": "q", "response": ""}


def test_tsv_and_column_override(tmp_path):
    text = "q\tsys\tlong answer\tshort\nhi\tbe brief\tHello there!\tHi\n"
    ds = load_dataset(
        _write(tmp_path / "d.tsv", text),
        columns={"instruction": "q", "output": "short", "system": "sys"},
    )
    assert ds.columns == {"instruction": "q", "output": "short", "system": "sys"}
    assert ds.records[0].messages == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hi"},
    ]


def test_mapped_column_that_does_not_exist_names_it_and_lists_the_columns(tmp_path):
    path = _write(tmp_path / "d.csv", "question,answer\nq,a\n")
    with pytest.raises(DataError) as e:
        load_dataset(path, columns={"output": "reply"})
    msg = str(e.value)
    assert "'reply'" in msg and "question, answer" in msg


def test_csv_with_no_recognisable_output_column_says_so(tmp_path):
    with pytest.raises(DataError) as e:
        load_dataset(_write(tmp_path / "d.csv", "foo,bar\n1,2\n"), format="alpaca")
    assert "foo, bar" in str(e.value)


def test_csv_header_only_is_empty(tmp_path):
    with pytest.raises(DataError, match="no records"):
        load_dataset(_write(tmp_path / "d.csv", "instruction,output\n"))


# ---------------------------------------------------------------- Parquet


def test_parquet_table_and_nested_messages(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(
        pa.table({"prompt": ["你好", "hi"], "completion": ["世界 🌍", ""]}), tmp_path / "a.parquet"
    )
    ds = load_dataset(tmp_path / "a.parquet")
    assert ds.format == "alpaca"
    assert ds.columns == {"instruction": "prompt", "output": "completion"}
    assert ds.records[0].messages[1]["content"] == "世界 🌍"
    assert [(p.line, p.field) for p in ds.problems] == [(2, "completion")]

    pq.write_table(pa.table({"messages": [CHAT]}), tmp_path / "m.parquet")
    ds = load_dataset(tmp_path / "m.parquet")
    assert ds.format == "messages" and ds.records[0].messages == CHAT


def test_damaged_parquet_is_one_sentence(tmp_path):
    with pytest.raises(DataError, match="Parquet"):
        load_dataset(_write(tmp_path / "d.parquet", "PAR1 not really"))


# ---------------------------------------------------------------- TXT


def test_txt_paragraphs_are_records_at_their_first_line(tmp_path):
    text = "\ufeffFirst paragraph\r\nstill first.\r\n\r\n\r\n第二段 🙂\r\n   \r\nThird"
    ds = load_dataset(_write(tmp_path / "d.txt", text))
    assert ds.format == "text"
    assert [(r.line, r.text) for r in ds.records] == [
        (1, "First paragraph\nstill first."),
        (5, "第二段 🙂"),
        (7, "Third"),
    ]


# ---------------------------------------------------------------- files that cannot be used


def _error(path, **kw) -> str:
    with pytest.raises(DataError) as e:
        load_dataset(path, **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_missing_file(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.jsonl")


@pytest.mark.parametrize("name", ["e.jsonl", "e.json", "e.csv", "e.txt"])
def test_empty_files(tmp_path, name):
    assert "empty" in _error(_write(tmp_path / name, ""))
    assert "empty" in _error(_write(tmp_path / ("ws-" + name), "\n  \r\n\n"))


def test_binary_file(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(bytes(range(256)) * 4)
    assert "binary" in _error(path)
    gz = tmp_path / "d.json"
    gz.write_bytes(b"\x1f\x8b\x08\x00rest")
    assert "gzip" in _error(gz)


def test_undecodable_encoding_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    msg = _error(path)
    assert "UTF-8" in msg and "line 2" in msg
    csv_path = tmp_path / "d.csv"
    csv_path.write_bytes(b"text\nok\ncaf\xe9\n")
    assert "line 3" in _error(csv_path)


def test_no_valid_record_mentions_the_first_problems_with_lines(tmp_path):
    text = "\n".join(
        json.dumps({"messages": [{"role": "user", "content": f"q{i}"}]}) for i in range(5)
    )
    msg = _error(_write(tmp_path / "d.jsonl", text))
    assert "no valid record" in msg
    assert "line 1:" in msg and "line 3:" in msg and "2 more" in msg
    assert "assistant" in msg


def test_unrecognised_records_say_what_is_expected(tmp_path):
    msg = _error(_write(tmp_path / "d.jsonl", '{"foo": 1, "bar": 2}\n'))
    assert "foo, bar" in msg and "instruction" in msg


def test_json_compact_broken_element_with_nested_turns_does_not_end_the_list(tmp_path):
    # The broken record holds a valid nested turn followed by "]": that must not be taken for
    # the next record or for the end of the list.
    bad = '{"messages": [{"role": "user" "content": "x"}, {"role": "assistant", "content": "y"}]}'
    text = f"[{json.dumps(_msgs('a', 'b'))}, {bad}, {json.dumps(_msgs('c', 'd'))}]"
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [r.messages[0]["content"] for r in ds.records] == ["a", "c"]
    assert len(ds.problems) == 1 and ds.problems[0].raw.startswith(
        '{"messages": [{"role": "user" "content"'
    )


def test_json_wrapper_with_a_broken_last_record_keeps_the_others(tmp_path):
    text = '{"data": [\n  {"text": "a"},\n  {"text": "b",}\n  ],\n  "count": 2\n}\n'
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [(r.line, r.text) for r in ds.records] == [(2, "a")]
    assert [p.line for p in ds.problems] == [3]
    truncated = '{"data": [\n  {"text": "a"},\n  {"text": "b'
    ds = load_dataset(_write(tmp_path / "t.json", truncated))
    assert [r.text for r in ds.records] == ["a"] and [p.line for p in ds.problems] == [3]


def test_csv_long_fields_are_fine(tmp_path):
    long = "长" * 300_000
    ds = load_dataset(_write(tmp_path / "d.csv", f'text\n"{long}"\nshort\n'))
    assert [len(r.text) for r in ds.records] == [300_000, 5]


def test_a_folder_is_not_a_data_file(tmp_path):
    assert "folder" in _error(tmp_path)
