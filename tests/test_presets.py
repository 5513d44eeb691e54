"""Presets sized to the data and the model, the run-time estimate, and the after-run check's
choice of prompts and its verdict (the generation itself is tested on the real demo run in
tests/gui/test_first_run.py and tests/test_train_cli.py)."""

import argparse

import pytest

from studio.core import after_run, presets, step_timing
from studio.core.config import DataConfig, ModelConfig, RunConfig, flat_settings
from studio.core.data.records import Record
from studio.core.paths import demo_dir
from studio.core.presets import PRESETS, DataStats, ModelStats, plan
from studio.core.train import make_plan


def test_the_demo_cli_and_the_app_start_from_the_same_preset_code(tmp_path, monkeypatch):
    from studio.commands import train
    from studio.core.project import demo_project

    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    parser = argparse.ArgumentParser()
    train.add_parser(parser.add_subparsers())
    cli = flat_settings(train.build_config(parser.parse_args(["train", "--demo"])))
    app = flat_settings(demo_project().config())
    wanted = presets.demo_settings()
    assert {k: cli[k] for k in wanted} == {k: app[k] for k in wanted} == wanted
    # What the demo gets: several passes over its 256 training conversations, at a rate a
    # 2M-parameter model moves at, and a held-out tenth to evaluate and sample from.
    assert wanted["train.epochs"] == 6 and wanted["train.lr"] == 1e-3
    assert (wanted["train.seq_len"], wanted["lora.r"], wanted["data.val_split"]) == (256, 16, 0.1)


def test_the_planned_step_count_is_the_trainers():
    from studio.core.data.examples import build_examples
    from studio.core.data.split import load_split
    from studio.core.data.templates import resolve_template
    from studio.core.models import load_tokenizer

    cfg = RunConfig(
        model=ModelConfig(path=str(demo_dir() / "model")),
        data=DataConfig(path=str(demo_dir() / "data.jsonl")),
    )
    data, model = presets.measure(cfg)
    for name in PRESETS:
        sized = presets.apply_preset(cfg, name, data, model)
        tok = load_tokenizer(cfg.model.path)
        split = load_split(sized.data, sized.train.seed)
        examples, _ = build_examples(
            split.train.records, tok, resolve_template(tok, "auto"), sized.train.seq_len
        )
        # Counted with ChatML around each message: within 5% of the real template's count.
        assert abs(data.tokens * 0.9 - sum(map(len, examples))) < 0.05 * sum(map(len, examples))
        planned, evals = step_timing.planned_steps(sized, data)
        assert planned == make_plan(examples, sized).total_steps
        assert evals >= 6


def stats(examples: int, length: int) -> DataStats:
    return DataStats(examples, (length,) * min(examples, 500))


SMALL_MODEL, BIG_MODEL = ModelStats(500_000_000, 32768, 896), ModelStats(7_000_000_000, 8192, 4096)


def test_small_data_is_repeated_and_large_data_read_once():
    balanced = PRESETS["Balanced"]
    small = plan(balanced, stats(300, 60), SMALL_MODEL)  # ~18 steps an epoch
    assert small["train.epochs"] > 1 and small["train.grad_accum"] == 1
    large = plan(balanced, stats(200_000, 400), SMALL_MODEL)
    assert large["train.epochs"] == 1 and large["train.grad_accum"] == 2
    assert large["data.val_split"] == 0.001  # 200 examples held out, not 20,000
    tiny = plan(balanced, stats(20, 100), SMALL_MODEL)
    assert tiny["data.val_split"] == 0 and tiny["train.eval_every"] == 0
    assert tiny["train.epochs"] == balanced.max_epochs
    assert plan(PRESETS["Quick test"], stats(200_000, 400), BIG_MODEL)["train.max_steps"] == 30


def test_rate_length_and_rank_follow_the_model_and_the_data():
    p = PRESETS["Balanced"]
    assert presets.learning_rate(2_000_000) == 1e-3 and presets.learning_rate(7e9) == 2e-4
    assert presets.learning_rate(7e10) == 1.1e-4
    assert plan(p, stats(1000, 300), BIG_MODEL)["train.lr"] == 2e-4
    assert plan(p, stats(1000, 300), SMALL_MODEL)["train.seq_len"] == 512
    assert plan(p, stats(1000, 1500), SMALL_MODEL)["train.seq_len"] == 2048
    # Never beyond the model's context, nor the preset's limit.
    assert plan(p, stats(1000, 1500), ModelStats(10**8, 1024, 512))["train.seq_len"] == 1024
    assert plan(p, stats(1000, 9000), BIG_MODEL)["train.seq_len"] == 2048
    assert plan(p, stats(100_000, 400), BIG_MODEL)["lora.r"] == 32  # 40M tokens: more room
    tiny = plan(p, stats(1000, 300), ModelStats(2_000_000, 1024, 64))
    assert (tiny["lora.r"], tiny["lora.lora_alpha"]) == (8, 16)  # a 64-wide model's layers
    ranks = [plan(q, stats(1000, 300), SMALL_MODEL)["lora.r"] for q in PRESETS.values()]
    assert ranks == sorted(ranks) and len(set(ranks)) == 3


def test_a_preset_leaves_a_validation_file_alone():
    cfg = RunConfig(data=DataConfig(path="d.jsonl", eval_path="v.jsonl", val_split=0.0))
    assert presets.apply_preset(cfg, "Balanced", stats(5000, 300)).data.val_split == 0.0


def test_the_estimate_in_words():
    assert [step_timing.in_words(s) for s in (3, 22, 70, 200, 4000, 7300)] == [
        "5 seconds", "20 seconds", "a minute", "3 minutes", "1 hour 10 minutes", "2 hours",
    ]  # fmt: skip
    measured = step_timing.RunEstimate(60, 7, step_s=0.2, load_s=3, eval_s=1, device="cpu")
    assert measured.describe().startswith("About 20 seconds on this machine's CPU, loading")
    assert "60 steps at 0.2 s each" in measured.describe()
    assert "Not timed ahead" in step_timing.RunEstimate(1200, 7).describe()
    assert not step_timing.cheap_to_measure(BIG_MODEL, "cpu")
    assert step_timing.cheap_to_measure(ModelStats(2_000_000), "cpu")


def chat(user: str, answer: str, system: str = "") -> Record:
    msgs = [{"role": "system", "content": system}] if system else []
    return Record(
        1, msgs + [{"role": "user", "content": user}, {"role": "assistant", "content": answer}]
    )


def test_prompts_are_picked_one_kind_at_a_time():
    records = [chat(f"What is {i} plus 1?", f"{i + 1}.") for i in range(30)]
    records += [
        chat("What colour is grass?", "Green."),
        chat("Name a fruit.", "A plum.", "Be brief."),
    ]
    records += [Record(2, text="plain text has no prompt")]
    picked = after_run.pick_prompts(records, 3)
    assert {s.prompt for s in picked} == {
        "What is 0 plus 1?",
        "What colour is grass?",
        "Name a fruit.",
    }
    fruit = next(s for s in picked if s.prompt == "Name a fruit.")
    assert fruit.messages[0] == {"role": "system", "content": "Be brief."}
    assert fruit.reference == "A plum."
    assert len(after_run.pick_prompts(records, 10)) == 10
    # A later turn: the conversation up to the last answer is the prompt.
    turns = Record(3, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"},
                       {"role": "user", "content": "Bye?"}, {"role": "assistant", "content": "Bye."}])  # fmt: skip
    sample = after_run.prompt_of(turns)
    assert (sample.prompt, len(sample.messages), sample.reference) == ("Bye?", 3, "Bye.")


def test_the_verdict_and_its_file(tmp_path):
    samples = [after_run.Sample([{"role": "user", "content": "q"}], "a", "x", i < 1, "a", i < 4)
               for i in range(5)]  # fmt: skip
    learned = after_run.Comparison(samples, 48, "validation")
    assert learned.learned_to_stop() and (learned.tuned_stops, learned.base_stops) == (4, 1)
    assert learned.summary().startswith("The model learned to end its answers: 4 of 5")
    learned.save(tmp_path)
    assert after_run.load_comparison(tmp_path) == learned
    for s in samples:
        s.tuned_stopped = False
    assert "Train longer" in after_run.Comparison(samples).summary()
    (tmp_path / after_run.SAMPLES_FILE).write_text("{torn")
    assert after_run.load_comparison(tmp_path) is None


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_validates_for_the_demo(name):
    cfg = RunConfig.from_dict(
        presets.with_settings(RunConfig(), presets.demo_settings(name)).to_dict()
    )
    assert cfg.train.lr > 0 and cfg.lora.r >= 4
