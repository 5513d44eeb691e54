"""`studio eval` and studio.core.evaluate on a tiny model: a run that memorised the eval prompts
beats its base on loss and exact match; several adapters on one base; the judge through a fake
OpenAI-compatible server; lm-evaluation-harness on a local task; bad input in one sentence."""

import json
import shutil
from pathlib import Path

import pytest

from studio.cli import main
from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.evaluate import EvalOptions, evaluate_events, read_report, run_evaluation
from studio.core.generation import CancelToken
from tests.fake_openai import JSONHandler, serving

QA = [
    ("What colour is the sky?", "Blue."),
    ("Name a fruit.", "An apple."),
    ("What is two plus two?", "Four."),
    ("Say hello in French.", "Bonjour."),
    ("What animal barks?", "A dog."),
    ("What is the opposite of hot?", "Cold."),
]


def write_qa(path: Path, pairs=QA) -> Path:
    rows = [{"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in pairs]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def build_confident_model(folder: Path) -> Path:
    """The tiny test model with its LM head scaled up: a random head of std 0.02 cannot give any
    token much probability, so LoRA alone could never memorise an answer; ×20 lets it."""
    import torch
    from transformers import AutoModelForCausalLM

    from studio.core.tiny import build_model

    path = build_model(folder, [f"{q} {a}" for q, a in QA])
    model = AutoModelForCausalLM.from_pretrained(path)
    with torch.no_grad():
        model.lm_head.weight.mul_(20)
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(base model, eval file, run folder): a run trained on the eval prompts (memorised)."""
    from studio.core.train import run_training

    root = tmp_path_factory.mktemp("eval")
    base = build_confident_model(root / "model")
    data = write_qa(root / "qa.jsonl")
    cfg = RunConfig(
        model=ModelConfig(path=str(base)),
        lora=LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0),
        data=DataConfig(path=str(data), val_split=0.0),
        train=TrainConfig(
            max_steps=30, batch_size=6, seq_len=64, lr=1e-2, warmup_ratio=0.0, seed=1, save_every=10
        ),  # fmt: skip
        output=str(root / "run"),
    )
    assert run_training(cfg).status == "completed"
    return base, data, root / "run"


def test_the_run_beats_its_base_on_loss_and_exact_match(trained, capsys):
    _, data, run = trained
    code = main(["eval", "--runs", str(run), "--data", str(data), "--name", "memorised",
                 "--max-new-tokens", "12", "--quiet"])  # fmt: skip
    assert code == 0
    folder = run / "eval" / "memorised"
    report = json.loads((folder / "report.json").read_text(encoding="utf-8"))
    base, tuned = report["models"]
    assert (base["key"], tuned["key"]) == ("base", "run")
    print(f"\nbase: loss {base['loss']:.3f}, exact {base['exact_match']:.0%}; "
          f"run: loss {tuned['loss']:.4f}, exact {tuned['exact_match']:.0%}")  # fmt: skip
    assert tuned["loss"] < 0.1 < 5 < base["loss"]
    assert tuned["perplexity"] == pytest.approx(2.718281828 ** tuned["loss"], rel=1e-4)
    assert tuned["exact_match"] == 1.0 and base["exact_match"] == 0.0
    assert tuned["tokens"] == base["tokens"] > 0 and tuned["examples"] == len(QA)
    assert report["generation"]["greedy"] and report["generation"]["max_new_tokens"] == 12
    assert len(report["samples"]) == len(QA) and report["judge"]["status"] == "off"
    sample = next(s for s in report["samples"] if s["prompt"] == "What colour is the sky?")
    assert sample["answers"]["run"]["text"] == "Blue." and sample["reference"] == "Blue."
    page = (folder / "report.html").read_text(encoding="utf-8")
    assert "<svg" in page and "What colour is the sky?" in page
    assert '<td class="num best">100%</td>' in page  # the run's exact match, in bold
    assert "report.html" in capsys.readouterr().out
    # The same loss as training measured on the same tokens: the trainer's own code.
    assert not (run / "eval" / ".tmp-memorised").exists()


def _perturbed_copy(run: Path, dest: Path) -> Path:
    """Another run on the same base: the adapter's weights shuffled, so it answers worse."""
    import torch
    from safetensors.torch import load_file, save_file

    shutil.copytree(run, dest, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    f = dest / "adapter" / "adapter_model.safetensors"
    torch.manual_seed(0)
    save_file({k: torch.randn_like(v) * 0.5 for k, v in load_file(f).items()}, f)
    return dest


def test_several_runs_share_one_base_and_keep_their_own_numbers(trained, tmp_path):
    _, data, run = trained
    other = _perturbed_copy(run, tmp_path / "run")  # the same folder name: made unique
    alone = run_evaluation(EvalOptions(runs=[str(run)], data=str(data), samples=2, base=False,
                                       name="alone", max_new_tokens=8))  # fmt: skip
    both = run_evaluation(EvalOptions(runs=[str(run), str(other), str(run / "checkpoints" / "step-000010")],
                                      data=str(data), samples=2, name="three", max_new_tokens=8))  # fmt: skip
    a, b = read_report(alone.adapter), read_report(both.adapter)
    assert [m["key"] for m in a["models"]] == ["run"]
    assert [m["key"] for m in b["models"]] == ["base", "run", "run-2", "run@step-000010"]
    loss = {m["key"]: m["loss"] for m in b["models"]}
    assert loss["run"] == pytest.approx(a["models"][0]["loss"], rel=1e-5)
    assert loss["run-2"] > loss["run"] * 10 and loss["run@step-000010"] < loss["base"]


class FakeJudge(JSONHandler):
    """Scores 10 when the graded answer equals the reference in the prompt, else 2."""

    def do_POST(self):  # noqa: N802
        body = self.body()
        FakeJudge.seen.append((self.path, self.headers.get("Authorization"), body["model"]))
        text = body["messages"][-1]["content"]
        ref = text.split("Reference answer:\n")[1].split("\n\n")[0]
        answer = text.split("Answer to grade:\n")[1]
        score = 10 if answer.strip() == ref.strip() else 2
        self.reply(json.dumps({"score": score, "reason": "matches" if score == 10 else "differs"}))


@pytest.fixture
def judge_server():
    FakeJudge.seen = []
    with serving(FakeJudge) as url:
        yield url


def test_the_judge_scores_every_answer_and_is_marked_as_a_judge(trained, judge_server):
    import studio

    _, data, run = trained
    result = studio.evaluate(run, data=data, samples=3, max_new_tokens=8, name="judged",
                             judge_url=judge_server, judge_model="grader", judge_key="sekret")  # fmt: skip
    assert result.report["judge"]["status"] == "ok" and "opinion" in result.report["judge"]["note"]
    assert len(FakeJudge.seen) == 2 * 3
    assert FakeJudge.seen[0] == ("/v1/chat/completions", "Bearer sekret", "grader")
    assert result.model("run")["judge"] == 10 and result.model("base")["judge"] == 2
    answer = result.report["samples"][0]["answers"]["run"]
    assert answer["judge"] == {"score": 10, "reason": "matches"}
    text = (result.output / "report.json").read_text() + (result.output / "report.html").read_text()
    assert "sekret" not in text and "LLM judge: 10/10" in text


def test_an_unreachable_judge_leaves_the_rest_of_the_report(trained):
    import socket

    _, data, run = trained
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    last = run_evaluation(EvalOptions(runs=[str(run)], data=str(data), samples=2, name="nojudge",
                                      max_new_tokens=8, judge_url=f"http://127.0.0.1:{port}",
                                      judge_model="m"))  # fmt: skip
    assert last.type == "done" and last.status == "completed"
    report = read_report(last.adapter)
    assert report["judge"]["status"] == "failed"
    assert "could not be reached" in report["judge"]["message"]
    assert report["models"][1]["exact_match"] == 1.0 and report["models"][1]["judge"] is None
    assert "could not be reached" in (Path(last.adapter) / "report.html").read_text()


LM_TASK = """task: studio_tiny_colours
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
metric_list:
  - metric: acc
"""


def test_lm_eval_runs_a_local_task_on_the_loaded_model(trained, tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    _, data, run = trained
    docs = tmp_path / "docs.jsonl"
    docs.write_text("".join(json.dumps({"question": q, "choices": [a, "Seven."], "answer": 0}) + "\n"
                            for q, a in QA[:4]))  # fmt: skip
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "colours.yaml").write_text(LM_TASK.format(data=docs))
    last = run_evaluation(EvalOptions(runs=[str(run)], data=str(data), samples=0, name="harness",
                                      lm_eval_tasks=str(tasks)))  # fmt: skip
    assert last.type == "done", getattr(last, "message", "")
    section = read_report(last.adapter)["lm_eval"]
    assert section["status"] == "ok", section["message"]
    assert section["tasks"] == ["studio_tiny_colours"]
    acc = {k: v["studio_tiny_colours"]["acc"] for k, v in section["results"].items()}
    print(f"\nlm-eval acc: {acc}")
    assert set(acc) == {"base", "run"} and all(0 <= a <= 1 for a in acc.values())


def test_lm_eval_missing_is_said_in_the_report(trained, tmp_path, monkeypatch):
    from studio.core.evaluate import harness

    monkeypatch.setattr(harness, "installed", lambda: False)
    _, data, run = trained
    task = tmp_path / "t.yaml"
    task.write_text("task: anything\n")
    last = run_evaluation(EvalOptions(runs=[str(run)], data=str(data), samples=1, name="nolm",
                                      max_new_tokens=4, lm_eval_tasks=str(task)))  # fmt: skip
    section = read_report(last.adapter)["lm_eval"]
    assert section["status"] == "skipped" and "studio[eval]" in section["message"]


def _eval_cli(capsys, *args) -> tuple[int, str]:
    code = main(["eval", *args, "--quiet"])
    err = capsys.readouterr().err.strip()
    return code, err


def test_bad_input_is_one_sentence_and_nothing_is_written(trained, tmp_path, capsys, tiny_model):
    base, data, run = trained
    before = sorted(p.name for p in (run / "eval").iterdir()) if (run / "eval").exists() else []
    # An eval file with no usable row: questions with no answer.
    unanswered = tmp_path / "unanswered.jsonl"
    unanswered.write_text(json.dumps({"messages": [{"role": "user", "content": "Hi?"}]}) + "\n")
    code, err = _eval_cli(capsys, "--runs", str(run), "--data", str(unanswered))
    assert code == 2 and err.startswith("error: data: unanswered.jsonl has no valid record: line 1")
    # Rows that import but keep no answer token within the run's 64 tokens, and no prompts.
    long = write_qa(tmp_path / "long.jsonl", [("word " * 100, "Blue.")])
    code, err = _eval_cli(capsys, "--runs", str(run), "--data", str(long), "--samples", "0")
    assert code == 2 and err.startswith("error: data: no usable row in the data file")
    assert "1 with no trainable tokens left out" in err
    # A run folder with no adapter yet.
    unfinished = tmp_path / "unfinished"
    unfinished.mkdir()
    shutil.copy(run / "run.yaml", unfinished / "run.yaml")
    code, err = _eval_cli(capsys, "--runs", str(run), str(unfinished), "--data", str(data))
    assert code == 2 and "has no adapter" in err and err.count("\n") == 0
    # A run on another base model: one pass loads one base.
    other = tmp_path / "other"
    shutil.copytree(run, other, ignore=shutil.ignore_patterns("eval", "checkpoints"))
    cfg = RunConfig.load(other / "run.yaml")
    cfg.model.path = str(tiny_model)
    cfg.save(other / "run.yaml")
    code, err = _eval_cli(capsys, "--runs", str(run), str(other), "--data", str(data))
    assert code == 2 and "one evaluation loads one base model" in err
    # No held-out data: the run held none out and no file is given.
    code, err = _eval_cli(capsys, "--runs", str(run))
    assert code == 2 and "pass --data FILE" in err
    code, err = _eval_cli(capsys, "--runs", str(run), "--judge-url", "http://x")
    assert code == 2 and "judge" in err and "Traceback" not in err
    after = sorted(p.name for p in (run / "eval").iterdir()) if (run / "eval").exists() else []
    assert after == before


def test_cancel_stops_without_a_report(trained):
    _, data, run = trained
    cancel = CancelToken()
    events = []
    for event in evaluate_events(EvalOptions(runs=[str(run)], data=str(data), name="cancelled"),
                                 cancel):  # fmt: skip
        events.append(event)
        if event.type == "progress" and event.stage == "loss":
            cancel.cancel()
    assert events[-1].type == "done" and events[-1].status == "stopped"
    assert not (run / "eval" / "cancelled").exists()
    assert not (run / "eval" / ".tmp-cancelled").exists()


def test_events_flag_prints_json_lines(trained, capsys):
    _, data, run = trained
    code = main(["eval", "--runs", str(run), "--data", str(data), "--samples", "1",
                 "--max-new-tokens", "4", "--name", "events", "--events"])  # fmt: skip
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert code == 0
    stages = [x["stage"] for x in lines if x["type"] == "progress"]
    assert stages[0] == "loading" and "loss" in stages and "answers" in stages
    assert lines[-1]["type"] == "done" and lines[-1]["adapter"].endswith("events")


def test_a_pair_file_is_evaluated_on_its_prompts_against_the_chosen_answers(trained, tmp_path):
    """A preference run's data: each pair's chosen answer is the reference, the rejected one is
    never scored as right."""
    base, _, run = trained
    pairs = tmp_path / "pairs.jsonl"
    rows = [{"prompt": q, "chosen": a, "rejected": "I do not know."} for q, a in QA]
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    opts = EvalOptions(runs=[str(run)], data=str(pairs), name="pairs", max_new_tokens=12)
    run_evaluation(opts)
    report = read_report(run / "eval" / "pairs")
    assert {s["reference"] for s in report["samples"]} == {a for _, a in QA}
    assert {s["prompt"] for s in report["samples"]} == {q for q, _ in QA}
    base_row, tuned = report["models"]
    assert tuned["exact_match"] == 1.0 and tuned["loss"] < 0.1 < base_row["loss"]
