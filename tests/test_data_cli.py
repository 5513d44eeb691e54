"""`studio data inspect`: text and JSON output, exit codes, and the --model report."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import studio
from studio.cli import main
from studio.commands.data import mark

REPO = Path(studio.__file__).resolve().parent.parent


def _chat(q: str, a: str) -> str:
    row = {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
    return json.dumps(row, ensure_ascii=False)


@pytest.fixture
def mixed(tmp_path):
    lines = [_chat("你好", "世界 🙂"), "{not json", _chat("q", ""), "", _chat("hi", "hello")]
    path = tmp_path / "mixed.jsonl"
    path.write_text("\r\n".join(lines) + "\r\n", encoding="utf-8")
    return path


def test_inspect_text_lists_format_counts_and_every_error(mixed, capsys):
    assert main(["data", "inspect", str(mixed)]) == 0
    out = capsys.readouterr().out
    assert "format:  messages" in out
    assert "2 kept, 2 skipped" in out
    assert "line 2: malformed JSON" in out
    assert "line 3: messages[1].content: empty assistant turn" in out


def test_inspect_json_is_one_object(mixed, capsys):
    assert main(["data", "inspect", str(mixed), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "messages"
    assert report["records"] == 2 and report["skipped"] == 2
    assert [e["line"] for e in report["errors"]] == [2, 3]
    assert "messages[1].content" in report["errors"][1]["message"]


def test_inspect_format_override_and_columns(tmp_path, capsys):
    path = tmp_path / "d.csv"
    path.write_text("q,a,notes\nhello,world,x\n", encoding="utf-8")
    assert (
        main(["data", "inspect", str(path), "--json", "--columns", "instruction=q,output=notes"])
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "alpaca"
    assert report["columns"] == {"instruction": "q", "output": "notes"}
    assert main(["data", "inspect", str(path), "--format", "text"]) == 2
    assert "no column for the text" in capsys.readouterr().err


def test_inspect_with_no_valid_record_exits_2_with_one_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    path.write_text("{oops\n", encoding="utf-8")
    assert main(["data", "inspect", str(path), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: bad.jsonl has no valid record: line 1: malformed JSON")
    assert captured.err.count("\n") == 1


@pytest.mark.parametrize("content", [b"", b"\x00\x01\x02binary\x00"])
def test_subprocess_exit_2_on_empty_and_binary_files_without_traceback(tmp_path, content):
    path = tmp_path / "d.jsonl"
    path.write_bytes(content)
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run(
        [sys.executable, "-m", "studio", "data", "inspect", str(path)],
        capture_output=True,
        text=True,
        encoding="utf-8",
        env=env,
        timeout=120,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: d.jsonl ")
    assert ("empty" if not content else "binary") in proc.stderr
    assert "Traceback" not in proc.stderr


def test_mark_wraps_trained_runs():
    segs = [{"text": "<u>q", "trained": False}, {"text": "a<end>", "trained": True}]
    assert mark(segs, colour=False) == "<u>q[[a<end>]]"
    coloured = mark(segs, colour=True)
    assert "\033[32ma<end>" in coloured and "[[" not in coloured


def test_inspect_with_model_reports_token_stats_and_marked_example(tiny_model, mixed, capsys):
    assert main(["data", "inspect", str(mixed), "--model", str(tiny_model), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    tokens = report["tokens"]
    assert tokens["count"] == 2
    assert tokens["min"] <= tokens["p50"] <= tokens["p95"] <= tokens["max"]
    assert tokens["min"] <= tokens["mean"] <= tokens["max"]
    assert tokens["seq_len"] == 512 and tokens["over_seq_len"] == 0
    example = report["example"]
    assert example["line"] == 1
    trained = "".join(s["text"] for s in example["segments"] if s["trained"])
    untrained = "".join(s["text"] for s in example["segments"] if not s["trained"])
    # ChatML: the assistant content and its end-of-turn marker carry loss; the prompt does not.
    assert "世界 🙂" in trained and "<|im_end|>" in trained
    assert "你好" in untrained and "你好" not in trained

    assert main(["data", "inspect", str(mixed), "--model", str(tiny_model)]) == 0
    out = capsys.readouterr().out
    assert "tokens:  min" in out and "p95" in out
    assert "first example (line 1" in out
    assert "[[世界 🙂<|im_end|>" in out


def test_inspect_counts_records_longer_than_seq_len(tiny_model, tmp_path, capsys):
    path = tmp_path / "long.jsonl"
    path.write_text(
        _chat("short", "ok") + "\n" + _chat("long " * 100, "answer " * 100) + "\n", encoding="utf-8"
    )
    assert (
        main(
            ["data", "inspect", str(path), "--model", str(tiny_model), "--json", "--seq-len", "64"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["tokens"]["over_seq_len"] == 1
    assert report["tokens"]["max"] > 64
    assert report["truncated"] == 1


def test_inspect_text_data_needs_no_chat_template(tiny_model_no_template, tmp_path, capsys):
    path = tmp_path / "d.txt"
    path.write_text("a paragraph of text\n\nanother one\n", encoding="utf-8")
    assert (
        main(["data", "inspect", str(path), "--model", str(tiny_model_no_template), "--json"]) == 0
    )
    report = json.loads(capsys.readouterr().out)
    assert report["format"] == "text" and report["tokens"]["count"] == 2
