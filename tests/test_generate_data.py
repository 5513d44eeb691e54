"""Data generation: every mode with a tiny local model and with a fake OpenAI-compatible
endpoint (an http.server thread on loopback), the resumable output (a real SIGKILL of a
`python -m studio data generate` child, then a restart), cancel, and bad input."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from studio.core.data.generate import GenerateOptions, generate_events
from studio.core.data.generate.inputs import read_items
from studio.core.data.generate.writer import RowWriter
from studio.core.data.inspect import inspect_file
from studio.core.errors import ConfigError, StudioError
from studio.core.generation import CancelToken
from tests.fake_openai import JSONHandler, serving

ROOT = Path(__file__).resolve().parents[1]
WORDS = "river stone cloud lamp garden violin copper meadow signal harbor lantern puzzle".split()


class FakeOpenAI(JSONHandler):
    """Deterministic replies shaped by what is asked: a rewording, a new task, a verdict
    (the longer answer wins), or an answer naming the question and the request's seed."""

    requests: list = []

    def do_POST(self):  # noqa: N802 - http.server's name
        body = self.body()
        self.requests.append((dict(self.headers), body))
        if body["model"] == "missing":
            return self.send_json(404, {"error": {"message": "no such model"}})
        messages = body["messages"]
        last = messages[-1]["content"]
        seed = body.get("seed", 0)
        if messages[0]["role"] == "system" and "grader" in messages[0]["content"]:
            answer = last.split("Answer to grade:\n", 1)[1]
            text = json.dumps({"score": min(10, len(answer) // 5), "reason": "length"})
        elif last.startswith("Reword"):
            text = "Please, " + last.rsplit("Instruction:\n", 1)[1].lower()
        elif last.startswith("Here are some tasks"):
            rng = random.Random(seed)
            text = "1. Describe the " + " and the ".join(rng.sample(WORDS, 4)) + "."
        else:
            text = f"An answer to {last!r} ({seed % 97})" + "!" * (seed % 7)
        self.reply(text)


@pytest.fixture
def endpoint():
    FakeOpenAI.requests = []
    with serving(FakeOpenAI) as url:
        yield url


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "prompts.jsonl"
    rows = [{"prompt": f"Name a {w} you like."} for w in WORDS[:5]]
    rows.append({"instruction": "Add two and two.", "output": "Four."})
    rows.append({"messages": [{"role": "user", "content": "Say hello."}]})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    return path


def run(opts: GenerateOptions, cancel=None) -> list:
    return list(generate_events(opts, cancel))


def read_rows(path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines()]


def expected_rows(mode: str, n_prompts: int = 7, n: int = 2, count: int = 4) -> int:
    return {"paraphrase": n_prompts * n, "self-instruct": count}.get(mode, n_prompts)


def check_inspect(path, rows: int, fmt: str = "messages") -> None:
    report = inspect_file(str(path))
    assert (report["format"], report["records"], report["skipped"]) == (fmt, rows, 0)


# ------------------------------------------------------------------ the modes


@pytest.mark.parametrize("mode", ["answer", "paraphrase", "self-instruct", "pairs"])
def test_endpoint_modes_write_valid_rows(mode, endpoint, prompts, tmp_path):
    out = tmp_path / f"{mode}.jsonl"
    opts = GenerateOptions(
        mode=mode, input=str(prompts), output=str(out), endpoint=endpoint,
        endpoint_model="fake", api_key="sk-test", count=4, batch_size=3,
    )  # fmt: skip
    events = run(opts)
    assert events[-1].type == "done" and events[-1].status == "completed", events[-1]
    rows = read_rows(out)
    assert len(rows) == expected_rows(mode)
    assert [e.record for e in events if e.type == "row"] == rows
    assert [e.index for e in events if e.type == "row"] == list(range(len(rows)))
    check_inspect(out, len(rows))
    meta = rows[0]["meta"]
    assert meta["mode"] == mode and meta["generator"] == {"endpoint": endpoint, "model": "fake"}
    assert meta["settings"]["temperature"] == 0.7 and meta["settings"]["seed"] == 0
    assert "sk-test" not in out.read_text()  # the key is sent, never written
    assert FakeOpenAI.requests[0][0]["Authorization"] == "Bearer sk-test"
    if mode != "self-instruct":
        assert meta["source"] == {"file": str(prompts), "line": 1}


def test_paraphrase_keeps_the_answer_or_regenerates(endpoint, prompts, tmp_path):
    kept = tmp_path / "kept.jsonl"
    run(GenerateOptions("paraphrase", str(prompts), str(kept), endpoint=endpoint, endpoint_model="m", n=2))  # fmt: skip
    rows = read_rows(kept)
    add = [r for r in rows if r["meta"]["source"]["line"] == 6]
    assert [r["meta"]["variant"] for r in add] == [0, 1]
    assert all(r["messages"][-1]["content"] == "Four." for r in add)
    assert add[0]["messages"][0]["content"] == "Please, add two and two."
    assert add[0]["meta"]["original"] == "Add two and two." and "Reword" in add[0]["meta"]["prompt"]
    fresh = tmp_path / "fresh.jsonl"
    run(GenerateOptions("paraphrase", str(prompts), str(fresh), endpoint=endpoint, endpoint_model="m", regenerate=True))  # fmt: skip
    add = [r for r in read_rows(fresh) if r["meta"]["source"]["line"] == 6]
    assert add[0]["messages"][-1]["content"].startswith("An answer to 'Please, add two and two.'")
    assert add[0]["meta"]["answer"] == "generated"


def test_self_instruct_keeps_only_new_instructions(endpoint, prompts, tmp_path):
    out = tmp_path / "si.jsonl"
    run(GenerateOptions("self-instruct", str(prompts), str(out), endpoint=endpoint, endpoint_model="m", count=6))  # fmt: skip
    rows = read_rows(out)
    instructions = [r["messages"][0]["content"] for r in rows]
    assert len(rows) == 6 and all(i.startswith("Describe the ") for i in instructions)
    from studio.core.evaluate.metrics import rouge_l

    for i, a in enumerate(instructions):
        assert all(rouge_l(a, b) < 0.7 for b in instructions[:i])
    assert [r["meta"]["key"] for r in rows] == [f"self-instruct:0:{k}" for k in range(6)]
    assert "1. " in rows[0]["meta"]["prompt"] and rows[0]["meta"]["examples"]


def test_pairs_with_a_judge_are_preference_pairs(endpoint, prompts, tmp_path):
    out = tmp_path / "pairs.jsonl"
    run(GenerateOptions("pairs", str(prompts), str(out), endpoint=endpoint, endpoint_model="m", judge_url=endpoint, judge_model="judge"))  # fmt: skip
    rows = read_rows(out)
    picked = [r for r in rows if "chosen" in r]
    assert picked, rows
    for r in picked:  # the fake judge prefers the longer answer
        assert (
            len(r["chosen"]) // 5 > len(r["rejected"]) // 5
            and len(r["meta"]["judge"]["scores"]) == 2
        )
    if len(picked) == len(rows):
        check_inspect(out, len(rows), "pairs")
    unpicked = [r for r in rows if "answers" in r]  # a tie: left for a person to pick
    assert all(r["meta"]["picked"] is None and len(r["answers"]) == 2 for r in unpicked)


def test_pairs_without_a_judge_are_candidates(endpoint, prompts, tmp_path):
    out = tmp_path / "cand.jsonl"
    run(GenerateOptions("pairs", str(prompts), str(out), endpoint=endpoint, endpoint_model="m"))
    rows = read_rows(out)
    assert all(set(r) == {"prompt", "answers", "messages", "meta"} for r in rows)
    first = rows[0]
    assert (
        first["prompt"] == "Name a river you like." and first["answers"][0] != first["answers"][1]
    )
    assert first["messages"][-1] == {"role": "assistant", "content": first["answers"][0]}


@pytest.mark.parametrize("mode", ["answer", "paraphrase", "self-instruct", "pairs"])
def test_local_model_modes(mode, tiny_model, prompts, tmp_path):
    out = tmp_path / f"{mode}.jsonl"
    opts = GenerateOptions(
        mode=mode, input=str(prompts), output=str(out), model=str(tiny_model),
        max_new_tokens=12, count=4, batch_size=4,
    )  # fmt: skip
    events = run(opts)
    assert events[-1].type == "done", events[-1]
    rows = read_rows(out)
    assert len(rows) == expected_rows(mode)
    check_inspect(out, len(rows))
    assert rows[0]["meta"]["generator"] == {"model": str(tiny_model), "quant": "none"}
    progress = [e for e in events if e.type == "progress"]
    assert progress[-1].done == progress[-1].total == len(rows) and progress[-1].eta_s == 0


def test_local_sampling_is_seeded(tiny_model, prompts, tmp_path):
    def texts(name, seed):
        out = tmp_path / name
        run(GenerateOptions("answer", str(prompts), str(out), model=str(tiny_model), max_new_tokens=10, seed=seed))  # fmt: skip
        return [r["messages"][-1]["content"] for r in read_rows(out)]

    assert texts("a.jsonl", 1) == texts("b.jsonl", 1)
    assert texts("a.jsonl", 1) != texts("c.jsonl", 2)


# ------------------------------------------------------------------ resuming


def test_sigkill_then_restart_continues_without_duplicates(tiny_model, tmp_path):
    src = tmp_path / "many.txt"
    src.write_text(
        "\n\n".join(f"Prompt number {i}: tell me about {WORDS[i % 12]}." for i in range(24))
    )
    out = tmp_path / "out.jsonl"
    cmd = [sys.executable, "-m", "studio", "data", "generate", "answer", "--input", str(src),
           "--output", str(out), "--model", str(tiny_model), "--batch-size", "2",
           "--max-new-tokens", "32", "--events"]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    child = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=ROOT
    )
    rows_seen = 0
    try:
        for line in child.stdout:
            rows_seen += json.loads(line)["type"] == "row"
            if rows_seen == 5:
                child.send_signal(signal.SIGKILL)
                break
    finally:
        child.kill()
        child.wait()
    assert child.returncode == -signal.SIGKILL
    before = out.read_bytes()
    with open(out, "ab") as fh:  # what a kill in the middle of a write leaves
        fh.write(b'{"messages": [{"role": "user", "content": "torn')
    assert 5 <= len(before.splitlines()) < 24
    done = subprocess.run(cmd, capture_output=True, env=env, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stderr.decode()
    events = [json.loads(line) for line in done.stdout.decode().splitlines()]
    assert events[0]["type"] == "log" and any(e["type"] == "start" for e in events)
    start = next(e for e in events if e["type"] == "start")
    assert start["start_step"] == len(before.splitlines()) and start["total_steps"] == 24
    assert out.read_bytes().startswith(
        before
    )  # the rows written before the kill are kept as they were
    rows = read_rows(out)
    lines = [r["meta"]["source"]["line"] for r in rows]
    assert lines == [1 + 2 * i for i in range(24)]  # one row per prompt, in order
    assert [r["messages"][0]["content"] for r in rows] == [f"Prompt number {i}: tell me about {WORDS[i % 12]}." for i in range(24)]  # fmt: skip
    check_inspect(out, 24)


def test_writer_drops_a_torn_line_and_refuses_another_mode(tmp_path):
    out = tmp_path / "o.jsonl"
    row = {"messages": [], "meta": {"key": "answer:1:0", "mode": "answer"}}
    out.write_text(json.dumps(row) + "\n" + '{"messages": [{"ro')
    writer = RowWriter(out, "answer")
    assert writer.done == {"answer:1:0"} and out.read_text() == json.dumps(row) + "\n"
    assert writer.append({"meta": {"key": "answer:2:0", "mode": "answer"}}) == 1
    writer.close()
    assert len(out.read_text().splitlines()) == 2
    with pytest.raises(StudioError, match="holds answer rows; this run makes pairs rows"):
        RowWriter(out, "pairs")
    (tmp_path / "x.jsonl").write_text('{"a": 1}\n{"b": 2}\n')
    with pytest.raises(StudioError, match="line 1 .* is not a row written by studio data generate"):
        RowWriter(tmp_path / "x.jsonl", "answer")


def test_cancel_keeps_the_rows_and_a_rerun_finishes(endpoint, prompts, tmp_path):
    out = tmp_path / "c.jsonl"
    opts = GenerateOptions("answer", str(prompts), str(out), endpoint=endpoint, endpoint_model="m", batch_size=2)  # fmt: skip
    cancel = CancelToken()
    events = []
    for event in generate_events(opts, cancel):
        events.append(event)
        if event.type == "row":
            cancel.cancel()
    assert events[-1].type == "done" and events[-1].status == "stopped" and events[-1].step == 2
    assert len(read_rows(out)) == 2
    events = run(opts)
    assert events[-1].status == "completed" and events[-1].step == 7
    assert [r["meta"]["source"]["line"] for r in read_rows(out)] == list(range(1, 8))


# ------------------------------------------------------------------ bad input


def test_bad_input_is_one_sentence_and_writes_nothing(endpoint, tiny_model, tmp_path):
    empty = tmp_path / "e.jsonl"
    empty.write_text('{"a": 1}\n')
    out = tmp_path / "never.jsonl"
    last = run(GenerateOptions("answer", str(empty), str(out), endpoint=endpoint, endpoint_model="m"))[-1]  # fmt: skip
    assert (last.type, last.kind) == (
        "error",
        "input",
    ) and "holds no prompt: line 1" in last.message
    good = tmp_path / "p.txt"
    good.write_text("Hello there.")
    last = run(GenerateOptions("answer", str(good), str(out), endpoint="http://127.0.0.1:9", endpoint_model="m"))[-1]  # fmt: skip
    assert last.kind == "input" and "could not be reached" in last.message
    last = run(GenerateOptions("answer", str(good), str(out), endpoint=endpoint, endpoint_model="missing"))[-1]  # fmt: skip
    assert last.kind == "input" and "HTTP 404" in last.message
    last = run(GenerateOptions("answer", str(good), str(out), model=str(tmp_path / "nothing")))[-1]
    assert last.kind == "input" and "no such folder" in last.message
    assert not out.exists()
    with pytest.raises(ConfigError, match="either a local model"):
        GenerateOptions("answer", str(good), str(out))
    with pytest.raises(ConfigError, match="pairs needs two different answers"):
        GenerateOptions("pairs", str(good), str(out), model="m", temperature=0)


def test_input_shapes(tmp_path):
    path = tmp_path / "in.jsonl"
    rows = [
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"},
                      {"role": "assistant", "content": "Hello"}]},
        {"conversations": [{"from": "human", "value": "Q?"}]},
        {"question": "Why?", "input": "Context.", "system": "S"},
        {"text": "Just text."},
        {"messages": [{"role": "assistant", "content": "no user"}]},
        [1, 2],
    ]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows))
    items, problems = read_items(str(path))
    assert [(i.line, i.instruction, i.answer) for i in items] == [
        (1, "Hi", "Hello"), (2, "Q?", ""), (3, "Why?\n\nContext.", ""), (4, "Just text.", ""),
    ]  # fmt: skip
    assert items[0].messages[0]["role"] == "system" and items[2].messages[0]["content"] == "S"
    assert [p.line for p in problems] == [5, 6]


def test_cli_events_and_exit_codes(endpoint, prompts, tmp_path):
    from studio.cli import main

    out = tmp_path / "cli.jsonl"
    base = ["data", "generate", "answer", "--input", str(prompts), "--output", str(out)]
    assert (
        main([*base, "--endpoint", "http://127.0.0.1:9", "--endpoint-model", "m", "--quiet"]) == 2
    )
    assert main([*base, "--model", "m", "--endpoint", endpoint]) == 2
    assert main([*base, "--endpoint", endpoint, "--endpoint-model", "m", "--quiet"]) == 0
    assert len(read_rows(out)) == 7 and inspect_file(str(out))["records"] == 7
