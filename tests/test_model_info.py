"""Model facts read without loading weights, and the memory estimate."""

import dataclasses

import pytest

from studio.core.config import LoraConfig, ModelConfig, RunConfig, TrainConfig
from studio.core.errors import ModelError
from studio.core.model_info import (
    GB,
    ModelInfo,
    estimate_memory,
    human_bytes,
    list_cached_models,
    lora_param_count,
    read_model_info,
)


@pytest.fixture(scope="module")
def info(tiny_model):
    return read_model_info(str(tiny_model))


def test_reads_tiny_model_facts(info, tiny_model):
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert info.architecture == "LlamaForCausalLM"
    assert info.num_params == sum(p.numel() for p in model.parameters())
    assert info.context_length == 1024
    assert info.hidden_size == 64 and info.num_layers == 2
    assert info.chat_template is True
    assert info.target_modules == [
        "q_proj",
        "k_proj",
        "v_proj",
        "o_proj",
        "gate_proj",
        "up_proj",
        "down_proj",
    ]
    assert "lm_head" not in info.target_modules
    assert len(info.linear_layers) == 14


def test_no_chat_template_is_reported(tiny_model_no_template):
    info = read_model_info(str(tiny_model_no_template))
    assert info.chat_template is False
    assert any("No chat template" in n for n in info.notes)


def test_missing_config_and_unknown_hub_id_are_clear(tmp_path):
    with pytest.raises(ModelError, match="config.json"):
        read_model_info(str(tmp_path))
    with pytest.raises(ModelError, match="not in the local Hugging Face cache"):
        read_model_info("nobody/no-such-model-xyz")
    with pytest.raises(ModelError, match="neither a model folder nor a hub id"):
        read_model_info("/no/such/folder/at/all")


def test_cache_listing_handles_missing_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "nothing-here"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(tmp_path / "nothing-here"))
    assert list_cached_models() == []


def test_lora_param_count_matches_peft(info, tiny_model):
    import torch
    from peft import LoraConfig as PeftLora
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    peft_model = get_peft_model(model, PeftLora(r=4, target_modules=["q_proj", "v_proj"]))
    trainable = sum(p.numel() for p in peft_model.parameters() if p.requires_grad)
    cfg = RunConfig(lora=LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    assert lora_param_count(info, cfg) == trainable


def _big() -> ModelInfo:
    """A 7B-like model: 32 layers, hidden 4096."""
    h, i = 4096, 11008
    layer = [("q_proj", h, h), ("k_proj", h, h), ("v_proj", h, h), ("o_proj", h, h),
             ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]  # fmt: skip
    linear = layer * 32
    n = sum(a * b for _, a, b in linear) + 2 * 32000 * h
    return ModelInfo(path="x", num_params=n, hidden_size=h, num_layers=32, intermediate_size=i,
                     vocab_size=32000, linear_layers=linear)  # fmt: skip


def test_memory_estimate_components_and_fit():
    info = _big()
    cfg = RunConfig(
        model=ModelConfig(dtype="bfloat16"), train=TrainConfig(batch_size=1, seq_len=512)
    )
    est = estimate_memory(info, cfg, 80 * GB, on_gpu=True)
    assert est.weights == info.num_params * 2
    assert 12 * GB < est.weights < 13 * GB  # 6.7B params in bf16
    assert est.optimizer == est.lora_params * 12 and est.lora == est.lora_params * 4
    assert est.total == est.weights + est.lora + est.optimizer + est.activations + est.overhead
    assert est.fits is True and "fits in 80.0 GB" in est.summary()
    small = estimate_memory(info, cfg, 8 * GB, on_gpu=True)
    assert small.fits is False and "WILL NOT FIT" in small.summary()
    assert estimate_memory(info, cfg).fits is None


def test_quantization_checkpointing_and_batch_change_the_estimate():
    info = _big()
    base = RunConfig(
        model=ModelConfig(dtype="bfloat16"), train=TrainConfig(batch_size=4, seq_len=2048)
    )
    q4 = dataclasses.replace(base, model=ModelConfig(dtype="bfloat16", quant="4bit"))
    q8 = dataclasses.replace(base, model=ModelConfig(dtype="bfloat16", quant="8bit"))
    w16, w8, w4 = (estimate_memory(info, c, on_gpu=True).weights for c in (base, q8, q4))
    assert w4 < w8 < w16
    assert 3 * GB < w4 < 5 * GB  # ~0.5 byte a linear weight plus fp16 embeddings
    ckpt = dataclasses.replace(
        base, train=dataclasses.replace(base.train, gradient_checkpointing=True)
    )
    a_full = estimate_memory(info, base, on_gpu=True).activations
    a_ckpt = estimate_memory(info, ckpt, on_gpu=True).activations
    assert a_ckpt < a_full / 3
    bigger = dataclasses.replace(base, train=dataclasses.replace(base.train, batch_size=8))
    assert estimate_memory(info, bigger, on_gpu=True).activations == pytest.approx(
        2 * a_full, rel=0.01
    )
    assert estimate_memory(info, base, on_gpu=False).weights == info.num_params * 2  # dtype set
    auto_cpu = RunConfig(train=TrainConfig(batch_size=1, seq_len=64))
    assert estimate_memory(info, auto_cpu, on_gpu=False).weights == info.num_params * 4


def test_the_estimate_counts_a_preference_rows_two_answers_and_a_teacher():
    from studio.core.config import DistillConfig

    info = _big()
    sft = RunConfig(
        model=ModelConfig(dtype="bfloat16"), train=TrainConfig(batch_size=2, seq_len=512)
    )
    dpo = dataclasses.replace(sft, train=dataclasses.replace(sft.train, mode="dpo"))
    a_sft = estimate_memory(info, sft, on_gpu=True).activations
    # A pair row holds up to 2 x seq_len tokens (both answers); the reference pass keeps nothing.
    assert estimate_memory(info, dpo, on_gpu=True).activations == pytest.approx(2 * a_sft, rel=0.01)
    assert estimate_memory(info, sft, on_gpu=True).teacher == 0

    teacher = _big()
    distill = dataclasses.replace(
        sft,
        train=dataclasses.replace(sft.train, mode="distill"),
        distill=DistillConfig(teacher="t", teacher_quant="4bit", chunk_tokens=1024),
    )
    est = estimate_memory(info, distill, 80 * GB, on_gpu=True, teacher=teacher)
    q4 = RunConfig(model=ModelConfig(dtype="bfloat16", quant="4bit"))
    teacher_weights = estimate_memory(teacher, q4, on_gpu=True).weights  # the same NF4 arithmetic
    assert est.teacher == teacher_weights + 1024 * teacher.vocab_size * 16
    assert (
        est.total
        == est.weights + est.lora + est.optimizer + est.activations + est.overhead + est.teacher
    )
    assert 3 * GB < teacher_weights < 4 * GB < est.teacher < 5 * GB  # NF4 weights + logits
    assert f"teacher {human_bytes(est.teacher)}" in est.summary()
    # Without the teacher's config the estimate says nothing of it rather than guess.
    assert estimate_memory(info, distill, on_gpu=True).teacher == 0
