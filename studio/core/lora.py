"""Wrap a base model with LoRA adapters through peft (and prepare k-bit bases for QLoRA)."""

from __future__ import annotations

from studio.core.config import LoraConfig
from studio.core.errors import ConfigError
from studio.core.models import linear_module_names


def peft_config(cfg: LoraConfig, candidates: list[str]):
    import peft

    targets = cfg.target_modules
    if targets != "all-linear":
        unknown = [t for t in targets if t not in candidates]
        if unknown:
            raise ConfigError(
                f"lora.target_modules: {', '.join(unknown)} not found in this model; "
                f"its linear layers are {', '.join(candidates)} (or use all-linear)",
                field="lora.target_modules",
            )
    return peft.LoraConfig(
        task_type="CAUSAL_LM",
        r=cfg.r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=targets if targets == "all-linear" else list(targets),
        use_rslora=cfg.use_rslora,
        use_dora=cfg.use_dora,
        bias="none",
    )


def apply_lora(
    model, cfg: LoraConfig, *, quantized: bool = False, gradient_checkpointing: bool = False
):
    """Return a peft model whose only trainable parameters are the LoRA weights."""
    import peft

    if quantized:
        model = peft.prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        # transformers 5 renamed it; the old name still works but warns.
        kwargs = {"use_reentrant": False}
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    model.config.use_cache = False
    return peft.get_peft_model(model, peft_config(cfg, linear_module_names(model)))


def count_parameters(model) -> tuple[int, int]:
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
