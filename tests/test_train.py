"""The training engine: events, determinism, resume after SIGKILL, QLoRA, adapters, failures."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from studio.core.config import DataConfig, LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.events import read_events
from studio.core.train import CancelToken, run_training, train


def write_data(path: Path, n: int = 24) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            msgs = [
                {"role": "user", "content": f"What is {i} plus {i}? 你好"},
                {"role": "assistant", "content": f"{i} plus {i} is {2 * i}. 🙂" + " ok" * (i % 7)},
            ]
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    return path


@pytest.fixture
def data(tmp_path):
    return write_data(tmp_path / "data.jsonl")


def config(model, data, out, **train) -> RunConfig:
    t = dict(max_steps=8, batch_size=2, seq_len=64, lr=1e-3, seed=3)
    t.update(train)
    return RunConfig(
        model=ModelConfig(path=str(model)),
        lora=LoraConfig(r=4, lora_alpha=8, lora_dropout=0.1),
        data=DataConfig(path=str(data), val_split=0.2),
        train=TrainConfig(**t),
        output=str(out),
    )


def losses(run_dir: Path) -> dict[int, float]:
    out = {}
    for e in read_events(run_dir / "events.jsonl"):
        if e.type == "step":
            out[e.step] = e.loss  # a resumed run re-logs steps after the checkpoint: keep the last
    return out


def test_events_run_folder_and_falling_loss(tiny_model, data, tmp_path):
    cfg = config(
        tiny_model, data, tmp_path / "run", max_steps=0, epochs=6, eval_every=5, save_every=5
    )
    last = run_training(cfg)
    run = tmp_path / "run"
    assert last.type == "done" and last.status == "completed"
    assert (run / "run.yaml").is_file() and (run / "adapter" / "adapter_config.json").is_file()
    assert RunConfig.load(run / "run.yaml") == cfg
    lines = [json.loads(x) for x in (run / "events.jsonl").read_text().splitlines()]
    types = [x["type"] for x in lines]
    assert types[0] == "start" and lines[0]["total_steps"] > 5 and types[-1] == "done"
    step = next(x for x in lines if x["type"] == "step")
    assert set(step) >= {
        "step",
        "epoch",
        "loss",
        "lr",
        "grad_norm",
        "tokens_per_s",
        "elapsed_s",
        "eta_s",
    }
    assert {"eval", "checkpoint"} <= set(types)
    ev = next(x for x in lines if x["type"] == "eval")
    assert ev["step"] == 5 and ev["eval_loss"] > 0
    ls = list(losses(run).values())
    assert sum(ls[-3:]) / 3 < sum(ls[:3]) / 3  # it learns
    # keep_checkpoints=3: only the newest three stay, each whole.
    kept = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(kept) <= 3 and all((run / "checkpoints" / k / "state.json").is_file() for k in kept)


def test_same_config_twice_gives_same_losses(tiny_model, data, tmp_path):
    a = [e.loss for e in train(config(tiny_model, data, tmp_path / "a")) if e.type == "step"]
    b = [e.loss for e in train(config(tiny_model, data, tmp_path / "b")) if e.type == "step"]
    assert len(a) == 8 and a == b


def test_packing_off_trains_the_same_examples(tiny_model, data, tmp_path):
    ev = list(train(config(tiny_model, data, tmp_path / "np", packing=False, max_steps=3)))
    assert ev[-1].type == "done" and ev[0].num_examples == 19


# Every optimizer's state resumes exactly: 8-bit AdamW (8-bit state even on tiny tensors), the
# LoRA+ groups, and sensitivity tiers re-measured every 3 steps (before and after the kill).
OPTIMIZERS = {
    "adamw": {},
    "8bit+loraplus+sensitivity": dict(optimizer="adamw_8bit", loraplus_ratio=16,
                                      param_groups="sensitivity", sensitivity_every=3),
}  # fmt: skip


def kill_after_checkpoint(cmd, run: Path, env, at_step: int = 8):
    """Start `cmd` and SIGKILL it once RUN has a checkpoint at `at_step` or later:
    (the finished process, the step of that checkpoint, or None if it ended first)."""
    proc = subprocess.Popen(cmd, env=env)
    deadline = time.time() + 120
    killed_after = None
    while time.time() < deadline and proc.poll() is None:
        ckpts = [e.step for e in read_events(run / "events.jsonl") if e.type == "checkpoint"]
        if ckpts and ckpts[-1] >= at_step:
            os.kill(proc.pid, signal.SIGKILL)
            killed_after = ckpts[-1]
            break
        time.sleep(0.005)
    proc.wait()
    return proc, killed_after


@pytest.mark.parametrize("optim", OPTIMIZERS)
def test_sigkill_then_resume_matches_uninterrupted_run(
    tiny_model, data, tmp_path, optim, monkeypatch
):
    monkeypatch.setenv("STUDIO_MIN_8BIT_SIZE", "0")
    extra = OPTIMIZERS[optim]
    steps = 40
    reference = tmp_path / "ref"
    run_training(config(tiny_model, data, reference, max_steps=steps, save_every=4, **extra))
    run = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "studio",
        "train",
        "--config",
        str(tmp_path / "run.yaml"),
        "--quiet",
    ]
    config(tiny_model, data, run, max_steps=steps, save_every=4, **extra).save(
        tmp_path / "run.yaml"
    )
    env = dict(os.environ, OMP_NUM_THREADS=str(torch.get_num_threads()))
    proc, killed_after = kill_after_checkpoint(cmd, run, env)
    assert killed_after is not None, "the run ended before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    done_before = max(losses(run))
    assert done_before < steps
    out = subprocess.run(
        cmd[:-3] + ["--output", str(run), "--resume", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    got, want = losses(run), losses(reference)
    assert sorted(got) == list(range(1, steps + 1))
    for s in range(1, steps + 1):
        assert got[s] == pytest.approx(want[s], rel=1e-4, abs=1e-6), s
    assert any(
        e.type == "log" and "resumed from" in e.message for e in read_events(run / "events.jsonl")
    )


def test_cancel_saves_a_resumable_checkpoint(tiny_model, data, tmp_path):
    token = CancelToken()
    events = []
    for e in train(config(tiny_model, data, tmp_path / "c", max_steps=10), cancel=token):
        events.append(e)
        if e.type == "step" and e.step == 3:
            token.cancel()
    assert events[-1].type == "done" and events[-1].status == "stopped" and events[-1].step == 3
    assert (tmp_path / "c" / "checkpoints" / "step-000003" / "state.json").is_file()
    assert (tmp_path / "c" / "adapter" / "adapter_model.safetensors").is_file()
    resumed = [
        e
        for e in train(config(tiny_model, data, tmp_path / "c", max_steps=10), resume=True)
        if e.type == "step"
    ]
    assert [e.step for e in resumed] == list(range(4, 11))


def test_nan_loss_stops_with_a_clear_message_and_keeps_last_checkpoint(
    tiny_model, data, tmp_path, monkeypatch
):
    from studio.core import objective

    original = objective.LossFn.forward
    calls = {"n": 0}

    def poisoned(self, batch):
        loss, n = original(self, batch)
        calls["n"] += 1
        return (loss * float("nan") if calls["n"] > 5 else loss), n

    monkeypatch.setattr(objective.LossFn, "forward", poisoned)
    last = run_training(config(tiny_model, data, tmp_path / "n", save_every=2))
    assert last.type == "error" and last.kind == "nan" and "loss became nan" in last.message
    assert (tmp_path / "n" / "checkpoints" / "step-000004" / "state.json").is_file()
    assert not (tmp_path / "n" / "adapter").exists()


def test_adapter_loads_with_stock_peft_and_gives_the_same_logits(tiny_model, data, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.core import checkpoint as ckpt
    from studio.core.lora import apply_lora
    from studio.core.optim import build_optim

    cfg = config(tiny_model, data, tmp_path / "r", max_steps=4, save_every=4)
    assert run_training(cfg).type == "done"
    ids = torch.tensor([[5, 17, 42, 99, 7, 3]])
    stock = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(tiny_model), tmp_path / "r" / "adapter"
    ).eval()
    ours = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model), cfg.lora)
    optim = build_optim(ours, cfg.train, 4, "cpu")  # the run's group layout
    ckpt.load_training_state(
        tmp_path / "r" / "checkpoints" / "step-000004", ours, optim.optimizer, optim.scheduler
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    with torch.no_grad():
        a, b, c = (
            stock(input_ids=ids).logits,
            ours.eval()(input_ids=ids).logits,
            base(input_ids=ids).logits,
        )
    assert torch.allclose(a, b, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-4)  # the adapter changed the model


def test_qlora_4bit_trains_on_cpu(tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, tmp_path / "q", max_steps=4)
    cfg.model = ModelConfig(path=str(tiny_model), quant="4bit")
    events = list(train(cfg))
    assert events[-1].type == "done", events[-1]
    assert any(e.type == "log" and "trainable parameters" in e.message for e in events)
    import bitsandbytes as bnb
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from studio.core.models import load_model

    loaded = load_model(cfg.model)
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.model.modules())
    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), events[-1].adapter)
    ls = [e.loss for e in events if e.type == "step"]
    assert len(ls) == 4 and all(x == x for x in ls)


def test_python_api(tiny_model, data, tmp_path):
    from studio import LoraConfig as PublicLoraConfig
    from studio import Trainer

    result = Trainer(
        model_path=str(tiny_model),
        config=PublicLoraConfig(
            target_modules=["q_proj", "v_proj"], r=16, lora_alpha=32, lora_dropout=0.1
        ),
        output=str(tmp_path / "api"),
        seq_len=64,
    ).train(data_path=str(data), epochs=3)
    assert result.status == "completed" and (result.adapter_path / "adapter_config.json").is_file()
    assert (
        result.metrics["final_loss"] > 0
        and len(result.metrics["losses"]) == result.metrics["steps"]
    )
    conf = json.loads((result.adapter_path / "adapter_config.json").read_text())
    assert sorted(conf["target_modules"]) == ["q_proj", "v_proj"] and conf["r"] == 16


def step_losses(cfg):
    events = list(train(cfg))
    assert events[-1].type == "done", events[-1]
    return [e.loss for e in events if e.type == "step"], events


def test_grad_accumulation_normalises_like_one_big_batch(tiny_model, data, tmp_path):
    big = config(tiny_model, data, tmp_path / "big", max_steps=4, batch_size=4)
    acc = config(tiny_model, data, tmp_path / "acc", max_steps=4, batch_size=2, grad_accum=2)
    for c in (big, acc):
        c.lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0)
    a, _ = step_losses(big)
    b, _ = step_losses(acc)
    assert a == pytest.approx(b, rel=1e-5)


def test_gradient_checkpointing_gives_the_same_losses(tiny_model, data, tmp_path):
    plain = config(tiny_model, data, tmp_path / "p", max_steps=3)
    ckpt = config(tiny_model, data, tmp_path / "g", max_steps=3, gradient_checkpointing=True)
    for c in (plain, ckpt):
        c.lora = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0)
    assert step_losses(plain)[0] == pytest.approx(step_losses(ckpt)[0], rel=1e-5)


def test_dora_and_rslora_train(tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, tmp_path / "d", max_steps=2)
    cfg.lora = LoraConfig(
        r=4, lora_alpha=8, use_dora=True, use_rslora=True, target_modules=["q_proj", "o_proj"]
    )
    losses_, events = step_losses(cfg)
    conf = json.loads((Path(events[-1].adapter) / "adapter_config.json").read_text())
    assert conf["use_dora"] and conf["use_rslora"] and len(losses_) == 2


def test_qlora_8bit_trains_on_cpu(tiny_model, data, tmp_path):
    cfg = config(tiny_model, data, tmp_path / "q8", max_steps=2)
    cfg.model = ModelConfig(path=str(tiny_model), quant="8bit")
    losses_, _ = step_losses(cfg)
    assert len(losses_) == 2 and all(x == x for x in losses_)


def test_event_log_starts_a_fresh_line_after_a_torn_one(tmp_path):
    from studio.core.events import EventLog, Log

    path = tmp_path / "events.jsonl"
    path.write_text(
        '{"type": "step", "step": 1, "epoch": 0.1, "loss": 2.0, "lr": 0.1, "grad_norm": 1, "tokens_per_s": 1, "elapsed_s": 1, "eta_s": 1}\n{"type": "st'
    )
    log = EventLog(path)
    log.write(Log("resumed"))
    log.close()
    events = read_events(path)
    assert [e.type for e in events] == ["step", "log"] and events[1].message == "resumed"


def test_a_run_records_its_process(tiny_model, data, tmp_path):
    from studio.core import runs

    run_training(config(tiny_model, data, tmp_path / "p", max_steps=1))
    record = runs.read_process(tmp_path / "p")
    assert record["pid"] == os.getpid() and record["create_time"]


def test_skipped_records_of_both_files_are_reported_in_the_run_log(tiny_model, tmp_path):
    train_path = write_data(tmp_path / "train.jsonl")
    with open(train_path, "a", encoding="utf-8") as f:
        f.write('{"messages": [{"role": "user", "content": "no answer"}]}\n')  # line 25
    val_path = write_data(tmp_path / "val.jsonl", n=4)
    text = val_path.read_text(encoding="utf-8").splitlines()
    text.insert(2, "{not json")  # line 3
    val_path.write_text("\n".join(text) + "\n", encoding="utf-8")
    cfg = config(tiny_model, train_path, tmp_path / "run", max_steps=1)
    cfg.data.eval_path = str(val_path)
    warnings = [e.message for e in train(cfg) if e.type == "log" and e.level == "warning"]
    assert len(warnings) == 2, warnings
    assert "1 record(s) of the training file train.jsonl skipped: line 25:" in warnings[0]
    assert "of the validation file val.jsonl skipped: line 3: malformed JSON" in warnings[1]
    assert f"studio data inspect {val_path}" in warnings[1]


def test_checkpoints_are_automatic_by_default(tiny_model, data, tmp_path, monkeypatch):
    from studio.core import train as train_module

    assert train_module.auto_save_every(1000) == 100 and train_module.auto_save_every(5) == 1
    cfg = config(tiny_model, data, tmp_path / "auto", max_steps=20)
    assert cfg.train.save_every == 0  # the default
    saved = [e.step for e in train(cfg) if e.type == "checkpoint"]
    assert saved == list(range(2, 21, 2))  # about ten a run: a kill never costs it all
    # Automatic saving also bounds the time between checkpoints.
    monkeypatch.setattr(train_module, "AUTO_SAVE_SECONDS", 0.0)
    cfg = config(tiny_model, data, tmp_path / "timed", max_steps=5)
    monkeypatch.setattr(train_module, "auto_save_every", lambda total: 1000)
    assert [e.step for e in train(cfg) if e.type == "checkpoint"] == [1, 2, 3, 4, 5]
    # An explicit interval is exact.
    cfg = config(tiny_model, data, tmp_path / "every3", max_steps=7, save_every=3)
    assert [e.step for e in train(cfg) if e.type == "checkpoint"] == [3, 6, 7]


def test_validation_examples_left_out_are_reported(tiny_model, data, tmp_path):
    val_path = write_data(tmp_path / "val.jsonl", n=3)
    long = {"messages": [{"role": "user", "content": "hi"},
                         {"role": "assistant", "content": "word " * 400}]}  # fmt: skip
    with open(val_path, "a", encoding="utf-8") as f:
        f.write(json.dumps(long) + "\n")
    cfg = config(tiny_model, data, tmp_path / "run", max_steps=1)
    cfg.data.eval_path, cfg.data.overlong = str(val_path), "drop"
    warnings = [e.message for e in train(cfg) if e.type == "log" and e.level == "warning"]
    assert any(w.startswith("validation examples: 3 examples") and "dropped" in w for w in warnings)


@pytest.mark.parametrize("listed", [True, False])
def test_loss_matches_the_models_own_for_models_that_scale_their_logits(
    tiny_model, tmp_path, monkeypatch, listed
):
    import torch
    from transformers import GraniteConfig, GraniteForCausalLM

    from studio.core import objective as train_module
    from studio.core.config import LoraConfig as StudioLora
    from studio.core.lora import apply_lora

    if not listed:  # the check on the first batch must catch what the key list misses
        monkeypatch.setattr(train_module, "SCALED_LOGITS", ())
    torch.manual_seed(0)
    conf = GraniteConfig(vocab_size=128, hidden_size=64, intermediate_size=128,
                         num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         logits_scaling=8.0)  # fmt: skip
    model = apply_lora(GraniteForCausalLM(conf), StudioLora(r=4, lora_alpha=8, lora_dropout=0.0))
    ids = torch.randint(0, 128, (2, 24))
    batch = {"input_ids": ids, "labels": ids.clone(),
             "position_ids": torch.arange(24).expand(2, 24)}  # fmt: skip
    loss_fn = train_module.LossFn(model)
    total, count = loss_fn(batch)
    own = model(input_ids=ids, labels=ids, use_cache=False).loss
    assert not loss_fn.fast
    assert abs(float(total) / count - float(own)) < 1e-4


def test_the_fast_loss_path_stays_on_for_plain_models(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    from studio.core.config import LoraConfig as StudioLora
    from studio.core.lora import apply_lora
    from studio.core.objective import LossFn

    model = apply_lora(AutoModelForCausalLM.from_pretrained(str(tiny_model)), StudioLora(r=4))
    ids = torch.randint(0, 100, (1, 20))
    batch = {"input_ids": ids, "labels": ids.clone(), "position_ids": torch.arange(20)[None]}
    loss_fn = LossFn(model)
    total, count = loss_fn(batch)
    assert loss_fn.fast and loss_fn.checked
    model.eval()
    own = model(input_ids=ids, labels=ids, use_cache=False).loss
    assert abs(float(total) / count - float(own)) < 1e-3


def test_events_are_standard_json_even_with_inf_or_nan(tmp_path):
    from studio.core.events import EventLog, Step

    log = EventLog(tmp_path / "events.jsonl")
    log.write(Step(step=1, epoch=0.1, loss=2.0, lr=1e-3, grad_norm=float("inf"),
                   tokens_per_s=10.0, elapsed_s=1.0, eta_s=float("nan")))  # fmt: skip
    log.close()
    text = (tmp_path / "events.jsonl").read_text()
    assert "Infinity" not in text and "NaN" not in text
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON: {c}"))
    assert row["grad_norm"] is None and row["eta_s"] is None and row["loss"] == 2.0


def test_python_api_resume_continues_the_same_run(tiny_model, data, tmp_path, monkeypatch):
    from studio import Trainer
    from studio.core.errors import ConfigError

    monkeypatch.chdir(tmp_path)  # no output=: runs/run-<time> under the current folder
    trainer = Trainer(model_path=str(tiny_model), seq_len=64, save_every=2)
    with pytest.raises(ConfigError, match="output"):
        trainer.train(data_path=str(data), resume=True)  # nothing to continue yet
    first = trainer.train(data_path=str(data), max_steps=2)
    more = trainer.train(data_path=str(data), max_steps=4, resume=True)
    assert more.status == "completed" and more.adapter_path.parent == first.adapter_path.parent
    assert more.metrics["steps"] == 4


def test_a_validation_loss_that_overflows_is_said(tiny_model, data, tmp_path, monkeypatch):
    from studio.core import train as train_module

    monkeypatch.setattr(train_module, "evaluate_sums", lambda *a, **k: (float("nan"), 1))
    cfg = config(tiny_model, data, tmp_path / "run", max_steps=2)
    events = list(train(cfg))
    assert events[-1].type == "done"  # training itself went on
    assert any(e.type == "log" and e.level == "warning" and "validation loss is nan" in e.message
               for e in events)  # fmt: skip


def test_resume_refuses_a_checkpoint_of_another_lora_layout(tiny_model, data, tmp_path):
    from studio.core.errors import ModelError

    cfg = config(tiny_model, data, tmp_path / "run", max_steps=2, save_every=2)
    assert run_training(cfg).type == "done"
    cfg.lora = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.1)  # not the rank it was saved with
    with pytest.raises(ModelError, match="step-000002"):
        next(iter(train(cfg, resume=True)))
