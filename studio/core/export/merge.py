"""Merge a LoRA adapter into its base model, in 16-bit (or 32-bit), never into a 4-bit base.

The base is loaded again in the dtype it is stored in (bf16 stays bf16, fp16 stays fp16, fp32
stays fp32) unless the user picks another, the adapter is applied with peft and folded into
the weights (`merge_and_unload`). A QLoRA adapter was trained against the 4-bit base; merged
into the 16-bit weights it gives answers close to, not identical with, the 4-bit chat.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from studio.core.config import ModelConfig
from studio.core.data.templates import ChatTemplate
from studio.core.errors import ModelError
from studio.core.infer import AdapterInfo, chat_template

STORED = {"bfloat16": "bfloat16", "float16": "float16", "float32": "float32"}


@dataclass
class Merged:
    """What the writers read, from either merge: peft's in memory or stream_merge's from files."""

    tokenizer: object
    template: ChatTemplate
    """The chat template the run trained with."""
    tensors: object
    """name -> tensor (the merged model's state dict) or LazyTensor (merged when read)."""
    model: object = None
    """The merged transformers model (plain weights, no peft wrapper), when it was loaded."""


def stored_dtype(config: dict) -> str:
    """The dtype config.json says the weights are stored in (float32 when it does not say)."""
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    value = str(text.get("torch_dtype") or text.get("dtype") or config.get("torch_dtype") or "")
    return STORED.get(value.replace("torch.", ""), "float32")


def merge_dtype(requested: str, config: dict) -> str:
    return stored_dtype(config) if requested == "auto" else requested


def run_quant(info: AdapterInfo) -> str:
    """The quantization the run's base was loaded with while training (none when unknown)."""
    if info.run_dir is None:
        return "none"
    from studio.core.config import RunConfig
    from studio.core.errors import StudioError

    try:
        return RunConfig.load(info.run_dir / "run.yaml").model.quant
    except StudioError:
        return "none"


def load_merged(
    info: AdapterInfo,
    base: str,
    dtype: str,
    *,
    allow_pickle: bool = False,
    trust_remote_code: bool = False,
) -> Merged:
    """Base (quant none, on the CPU) + adapter, merged. Raises ModelError for a misfit."""
    from peft import PeftModel

    from studio.core.lora import check_adapter_fits
    from studio.core.models import load_model

    cfg = ModelConfig(
        path=base,
        quant="none",
        device="cpu",
        dtype=dtype,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
    )
    loaded = load_model(cfg)
    model = loaded.model
    check_adapter_fits(model, info.folder)  # before peft injects anything
    try:
        peft_model = PeftModel.from_pretrained(model, str(info.folder))
    except Exception as e:  # peft raises many types for a misfit; the user needs one sentence
        raise ModelError(
            f"adapter: {info.folder} could not be applied to {base}: "
            f"{str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}",
            field="adapter",
        ) from None
    merged = peft_model.merge_and_unload()
    merged.eval()
    template = chat_template(loaded.tokenizer, info.template)
    return Merged(loaded.tokenizer, template, merged.state_dict(), merged)


def end_of_turn_ids(tokenizer, template: ChatTemplate) -> list[int]:
    """Token ids a generation should stop at: eos and each stop string that is one token."""
    ids = []
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    vocab = tokenizer.get_vocab()
    for s in template.stop_strings:
        if s in vocab and vocab[s] not in ids:
            ids.append(vocab[s])
    return ids


def save_hf(merged: Merged, folder: Path, jinja: str) -> None:
    """A Hugging Face folder: safetensors shards, config, tokenizer with the trained chat
    template, and a generation config that stops at the end-of-turn token."""
    model, tokenizer = merged.model, merged.tokenizer
    stops = end_of_turn_ids(tokenizer, merged.template)
    if stops:
        gen = model.generation_config
        gen.eos_token_id = stops if len(stops) > 1 else stops[0]
        if gen.pad_token_id is None and tokenizer.pad_token_id is not None:
            gen.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True, max_shard_size="2GB")
    tokenizer.chat_template = jinja
    tokenizer.save_pretrained(folder)
