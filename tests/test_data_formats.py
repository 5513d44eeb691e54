"""Format detection, column guesses and the per-record validation rules of each format."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio.core.data.formats import detect_format, guess_columns, load_dataset
from studio.core.errors import DataError


def _load(tmp_path, rows, format="auto", name="d.jsonl"):
    path = tmp_path / name
    path.write_text(
        "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", encoding="utf-8"
    )
    return load_dataset(path, format=format)


def _problems(ds):
    return [(p.line, p.field, p.message) for p in ds.problems]


# ---------------------------------------------------------------- detection


@pytest.mark.parametrize(
    "row, expected",
    [
        ({"messages": [{"role": "user", "content": "a"}]}, "messages"),
        ({"conversations": [{"from": "human", "value": "a"}]}, "sharegpt"),
        ({"instruction": "a", "input": "", "output": "b"}, "alpaca"),
        ({"prompt": "a", "completion": "b"}, "alpaca"),
        ({"text": "a"}, "text"),
        ("just a string", "text"),
    ],
)
def test_detect_format(row, expected):
    assert detect_format([row]) == expected


def test_detect_format_follows_the_majority_and_fails_clearly():
    rows = [{"text": "a"}, {"messages": []}, {"messages": []}]
    assert detect_format(rows) == "messages"
    with pytest.raises(DataError, match="keys foo, bar"):
        detect_format([{"foo": 1, "bar": 2}])


@pytest.mark.parametrize(
    "names, expected",
    [
        (
            ["question", "context", "answer"],
            {"instruction": "question", "input": "context", "output": "answer"},
        ),
        (["prompt", "response"], {"instruction": "prompt", "output": "response"}),
        (
            ["Prompt", "Completion", "System Prompt"],
            {"instruction": "Prompt", "output": "Completion", "system": "System Prompt"},
        ),
        (["input", "output"], {"instruction": "input", "output": "output"}),
        (
            ["instruction", "input", "output", "system"],
            {
                "instruction": "instruction",
                "input": "input",
                "output": "output",
                "system": "system",
            },
        ),
        (["id", "text"], {"text": "text"}),
        (["a", "b"], {}),
    ],
)
def test_guess_columns(names, expected):
    assert guess_columns(names) == expected


# ---------------------------------------------------------------- messages / sharegpt


def test_messages_rules_each_problem_names_line_and_field(tmp_path):
    u = {"role": "user", "content": "q"}
    a = {"role": "assistant", "content": "a"}
    rows = [
        {"messages": [u, a]},  # 1 ok
        {"messages": [u, {"role": "tool", "content": "x"}, a]},  # 2 unknown role
        {"messages": [u, {"role": "assistant", "content": "  \n"}]},  # 3 empty assistant
        {"msgs": [u, a]},  # 4 wrong key (detected as messages by the majority)
        {"messages": [u, {"role": "assistant", "content": 7}]},  # 5 content not a string
        {"messages": [u, a, u]},  # 6 ends with user
        {"messages": [{"role": "system", "content": "s"}, a]},  # 7 no user turn
        {"messages": []},  # 8 empty
        {"messages": [u, a, {"role": "system", "content": "s"}, u, a]},  # 9 system in the middle
        {"messages": [u, {"role": "assistant"}]},  # 10 missing content
        {"messages": "hello"},  # 11 not a list
        [u, a],  # 12 not an object
        {"messages": [u, "a"]},  # 13 turn not an object
    ]
    ds = _load(tmp_path, rows)
    assert ds.format == "messages"
    assert [r.line for r in ds.records] == [1]
    got = {line: (field, msg) for line, field, msg in _problems(ds)}
    assert got[2] == (
        "messages[1].role",
        "messages[1].role: unknown role 'tool' (expected system, user or assistant)",
    )
    assert got[3][0] == "messages[1].content" and "empty assistant turn" in got[3][1]
    assert got[4] == ("messages", "messages: missing field")
    assert got[5][0] == "messages[1].content" and "must be a string, got number" in got[5][1]
    assert got[6][0] == "messages" and "ends with a user turn" in got[6][1]
    assert got[7][0] == "messages" and "no user turn" in got[7][1]
    assert "empty" in got[8][1]
    assert got[9][0] == "messages[2].role" and "only come first" in got[9][1]
    assert got[10] == ("messages[1].content", "messages[1].content: missing field")
    assert "list of turns" in got[11][1]
    assert "got list" in got[12][1]
    assert got[13][0] == "messages[1]"
    assert sorted(got) == list(range(2, 14))


def test_sharegpt_aliases_and_system(tmp_path):
    rows = [
        {
            "system": "Be nice.",
            "conversations": [
                {"from": "human", "value": "你好"},
                {"from": "gpt", "value": "🙂"},
                {"from": "user", "value": "again"},
                {"from": "model", "value": "ok"},
            ],
        },
        {
            "conversations": [
                {"from": "system", "value": "S"},
                {"from": "Human", "value": "q"},
                {"from": "GPT", "value": "a"},
            ]
        },
        {"conversations": [{"from": "human", "value": "q"}, {"from": "bot", "value": "a"}]},
    ]
    ds = _load(tmp_path, rows)
    assert ds.format == "sharegpt"
    assert ds.records[0].messages == [
        {"role": "system", "content": "Be nice."},
        {"role": "user", "content": "你好"},
        {"role": "assistant", "content": "🙂"},
        {"role": "user", "content": "again"},
        {"role": "assistant", "content": "ok"},
    ]
    assert [m["role"] for m in ds.records[1].messages] == ["system", "user", "assistant"]
    assert _problems(ds) == [
        (
            3,
            "conversations[1].from",
            "conversations[1].from: unknown role 'bot' (expected system, user or assistant)",
        )
    ]


def test_openai_text_parts_are_joined(tmp_path):
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    ds = _load(
        tmp_path,
        [{"messages": [{"role": "user", "content": parts}, {"role": "assistant", "content": "c"}]}],
    )
    assert ds.records[0].messages[0] == {"role": "user", "content": "ab"}


def test_extra_keys_in_turns_are_dropped(tmp_path):
    ds = _load(
        tmp_path,
        [
            {
                "messages": [
                    {"role": "user", "content": "q", "name": "x"},
                    {"role": "assistant", "content": "a", "weight": 1},
                ]
            }
        ],
    )
    assert ds.records[0].messages == [
        {"role": "user", "content": "q"},
        {"role": "assistant", "content": "a"},
    ]


# ---------------------------------------------------------------- alpaca


def test_alpaca_with_input_system_and_history(tmp_path):
    rows = [
        {
            "system": "S",
            "history": [["h1", "r1"], ["h2", "r2"]],
            "instruction": "Translate",
            "input": "猫",
            "output": "cat",
        }
    ]
    ds = _load(tmp_path, rows)
    assert ds.format == "alpaca"
    assert ds.records[0].messages == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "h1"},
        {"role": "assistant", "content": "r1"},
        {"role": "user", "content": "h2"},
        {"role": "assistant", "content": "r2"},
        {"role": "user", "content": "Translate\n\n猫"},
        {"role": "assistant", "content": "cat"},
    ]


def test_alpaca_rules(tmp_path):
    rows = [
        {"instruction": "i", "input": None, "output": "o"},  # 1 ok: null input is no input
        {"instruction": "i", "output": ""},  # 2 empty assistant
        {"instruction": "i"},  # 3 missing output
        {"instruction": 3, "output": "o"},  # 4 not a string
        {"instruction": "", "input": "", "output": "o"},  # 5 no user turn
        {"instruction": "", "input": "only input", "output": "o"},  # 6 ok
        {"instruction": "i", "output": "o", "history": [["only one"]]},  # 7 bad history
        {"instruction": "i", "output": "o", "history": "x"},  # 8 bad history
    ]
    ds = _load(tmp_path, rows, format="alpaca")
    assert [r.line for r in ds.records] == [1, 6]
    assert ds.records[1].messages[0]["content"] == "only input"
    fields = {line: field for line, field, _ in _problems(ds)}
    assert fields == {
        2: "output",
        3: "output",
        4: "instruction",
        5: "instruction",
        7: "history[0]",
        8: "history",
    }
    assert "missing field" in ds.problems[1].message


# ---------------------------------------------------------------- text and overrides


def test_text_rules_and_format_override(tmp_path):
    rows = [{"text": "doc one"}, {"text": ""}, {"text": ["x"]}, {"body": "b"}]
    ds = _load(tmp_path, rows)
    assert ds.format == "text"
    assert [r.text for r in ds.records] == ["doc one"]
    assert [(line, f) for line, f, _ in _problems(ds)] == [(2, "text"), (3, "text"), (4, "text")]
    assert all(r.messages is None and r.is_text for r in ds.records)


def test_forcing_a_format_that_does_not_fit_lists_problems(tmp_path):
    with pytest.raises(DataError) as e:
        _load(tmp_path, [{"text": "a"}, {"text": "b"}], format="messages")
    assert "line 1: messages: missing field" in str(e.value)


def test_unknown_format_name():
    with pytest.raises(DataError, match="unknown data format"):
        load_dataset("x.jsonl", format="csv")


def test_raw_is_truncated_for_huge_records(tmp_path):
    ds = _load(tmp_path, [{"text": "ok"}, {"text": "", "pad": "x" * 10000}])
    assert 1990 < len(ds.problems[0].raw) <= 2001


# ---------------------------------------------------------------- property: nothing is lost


_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=12)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.one_of(st.tuples(_TEXT, _TEXT), st.just(None)), min_size=1, max_size=12))
def test_every_line_is_kept_or_reported_and_valid_records_survive(tmp_path_factory, items):
    """A random mix of good records, bad records and broken lines: each non-blank line is
    exactly one record or one problem, at its own line number, with its content intact."""
    lines = []
    for item in items:
        if item is None:
            lines.append('{"messages": [')  # malformed JSON
        else:
            q, a = item
            lines.append(
                json.dumps(
                    {
                        "messages": [
                            {"role": "user", "content": q},
                            {"role": "assistant", "content": a},
                        ]
                    },
                    ensure_ascii=False,
                )
            )
    lines.append(
        json.dumps(
            {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
        )
    )
    path = tmp_path_factory.mktemp("prop") / "d.jsonl"
    path.write_text("\n".join(lines), encoding="utf-8")
    ds = load_dataset(path)
    seen = sorted([r.line for r in ds.records] + [p.line for p in ds.problems])
    assert seen == list(range(1, len(lines) + 1))
    for r in ds.records:
        item = (items + [("q", "a")])[r.line - 1]
        assert r.messages == [
            {"role": "user", "content": item[0]},
            {"role": "assistant", "content": item[1]},
        ]
        assert item[1].strip()


def test_empty_column_mappings_are_ignored(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("body,notes\nhello world,x\n", encoding="utf-8")
    ds = load_dataset(path, columns={"instruction": "", "output": None, "text": "body"})
    assert ds.format == "text" and ds.columns == {"text": "body"}
    assert ds.records[0].text == "hello world"
