"""What a model's config.json asks for, checked before anything is built or allocated.

A model folder can come from a stranger, and its config.json alone decides how much memory
loading it takes: `vocab_size: 10000000000` asks for terabytes, `num_hidden_layers: 10000000`
for ten million modules. `config_sizes` reads the sizes (refusing values that are not sizes),
`check_structure` bounds the number of modules, and `check_model_size` compares the weights'
size with the memory of the device before `from_pretrained` runs. No torch at import.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from studio.core.errors import ModelError

MAX_LAYERS = 1000
"""Most transformer layers a config may ask for (the deepest published models have ~130)."""

MAX_EXPERT_LAYERS = 200_000
"""Most (layers x experts) of a mixture-of-experts config (DeepSeek-V3: 61 x 256 = 15,616)."""

# Families whose MLP has three matrices (gate, up, down); others are counted with two, so the
# estimate stays a lower bound whatever the architecture.
_GATED = {"silu", "swish", "swiglu", "geglu", "gelu_pytorch_tanh"}

_KEYS = {
    "hidden": ("hidden_size", "n_embd", "d_model"),
    "layers": ("num_hidden_layers", "n_layer", "num_layers"),
    "heads": ("num_attention_heads", "n_head"),
    "kv_heads": ("num_key_value_heads",),
    "head_dim": ("head_dim",),
    "intermediate": ("intermediate_size", "n_inner", "ffn_dim"),
    "expert_intermediate": ("moe_intermediate_size",),
    "vocab": ("vocab_size",),
    "experts": ("num_local_experts", "num_experts", "n_routed_experts"),
    "shared_experts": ("n_shared_experts",),
    "context": ("max_position_embeddings", "n_positions", "max_seq_len"),
}


@dataclass
class ConfigSizes:
    """The sizes a config.json states (0 when it does not say)."""

    hidden: int = 0
    layers: int = 0
    heads: int = 0
    kv_heads: int = 0
    head_dim: int = 0
    intermediate: int = 0
    expert_intermediate: int = 0
    vocab: int = 0
    experts: int = 0
    shared_experts: int = 0
    context: int = 0
    gated: bool = True
    tied: bool = False

    @property
    def params(self) -> int:
        """Parameters implied by the sizes: attention, MLP (or experts) and embeddings.

        A lower bound for the usual decoder layouts (norms and biases are left out), so a
        refusal based on it is never a false alarm.
        """
        h, layers = self.hidden, self.layers
        head_dim = self.head_dim or (h // self.heads if self.heads else 0)
        q = self.heads * head_dim if self.heads else h
        kv = (self.kv_heads or self.heads) * head_dim if self.heads else h
        attention = 2 * h * q + 2 * h * kv
        matrices = 3 if self.gated else 2
        inter = self.intermediate or (0 if self.experts else 4 * h)
        if self.experts:
            per_expert = matrices * h * (self.expert_intermediate or inter)
            mlp = per_expert * (self.experts + self.shared_experts)
        else:
            mlp = matrices * h * inter
        embeddings = self.vocab * h * (1 if self.tied else 2)
        return layers * (attention + mlp) + embeddings


def _is_size(value: Any) -> bool:
    return type(value) is int and value >= 0


def _size(cfg: dict, keys: tuple[str, ...], where: str) -> int:
    for key in keys:
        value = cfg.get(key)
        if value is None:
            continue
        if type(value) is list and value and all(_is_size(v) for v in value):
            return min(value)  # one size per layer (Gemma 3n): the smallest keeps a lower bound
        if not _is_size(value):
            raise ModelError(
                f"model.path: {where} has {key}: {str(value)[:40]!r}, which is not a size "
                "(a whole number, 0 or more); the file is damaged or not a model config",
                field="model.path",
            )
        return value
    return 0


def config_sizes(config: Any, where: str = "config.json") -> ConfigSizes:
    """The sizes in a parsed config.json (the language model's, for multimodal configs)."""
    if not isinstance(config, dict):
        raise ModelError(
            f"model.path: {where} must hold a JSON object, not {type(config).__name__}",
            field="model.path",
        )
    text = config.get("text_config")
    cfg = text if isinstance(text, dict) and text else config
    sizes = ConfigSizes(**{name: _size(cfg, keys, where) for name, keys in _KEYS.items()})
    act = cfg.get("hidden_act") or cfg.get("hidden_activation") or cfg.get("activation_function")
    sizes.gated = isinstance(act, str) and act in _GATED
    # transformers ties the embeddings unless the config says not to.
    sizes.tied = cfg.get("tie_word_embeddings", config.get("tie_word_embeddings")) is not False
    return sizes


def check_structure(sizes: ConfigSizes, where: str = "config.json") -> None:
    """Refuse a config whose module count alone would take minutes and gigabytes to build."""
    if sizes.layers > MAX_LAYERS:
        raise ModelError(
            f"model.path: {where} asks for {sizes.layers:,} layers, more than the {MAX_LAYERS:,} "
            "any real model has; the file is damaged or not meant for loading",
            field="model.path",
        )
    if sizes.layers * sizes.experts > MAX_EXPERT_LAYERS:
        raise ModelError(
            f"model.path: {where} asks for {sizes.experts:,} experts in each of {sizes.layers:,} "
            f"layers, more than the {MAX_EXPERT_LAYERS:,} expert layers any real model has",
            field="model.path",
        )


def memory_budget(device: str) -> int | None:
    """Bytes of memory on `device` (the GPU's, or the machine's for cpu/mps); None if unknown."""
    if device == "cuda":
        import torch

        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory)
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, OSError, ValueError):
        return None  # Windows has no sysconf: the check is skipped there


def _bytes_per_param(dtype: Any, quant: str) -> float:
    if quant == "4bit":
        return 0.5
    if quant == "8bit":
        return 1.0
    name = str(dtype).replace("torch.", "")
    return 4.0 if name in ("float32", "auto") else 8.0 if name == "float64" else 2.0


def check_model_size(
    config: Any,
    device: str,
    dtype: Any,
    quant: str = "none",
    *,
    budget: int | None = None,
    where: str = "config.json",
) -> int:
    """The weights' size in bytes that `config` implies; ModelError when it exceeds `budget`
    (default: the device's memory), before anything is allocated."""
    from studio.core.model_info import human_bytes

    sizes = config_sizes(config, where)
    check_structure(sizes, where)
    weights = int(sizes.params * _bytes_per_param(dtype, quant))
    if budget is None:
        budget = memory_budget(device)
    if budget is not None and weights > budget:
        params = sizes.params
        count = f"{params / 1e9:,.1f}B" if params >= 1e8 else f"{params / 1e6:,.1f}M"
        raise ModelError(
            f"model.path: {where} describes a model of at least {count} parameters: its weights "
            f"alone take about {human_bytes(weights)} ({str(dtype).replace('torch.', '')}"
            f"{', ' + quant if quant != 'none' else ''}), more than the "
            f"{human_bytes(budget)} of memory on this {device}. Check its sizes (vocab_size "
            f"{sizes.vocab:,}, hidden_size {sizes.hidden:,}, num_hidden_layers {sizes.layers:,}); "
            "for a real model this size, quantize it (--quant 4bit) or use a bigger device",
            field="model.path",
        )
    return weights
