"""A bad or unusual record never costs its neighbours: optional fields that first appear late,
broken quotes in CSV, broken wrapper files, and records the model's chat template rejects."""

from __future__ import annotations

import json

import pytest

from studio.core.data.formats import load_dataset


def _write(path, text: str):
    path.write_bytes(text.encode("utf-8"))
    return path


# ---------------------------------------------------------------- alpaca optional fields


def _late_optional_fields(n: int = 60) -> list[dict]:
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)]
    rows.append(
        {
            "instruction": "q",
            "input": "IMPORTANT CONTEXT",
            "system": "SYS",
            "history": [["earlier question", "earlier answer"]],
            "output": "a",
        }
    )
    return rows


def test_alpaca_jsonl_optional_fields_first_seen_after_the_sample_are_kept(tmp_path):
    rows = _late_optional_fields()
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(path)
    assert ds.format == "alpaca" and ds.problems == [] and ds.kept == 61
    assert ds.columns is None  # standard names: nothing to show as a mapping
    assert ds.records[-1].line == 61
    assert ds.records[-1].messages == [
        {"role": "system", "content": "SYS"},
        {"role": "user", "content": "earlier question"},
        {"role": "assistant", "content": "earlier answer"},
        {"role": "user", "content": "q\n\nIMPORTANT CONTEXT"},
        {"role": "assistant", "content": "a"},
    ]


def test_alpaca_json_array_late_bad_optional_field_is_reported_not_dropped(tmp_path):
    rows = _late_optional_fields()
    rows[-1]["input"] = 42  # a late row's optional field of the wrong type: reported, not ignored
    path = _write(tmp_path / "d.json", json.dumps(rows, indent=1))
    ds = load_dataset(path)
    assert ds.kept == 60
    (problem,) = ds.problems
    assert problem.field == "input" and "must be a string" in problem.message


def test_alpaca_guessed_columns_still_read_late_standard_optional_fields(tmp_path):
    rows = [{"prompt": f"q{i}", "response": f"a{i}"} for i in range(55)]
    rows.append({"prompt": "q", "input": "CTX", "system": "SYS", "response": "a"})
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(path)
    assert ds.columns == {"instruction": "prompt", "output": "response"}
    assert ds.records[-1].messages[0] == {"role": "system", "content": "SYS"}
    assert ds.records[-1].messages[1] == {"role": "user", "content": "q\n\nCTX"}


def test_alpaca_input_output_pairs_do_not_read_input_twice(tmp_path):
    rows = [{"input": f"q{i}", "output": f"a{i}"} for i in range(3)]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    ds = load_dataset(path)
    assert ds.records[0].messages == [
        {"role": "user", "content": "q0"},
        {"role": "assistant", "content": "a0"},
    ]


# ---------------------------------------------------------------- CSV / TSV quotes


def test_csv_unclosed_quote_loses_only_its_own_row(tmp_path):
    good = "".join(f"q{i},a{i}\n" for i in range(3, 10))
    path = _write(tmp_path / "d.csv", 'instruction,output\nq1,a1\n"q2 broken,a2\n' + good)
    ds = load_dataset(path)
    assert [r.line for r in ds.records] == [2, 4, 5, 6, 7, 8, 9, 10]
    assert ds.records[1].messages[0]["content"] == "q3"
    (problem,) = ds.problems
    assert problem.line == 3 and "quoted field" in problem.message
    assert problem.raw == '"q2 broken,a2'


def test_csv_unclosed_quote_in_the_last_column_running_to_the_end_of_file(tmp_path):
    # The swallowed text gives the row the right width: only running to the end gives it away.
    path = _write(tmp_path / "d.csv", 'instruction,output\r\nq1,a1\r\nq2,"a2 broken\r\nq3,a3')
    ds = load_dataset(path)
    assert [r.line for r in ds.records] == [2, 4]
    assert [p.line for p in ds.problems] == [3]


def test_csv_quoted_newlines_still_work_beside_a_broken_quote(tmp_path):
    text = 'prompt,response\n"multi\nline",ok\nq,"two\nlines"\n"broken,x\nlast,one\n'
    ds = load_dataset(_write(tmp_path / "d.csv", text))
    assert [r.line for r in ds.records] == [2, 4, 7]
    assert ds.records[0].messages[0]["content"] == "multi\nline"
    assert ds.records[1].messages[1]["content"] == "two\nlines"
    assert [p.line for p in ds.problems] == [6]


def test_wrong_width_rows_show_their_source_text(tmp_path):
    tsv = _write(tmp_path / "d.tsv", 'instruction\toutput\nq1\ta1\n"q2"\tx\ty\n')
    ds = load_dataset(tsv)
    assert [(p.line, p.raw) for p in ds.problems] == [(3, '"q2"\tx\ty')]
    # A correctly quoted multi-line row with too many values is one problem, not two.
    csv_path = _write(tmp_path / "d.csv", 'instruction,output\n"a\nb",c,d\nq,a\n')
    ds = load_dataset(csv_path)
    assert [r.line for r in ds.records] == [4]
    assert [(p.line, p.raw) for p in ds.problems] == [(2, '"a\nb",c,d')]


# ---------------------------------------------------------------- JSON wrapper vs JSON Lines


def test_broken_wrapper_with_one_compact_record_a_line_is_not_read_as_json_lines(tmp_path):
    text = (
        '{"data": [\n'
        '{"instruction": "a", "output": "b"},\n'
        '{"instruction": "c", "output" "d"},\n'
        '{"instruction": "e", "output": "f"}\n'
        "]}\n"
    )
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert ds.format == "alpaca"
    assert [(r.line, r.messages[0]["content"]) for r in ds.records] == [(2, "a"), (4, "e")]
    (problem,) = ds.problems
    assert problem.line == 3 and "malformed JSON" in problem.message


def test_json_lines_with_a_broken_first_line_saved_as_json_is_still_json_lines(tmp_path):
    good = [
        json.dumps(
            {
                "messages": [
                    {"role": "user", "content": f"q{i}"},
                    {"role": "assistant", "content": f"a{i}"},
                ]
            }
        )
        for i in range(3)
    ]
    for broken in (
        '{"messages": [{"role": "user" "content": "x"}]}',  # closes, then more lines follow
        '{"messages": [{"role": "user", "content": "x"}',  # never closes
    ):
        ds = load_dataset(_write(tmp_path / "d.json", "\n".join([broken, *good]) + "\n"))
        assert ds.format == "messages"
        assert [r.line for r in ds.records] == [2, 3, 4]
        assert [p.line for p in ds.problems] == [1]


def test_text_after_a_broken_wrapper_is_reported(tmp_path):
    text = '{"data": [\n  {"text": "a"},\n  {"text": "b",}\n]}\ntrailing junk\n'
    ds = load_dataset(_write(tmp_path / "d.json", text))
    assert [r.text for r in ds.records] == ["a"]
    assert [p.line for p in ds.problems] == [3, 5]
    assert ds.problems[1].raw.startswith("trailing junk")


# ---------------------------------------------------------------- chat template rejects a record

NO_SYSTEM_TEMPLATE = (
    # Like Gemma's: no system role, and it says so by raising from inside the template.
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
    "{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.fixture(scope="module")
def no_system_model(tmp_path_factory):
    from studio.core.tiny import build_model

    return build_model(
        tmp_path_factory.mktemp("tiny_nosys") / "model", chat_template=NO_SYSTEM_TEMPLATE
    )


def _chat(user: str, answer: str, system: str | None = None) -> str:
    turns = [{"role": "system", "content": system}] if system else []
    turns += [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    return json.dumps({"messages": turns}, ensure_ascii=False)


def test_build_examples_leaves_out_only_the_records_the_template_rejects(no_system_model):
    from studio.core.data.examples import build_examples
    from studio.core.data.records import Record
    from studio.core.data.templates import resolve_template
    from studio.core.models import load_tokenizer

    tok = load_tokenizer(str(no_system_model))
    records = [
        Record(1, [{"role": "user", "content": "q1"}, {"role": "assistant", "content": "a1"}]),
        Record(
            2,
            [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "q2"},
                {"role": "assistant", "content": "a2"},
            ],
        ),
        Record(3, [{"role": "user", "content": "q3"}, {"role": "assistant", "content": "a3"}]),
    ]
    examples, stats = build_examples(records, tok, resolve_template(tok), seq_len=128)
    assert [e.line for e in examples] == [1, 3]
    assert stats.template_errors == [(2, "System role not supported")]
    assert stats.kept == 2 and 2 in stats.dropped_lines and len(stats.lengths) == 2
    summary = stats.summary(128)
    assert summary.startswith("2 examples")
    assert "1 rejected by the model's chat template" in summary
    assert "line 2: System role not supported" in summary


def test_inspect_reports_a_record_the_template_rejects_and_exits_0(
    no_system_model, tmp_path, capsys
):
    from studio.cli import main

    path = tmp_path / "d.jsonl"
    path.write_text(
        "\n".join([_chat("q1", "a1"), _chat("q2", "a2", system="SYS"), _chat("q3", "a3")]) + "\n",
        encoding="utf-8",
    )
    argv = ["data", "inspect", str(path), "--model", str(no_system_model)]
    assert main([*argv, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["records"] == 2 and report["skipped"] == 1
    assert report["tokens"]["count"] == 2
    (error,) = report["errors"]
    assert error["line"] == 2 and "System role not supported" in error["message"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "line 2: the model's chat template rejects this record: System role not supported" in out


def test_inspect_when_the_template_rejects_every_record_exits_2_with_one_sentence(
    no_system_model, tmp_path, capsys
):
    from studio.cli import main

    path = tmp_path / "d.jsonl"
    path.write_text(_chat("q", "a", system="SYS") + "\n", encoding="utf-8")
    assert main(["data", "inspect", str(path), "--model", str(no_system_model)]) == 2
    err = capsys.readouterr().err
    assert "rejects every record" in err and "line 1" in err and "Traceback" not in err


# ---------------------------------------------------------------- garbage collector


@pytest.fixture
def gc_state():
    import gc

    threshold = gc.get_threshold()
    gc.collect()
    gc.set_threshold(10**9)  # no automatic collection during the test: only the import's own
    yield gc
    gc.set_threshold(*threshold)
    gc.unfreeze()
    gc.enable()


def _alpaca_file(tmp_path, n: int):
    rows = [{"instruction": f"q{i}", "output": f"a{i}"} for i in range(n)]
    return _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")


def test_a_small_import_does_not_freeze_the_heap(tmp_path, gc_state):
    path = _alpaca_file(tmp_path, 20)
    frozen = gc_state.get_freeze_count()
    assert load_dataset(path).kept == 20
    assert gc_state.isenabled() and gc_state.get_freeze_count() == frozen


def test_a_big_import_freezes_the_heap(tmp_path, gc_state, monkeypatch):
    from studio.core.data import formats

    monkeypatch.setattr(formats, "_FREEZE_MIN", 10)
    path = _alpaca_file(tmp_path, 20)
    frozen = gc_state.get_freeze_count()
    assert load_dataset(path).kept == 20
    assert gc_state.isenabled() and gc_state.get_freeze_count() > frozen  # the stall is avoided
