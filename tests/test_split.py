"""Train/validation split: by a seeded fraction or by a second file."""

from __future__ import annotations

import json

import pytest

from studio.core.config import DataConfig
from studio.core.data.records import Record
from studio.core.data.split import load_split, split_records
from studio.core.errors import DataError


def _records(n):
    return [Record(line=i + 1, text=f"doc {i}") for i in range(n)]


def test_split_is_deterministic_seeded_and_complete():
    recs = _records(100)
    train, val = split_records(recs, 0.2, seed=1)
    assert len(val) == 20 and len(train) == 80
    again = split_records(recs, 0.2, seed=1)
    assert again == (train, val)
    other = split_records(recs, 0.2, seed=2)
    assert [r.line for r in other[1]] != [r.line for r in val]
    # Nothing lost, nothing doubled, both parts in file order.
    assert sorted(r.line for r in train + val) == list(range(1, 101))
    assert [r.line for r in val] == sorted(r.line for r in val)
    assert [r.line for r in train] == sorted(r.line for r in train)


def test_split_edges():
    assert split_records(_records(10), 0.0, seed=0) == (_records(10), [])
    train, val = split_records(_records(3), 0.01, seed=0)
    assert len(val) == 1 and len(train) == 2  # a non-zero fraction holds out at least one
    train, val = split_records(_records(2), 0.9, seed=0)
    assert len(train) == 1 and len(val) == 1  # and always leaves one to train on
    assert split_records(_records(1), 0.5, seed=0) == (_records(1), [])
    with pytest.raises(DataError):
        split_records(_records(3), 1.0, seed=0)


def _jsonl(path, n, prefix="q"):
    rows = [{"instruction": f"{prefix}{i}", "output": "a"} for i in range(n)]
    path.write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    return str(path)


def test_load_split_by_fraction(tmp_path):
    cfg = DataConfig(path=_jsonl(tmp_path / "t.jsonl", 50), val_split=0.1)
    train, val, _ = load_split(cfg, seed=7)
    assert len(train.records) == 45 and len(val) == 5
    assert train.format == "alpaca"
    train2, val2, _ = load_split(cfg, seed=7)
    assert [r.line for r in val2] == [r.line for r in val]
    none_train, none_val, _ = load_split(DataConfig(path=cfg.path), seed=7)
    assert len(none_train.records) == 50 and none_val == []


def test_load_split_by_second_file_ignores_the_fraction(tmp_path):
    cfg = DataConfig(
        path=_jsonl(tmp_path / "t.jsonl", 10),
        eval_path=_jsonl(tmp_path / "v.jsonl", 3, prefix="v"),
        val_split=0.5,
    )
    train, val, val_file = load_split(cfg, seed=0)
    assert len(train.records) == 10
    assert [r.messages[0]["content"] for r in val] == ["v0", "v1", "v2"]
    assert val_file is not None and val_file.problems == []


def test_load_split_keeps_the_validation_files_problems(tmp_path):
    val_path = tmp_path / "v.jsonl"
    val_path.write_text(
        '{"instruction": "a", "output": "b"}\n{broken\n{"instruction": "c", "output": "d"}\n',
        encoding="utf-8",
    )
    cfg = DataConfig(path=_jsonl(tmp_path / "t.jsonl", 4), eval_path=str(val_path))
    _, val, val_file = load_split(cfg, seed=0)
    assert len(val) == 2
    assert [(p.line, p.message.split(":")[0]) for p in val_file.problems] == [(2, "malformed JSON")]


def test_load_split_rejects_text_validation_for_chat_training(tmp_path):
    (tmp_path / "v.txt").write_text("a paragraph\n", encoding="utf-8")
    cfg = DataConfig(path=_jsonl(tmp_path / "t.jsonl", 3), eval_path=str(tmp_path / "v.txt"))
    with pytest.raises(DataError, match="data.eval_path: .*both must be") as e:
        load_split(cfg, seed=0)
    assert e.value.field == "data.eval_path"


@pytest.mark.parametrize("content", [None, ""])
def test_a_bad_validation_file_is_named_as_such(tmp_path, content):
    val = tmp_path / "v.jsonl"
    if content is not None:
        val.write_text(content, encoding="utf-8")
    cfg = DataConfig(path=_jsonl(tmp_path / "t.jsonl", 3), eval_path=str(val))
    with pytest.raises(DataError, match="^data.eval_path: .*v.jsonl") as e:
        load_split(cfg, seed=0)
    assert e.value.field == "data.eval_path"  # not blamed on the training file


def test_load_split_without_a_path():
    with pytest.raises(DataError, match="data.path"):
        load_split(DataConfig(), seed=0)
