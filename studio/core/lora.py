"""Wrap a base model with LoRA adapters through peft (and prepare k-bit bases for QLoRA)."""

from __future__ import annotations

from studio.core.config import LoraConfig
from studio.core.errors import ConfigError, ModelError
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


# --- does an adapter fit a model? -------------------------------------------------------

_PREFIX = "base_model.model."
_LORA_PARTS = {
    # adapter-file suffix -> (which LoRA factor, base dimension it must match, which shape axis)
    ".lora_A.weight": ("lora_A", "in_features", 1),
    ".lora_B.weight": ("lora_B", "out_features", 0),
    ".lora_embedding_A": ("lora_embedding_A", "num_embeddings", 1),
    ".lora_embedding_B": ("lora_embedding_B", "embedding_dim", 0),
    ".lora_magnitude_vector.weight": ("lora_magnitude_vector", "out_features", 0),
    ".lora_magnitude_vector": ("lora_magnitude_vector", "out_features", 0),
}


def _norm(name: str) -> str:
    return name.removeprefix(_PREFIX).replace(".base_layer", "")


def _misfit(folder, name: str, why: str, resume: bool = False) -> ModelError:
    hint = (
        "It was saved with other LoRA settings (lora.r, lora.target_modules) than this run has"
        if resume
        else "Was it trained on another model?"
    )
    return ModelError(
        f"adapter: {folder} does not fit this base model (its layer {name} {why}). {hint}",
        field="adapter",
    )


def _adapter_shapes(folder) -> dict[str, list[int]]:
    """Tensor name -> shape, from the adapter's safetensors header (no tensor is read)."""
    from studio.core.model_info import safetensors_header

    path = folder / "adapter_model.safetensors"
    try:
        header = safetensors_header(path)
        shapes = {k: list(v["shape"]) for k, v in header.items() if k != "__metadata__"}
        if not all(all(type(d) is int and d >= 0 for d in s) for s in shapes.values()):
            raise ValueError("a shape that is not a list of sizes")
    except ModelError:
        raise
    except Exception as e:  # truncated file, bad header: one sentence for the user
        raise ModelError(f"adapter: {path} cannot be read ({e})", field="adapter") from None
    return shapes


def _adapter_config(folder) -> dict:
    import json

    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as e:
        raise ModelError(f"adapter: {path} cannot be read ({e})", field="adapter") from None
    if not isinstance(config, dict):
        raise ModelError(f"adapter: {path} must hold a JSON object", field="adapter")
    r = config.get("r")
    if r is not None and (type(r) is not int or r < 1):
        raise ModelError(
            f"adapter: {path} has r: {str(r)[:40]}; the rank must be a whole number, 1 or more",
            field="adapter",
        )
    return config


def _live_lora(module, factor: str):
    """The shape of `factor` (lora_A, ...) of the first adapter injected into `module`."""
    holder = getattr(module, factor, None)
    if holder is None or not hasattr(holder, "values"):
        return None
    for part in holder.values():
        weight = getattr(part, "weight", part)
        return list(weight.shape)
    return None


def check_adapter_fits(model, adapter, *, resume: bool = False) -> None:
    """Refuse, before anything is injected, an adapter that does not fit `model`.

    `adapter` is a folder holding adapter_config.json and adapter_model.safetensors: a run's
    adapter/, or a checkpoint folder. `model` is the base model (chat, serve, export), or for
    `resume=True` the model after LoRA injection (train --resume): then each layer's ranks must
    equal the injected ones and the adapter must cover every injected layer, so the saved
    weights fill the model exactly. Reads only the file's header: nothing is allocated.
    Raises ModelError naming the folder, the layer and the two sizes.
    """
    from pathlib import Path

    folder = Path(adapter)
    config = _adapter_config(folder)
    if not (folder / "adapter_model.safetensors").is_file():
        if any(folder.glob("adapter_model.*")):
            return  # a pickle (.bin) adapter: its shapes cannot be read safely; peft checks
        raise ModelError(
            f"adapter: {folder} has no adapter weights (adapter_model.safetensors)",
            field="adapter",
        )
    shapes = _adapter_shapes(folder)
    modules: dict = {}
    for name, module in model.named_modules():
        modules.setdefault(_norm(name), module)
    # 4- and 8-bit weights are stored packed: their shapes say nothing about the layer's size.
    params = {
        _norm(n): None
        if "Params4bit" in type(p).__name__ or "Int8" in type(p).__name__
        else list(p.shape)
        for n, p in model.named_parameters()
    }
    plain_rank = config.get("peft_type", "LORA") == "LORA" and not config.get("rank_pattern")
    ranks: dict[str, int] = {}
    for key, shape in shapes.items():
        part = next((p for p in _LORA_PARTS if key.endswith(p)), None)
        if part is None:  # a whole saved module (modules_to_save, a resized embedding)
            name = _norm(key).replace(".modules_to_save", "").replace(".original_module", "")
            # Names peft may lay out otherwise are left to peft; a known one must match.
            if params.get(name) is not None and params[name] != shape:
                raise _misfit(folder, name, f"has the shape {shape}, the model's {params[name]}")
            continue
        factor, dim_name, axis = _LORA_PARTS[part]
        name = _norm(key[: -len(part)])
        layer = modules.get(name)
        if layer is None:
            raise _misfit(folder, name, "is not in this model")
        if len(shape) < (1 if factor == "lora_magnitude_vector" else 2):
            raise _misfit(folder, name, f"has a {factor} of shape {shape}, not a matrix")
        live = _live_lora(layer, factor) if resume else None
        if resume and live is None:
            raise _misfit(folder, name, "has no LoRA in the model being resumed", resume)
        if live is not None and live != shape:
            raise _misfit(folder, name, f"has {factor} {shape}, the resumed model's {live}", resume)
        size = getattr(layer, dim_name, None)
        if type(size) is int and size != shape[axis]:
            what = "inputs" if dim_name in ("in_features", "num_embeddings") else "outputs"
            raise _misfit(
                folder, name, f"has another size: {shape[axis]} {what} here, {size} in the model"
            )
        if factor != "lora_magnitude_vector":
            rank = shape[0] if factor.endswith("A") else shape[1]
            other = ranks.setdefault(name, rank)
            if other != rank:
                raise _misfit(folder, name, f"has LoRA factors of ranks {other} and {rank}")
            r = config.get("r")
            if plain_rank and r is not None and rank != r:
                raise _misfit(folder, name, f"has rank {rank}, but adapter_config.json says r={r}")
    if resume:
        injected = {
            n
            for n, m in modules.items()
            if _live_lora(m, "lora_A") or _live_lora(m, "lora_embedding_A")
        }
        missing = sorted(injected - set(ranks))
        if missing:
            raise ModelError(
                f"adapter: {folder} holds no weights for {len(missing)} of the model's LoRA "
                f"layers ({', '.join(missing[:3])}{'...' if len(missing) > 3 else ''}); it was "
                "saved with other lora.target_modules than this run uses",
                field="adapter",
            )
