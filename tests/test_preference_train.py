"""Preference runs on the tiny model: DPO learns its pairs (margin and accuracy measured with
the saved adapter against the base), ORPO and SimPO train, and a killed DPO run resumes to
the same losses as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from studio.core.config import (
    DataConfig,
    LoraConfig,
    ModelConfig,
    PreferenceConfig,
    RunConfig,
    TrainConfig,
)
from studio.core.events import read_events
from studio.core.train import run_training
from tests.test_train import kill_after_checkpoint, losses


def write_pairs(path: Path, n: int = 16) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            row = {
                "prompt": f"What is {i} plus {i}?",
                "chosen": f"{i} plus {i} is {2 * i}.",
                "rejected": f"I do not know, maybe {3 * i + 1}." + " hmm" * (i % 3),
            }
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(tmp_path / "pairs.jsonl")


def config(model, data, out, mode="dpo", **train) -> RunConfig:
    t = dict(max_steps=12, batch_size=2, seq_len=64, lr=2e-3, seed=3, mode=mode)
    t.update(train)
    return RunConfig(
        model=ModelConfig(path=str(model)),
        lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0),
        data=DataConfig(path=str(data), val_split=0.0),
        train=TrainConfig(**t),
        preference=PreferenceConfig(),
        output=str(out),
    )


def pair_metrics(model_dir, adapter, data) -> dict[str, float]:
    """DPO's rewards over every pair of `data`, the adapter against the base (beta 0.1)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.core.data.formats import load_dataset
    from studio.core.data.pairs import build_pair_examples, collate_pairs, pair_rows
    from studio.core.data.templates import resolve_template
    from studio.core.models import load_tokenizer
    from studio.core.preference import PreferenceLoss

    tok = load_tokenizer(str(model_dir))
    examples, _ = build_pair_examples(
        load_dataset(data).records, tok, resolve_template(tok), seq_len=64
    )
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    fn = PreferenceLoss(PeftModel.from_pretrained(base, adapter).eval(), "dpo", beta=0.1)
    rows = pair_rows([len(e) for e in examples], 64, 0, packing=False)
    with torch.no_grad():
        _, n = fn(collate_pairs(examples, rows, tok.pad_token_id))
    return {k.split("/")[1]: v / n for k, v in fn.take_metrics().items()}


def test_dpo_raises_the_margin_and_accuracy_on_its_pairs(tiny_model, pairs, tmp_path):
    run = tmp_path / "run"
    last = run_training(config(tiny_model, pairs, run))
    assert last.type == "done" and last.status == "completed"
    steps = [e for e in read_events(run / "events.jsonl") if e.type == "step"]
    # Before the first update the adapter does nothing: policy = reference, no margin.
    assert steps[0].metrics["rewards/margins"] == 0 and steps[0].metrics["rewards/accuracies"] == 0
    assert steps[-1].loss < steps[0].loss
    after = pair_metrics(tiny_model, run / "adapter", pairs)
    assert after["margins"] > 0.1 and after["accuracies"] >= 0.9
    assert after["chosen"] > after["rejected"]


@pytest.mark.parametrize("mode", ["orpo", "simpo"])
def test_orpo_and_simpo_widen_the_margin(tiny_model, pairs, tmp_path, mode):
    run = tmp_path / mode
    last = run_training(config(tiny_model, pairs, run, mode=mode))
    assert last.type == "done"
    steps = [e for e in read_events(run / "events.jsonl") if e.type == "step"]
    first, end = steps[0].metrics, steps[-1].metrics
    assert end["rewards/margins"] > first["rewards/margins"] and steps[-1].loss < steps[0].loss


def test_sigkill_then_resume_matches_uninterrupted_dpo_run(tiny_model, pairs, tmp_path):
    """As tests/test_train.py's SFT test: kill -9 after a checkpoint, resume, same losses."""
    steps = 24
    reference = tmp_path / "ref"
    run_training(config(tiny_model, pairs, reference, max_steps=steps, save_every=4))
    run = tmp_path / "killed"
    config(tiny_model, pairs, run, max_steps=steps, save_every=4).save(tmp_path / "run.yaml")
    cmd = [sys.executable, "-m", "studio", "train", "--config", str(tmp_path / "run.yaml")]
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc, killed_after = kill_after_checkpoint([*cmd, "--quiet"], run, env)
    assert killed_after is not None, "the run ended before it could be killed"
    assert proc.returncode == -signal.SIGKILL and max(losses(run)) < steps
    out = subprocess.run(
        [*cmd, "--output", str(run), "--resume", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    got, want = losses(run), losses(reference)
    assert sorted(got) == list(range(1, steps + 1))
    for s in range(1, steps + 1):
        assert got[s] == pytest.approx(want[s], rel=1e-4, abs=1e-6), s
    resumed = [e for e in read_events(run / "events.jsonl") if e.type == "log"]
    assert any("resumed from" in e.message for e in resumed)


def test_python_api_trains_a_preference_mode(tiny_model, pairs, tmp_path):
    from studio.core.api import Trainer

    trainer = Trainer(tiny_model, LoraConfig(r=4, lora_alpha=8), output=str(tmp_path / "api"))
    result = trainer.train(pairs, mode="simpo", beta=2.5, simpo_gamma=0.3, max_steps=3, seq_len=64)
    assert result.status == "completed" and len(result.metrics["losses"]) == 3
    assert 0 <= result.metrics["rewards/accuracies"] <= 1 and "rewards/margins" in result.metrics
    saved = RunConfig.load(tmp_path / "api" / "run.yaml")
    assert (saved.train.mode, saved.preference.beta, saved.preference.simpo_gamma) == (
        "simpo",
        2.5,
        0.3,
    )


def test_gradient_checkpointing_gives_the_same_dpo_losses(tiny_model, pairs, tmp_path):
    """The reference pass (no gradient, adapter off) goes through checkpointed layers too."""
    from studio.core.train import train

    def step_losses(out, **extra):
        cfg = config(tiny_model, pairs, tmp_path / out, max_steps=3, **extra)
        return [e.loss for e in train(cfg) if e.type == "step"]

    plain = step_losses("plain")
    assert step_losses("gc", gradient_checkpointing=True) == pytest.approx(plain, rel=1e-5)
    assert plain[-1] < plain[0]
