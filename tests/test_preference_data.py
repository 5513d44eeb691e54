"""Preference pair files: TRL's record shapes, bad records listed by line (others kept),
`studio data inspect`, and a file that does not fit the training mode."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from studio.core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.data.formats import detect_format, load_dataset
from studio.core.errors import ConfigError
from studio.core.train import train

U = {"role": "user", "content": "Name a colour."}
SYS = {"role": "system", "content": "Be brief."}


def _write(path, rows):
    path.write_text("\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n", "utf-8")
    return path


def _answer(text):
    return [{"role": "assistant", "content": text}]


@pytest.mark.parametrize(
    "row, prompt",
    [
        # standard: plain text, the prompt is the user's turn
        ({"prompt": "Name a colour.", "chosen": "Blue.", "rejected": "No."}, [U]),
        # conversational
        ({"prompt": [SYS, U], "chosen": _answer("Blue."), "rejected": _answer("No.")}, [SYS, U]),
        # implicit prompt: whole conversations sharing the prompt's turns
        ({"chosen": [SYS, U] + _answer("Blue."), "rejected": [SYS, U] + _answer("No.")}, [SYS, U]),
        # UltraFeedback: a prompt string, and conversations that repeat it
        ({"prompt": "Name a colour.", "chosen": [U] + _answer("Blue."),
          "rejected": [U] + _answer("No.")}, [U]),
        # Intel/orca_dpo_pairs: system and question
        ({"system": "Be brief.", "question": "Name a colour.", "chosen": "Blue.",
          "rejected": "No."}, [SYS, U]),
    ],
)  # fmt: skip
def test_trl_record_shapes_become_pairs(tmp_path, row, prompt):
    ds = _load(tmp_path, [row])
    assert ds.format == "pairs" and not ds.problems
    (r,) = ds.records
    assert (r.messages, r.chosen, r.rejected, r.is_pair) == (prompt, "Blue.", "No.", True)


def _load(tmp_path, rows, format="auto"):
    return load_dataset(_write(tmp_path / "pairs.jsonl", rows), format=format)


def test_pairs_are_detected_before_alpaca():
    assert detect_format([{"prompt": "a", "chosen": "b", "rejected": "c"}]) == "pairs"
    assert detect_format([{"chosen": [U], "rejected": [U]}]) == "pairs"


GOOD = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}


def test_every_bad_pair_is_listed_with_its_line_and_the_rest_kept(tmp_path):
    bad = [
        {"prompt": "2+2?", "chosen": "4"},  # line 2: no rejected
        {"prompt": "x", "chosen": "", "rejected": "y"},  # 3
        {"chosen": "a", "rejected": "b"},  # 4: no prompt, and not conversations
        {"prompt": [U, *_answer("Blue.")], "chosen": "a", "rejected": "b"},  # 5
        {"prompt": "Name a colour.", "chosen": [{"role": "user", "content": "Other"},
                                                *_answer("a")], "rejected": "b"},  # 6
        {"chosen": [U, *_answer("a")], "rejected": [SYS, U, *_answer("b")]},  # 7
        {"prompt": "q", "chosen": _answer("a"), "rejected": [{"role": "user", "content": "b"}]},
    ]  # fmt: skip
    ds = _load(tmp_path, [GOOD, *bad, GOOD])
    assert ds.kept == 2 and [r.line for r in ds.records] == [1, 9]
    got = {p.line: (p.field, p.message) for p in ds.problems}
    assert sorted(got) == [2, 3, 4, 5, 6, 7, 8]
    assert got[2] == (
        "rejected",
        "the record has no 'rejected' answer; each pair needs prompt, chosen and rejected",
    )
    assert got[3] == ("chosen", "chosen: empty answer")
    assert got[4][0] == "prompt" and "must be whole conversations" in got[4][1]
    assert "must end with the user's" in got[5][1]
    assert "not the record's prompt" in got[6][1]
    assert "one different assistant answer" in got[7][1]
    assert "must be the assistant's" in got[8][1]


def test_data_inspect_reports_the_missing_rejected_by_line(tmp_path):
    path = _write(tmp_path / "pairs.jsonl", [GOOD, GOOD, {"prompt": "a", "chosen": "b"}, GOOD])
    out = subprocess.run(
        [sys.executable, "-m", "studio", "data", "inspect", str(path), "--json"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["format"], report["records"], report["skipped"]) == ("pairs", 3, 1)
    assert report["errors"] == [
        {
            "line": 3,
            "field": "rejected",
            "message": "the record has no 'rejected' answer; each pair needs prompt, chosen "
            "and rejected",
        }
    ]


def _config(model, data, mode, tmp_path):
    return RunConfig(
        model=ModelConfig(path=str(model)),
        data=DataConfig(path=str(data)),
        train=TrainConfig(max_steps=1, seq_len=64, mode=mode),
        output=str(tmp_path / "run"),
    )


def test_a_pair_file_for_sft_and_an_sft_file_for_dpo_are_one_sentence(tiny_model, tmp_path):
    pairs = _write(tmp_path / "pairs.jsonl", [GOOD] * 3)
    answers = _write(tmp_path / "sft.jsonl", [{"messages": [U, *_answer("Blue.")]}] * 3)
    with pytest.raises(ConfigError, match="--mode dpo, orpo or simpo, not sft") as e:
        next(train(_config(tiny_model, pairs, "sft", tmp_path)))
    assert e.value.field == "train.mode" and "pairs.jsonl holds preference pairs" in str(e.value)
    with pytest.raises(ConfigError, match="train it with --mode sft") as e:
        next(train(_config(tiny_model, answers, "dpo", tmp_path)))
    assert "sft.jsonl is in the messages format" in str(e.value)


_turn = st.fixed_dictionaries(
    {"role": st.sampled_from(["user", "assistant", "system", "gpt", "bogus", 3])},
    optional={"content": st.one_of(st.text(max_size=5), st.none(), st.integers())},
)
_value = st.one_of(st.none(), st.text(max_size=5), st.integers(), st.lists(_turn, max_size=4))


@settings(max_examples=300, deadline=None)
@given(
    row=st.dictionaries(
        st.sampled_from(["prompt", "chosen", "rejected", "system", "question"]), _value
    )
)
def test_any_near_pair_is_a_pair_or_a_reason(row):
    """Whatever shape a record has, it becomes a pair or a Problem-ready Invalid, never a crash."""
    from studio.core.data.formats import Invalid
    from studio.core.data.pair_records import convert_pair

    try:
        r = convert_pair(row, 1)
    except Invalid as e:
        assert e.message and isinstance(e.field, str)
        return
    assert r.messages[-1]["role"] == "user" and r.chosen.strip() and r.rejected.strip()
