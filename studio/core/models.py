"""Load a base model and its tokenizer, safely.

A local Hugging Face folder or a hub id. `trust_remote_code` stays off unless asked, and
pickle-based `.bin` weights are refused unless `allow_pickle` (they can run code on load).
Heavy imports happen inside the functions so the GUI can import this module for free.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from studio.core.config import ModelConfig
from studio.core.errors import ModelError
from studio.core.hub import PICKLE_SUFFIXES

LOAD_LOCK = threading.Lock()
"""Held around every from_pretrained of a model (see load_model)."""

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json")


def is_local(path: str) -> bool:
    """A path (absolute, relative, ~) rather than a hub id like `org/name`."""
    p = str(path)
    return (
        Path(p).expanduser().exists()
        or p.startswith((".", "/", "~", "\\"))
        or (len(p) > 1 and p[1] == ":")
        or p.count("/") > 1
    )


def check_local_folder(path: str, allow_pickle: bool = False) -> Path:
    """Raise a ModelError naming what is missing from a model folder."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelError(f"model.path: no such folder: {folder}", field="model.path")
    if not folder.is_dir():
        raise ModelError(
            f"model.path: {folder} is a file; give the model's folder", field="model.path"
        )
    if not (folder / "config.json").is_file():
        raise ModelError(
            f"model.path: {folder} has no config.json; it is not a Hugging Face model folder",
            field="model.path",
        )
    names = {p.name for p in folder.iterdir()}
    has_safetensors = any(n.endswith(".safetensors") for n in names)
    has_pickle = any(n.endswith(PICKLE_SUFFIXES) for n in names)
    if not has_safetensors:
        if has_pickle and not allow_pickle:
            raise ModelError(
                f"model.path: {folder} holds only pickle-based weights (.bin), which can run "
                "arbitrary code when loaded; convert them to safetensors, or pass --allow-pickle "
                "if you trust their source",
                field="model.allow_pickle",
            )
        if not has_pickle:
            raise ModelError(
                f"model.path: {folder} has no weights (*.safetensors)", field="model.path"
            )
    if not any(n in names for n in TOKENIZER_FILES):
        raise ModelError(
            f"model.path: {folder} has no tokenizer (tokenizer.json or tokenizer_config.json)",
            field="model.path",
        )
    return folder


def read_config(path: str) -> dict:
    p = Path(path).expanduser() / "config.json"
    try:
        config = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ModelError(f"model.path: cannot read {p}: {e}", field="model.path") from None
    except RecursionError:
        raise ModelError(
            f"model.path: {p} is nested too deeply to be a model config", field="model.path"
        ) from None
    if not isinstance(config, dict):
        raise ModelError(
            f"model.path: {p} must hold a JSON object, not {type(config).__name__}",
            field="model.path",
        )
    return config


def context_length(config: dict) -> int | None:
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = config.get(key)
        if type(value) is int and value > 0:
            return value
    text = config.get("text_config")
    return context_length(text) if isinstance(text, dict) else None


def resolve_device(device: str = "auto") -> str:
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelError(
            "model.device: CUDA was asked for but no CUDA GPU is available", field="model.device"
        )
    if device == "mps" and not torch.backends.mps.is_available():
        raise ModelError(
            "model.device: MPS was asked for but is not available", field="model.device"
        )
    return device


def resolve_dtype(dtype: str, device: str):
    """auto: bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    if device == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _hub_kwargs(cfg: ModelConfig) -> dict:
    return {"trust_remote_code": cfg.trust_remote_code}


def _wrap_load_error(e: Exception, path: str) -> ModelError:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    if "trust_remote_code" in str(e):
        return ModelError(
            f"model.trust_remote_code: {path} needs code from its own folder to load; "
            "pass --trust-remote-code only if you trust its source",
            field="model.trust_remote_code",
        )
    if not is_local(path):
        return ModelError(
            f"model.path: could not fetch {path!r} from the Hugging Face hub ({msg}). "
            "Check the id and your connection, or give a local folder.",
            field="model.path",
        )
    return ModelError(f"model.path: could not load {path}: {msg}", field="model.path")


def load_tokenizer(path: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    if not is_local(path):
        from studio.core.hub import ensure_model, is_hub_id

        if is_hub_id(path):  # its config and tokenizer files from the cache, fetched if need be
            path = ensure_model(path, weights=False, trust_remote_code=trust_remote_code)
    if is_local(path):
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model.path: no such folder: {folder}", field="model.path")
        if not any((folder / n).exists() for n in TOKENIZER_FILES):
            raise ModelError(
                f"model.path: {folder} has no tokenizer (tokenizer.json or tokenizer_config.json)",
                field="model.path",
            )
        path = str(folder)
    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:  # transformers raises many types; the user needs one sentence
        raise _wrap_load_error(e, path) from None
    if tok.pad_token is None:
        # Padding positions never carry loss, so reusing EOS as the pad token is safe.
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


@dataclass
class LoadedModel:
    model: object
    tokenizer: object
    device: str
    dtype: object
    quant: str
    path: str


def quantization_config(cfg: ModelConfig, compute_dtype):
    if cfg.quant == "none":
        return None
    from transformers import BitsAndBytesConfig

    if cfg.quant == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=cfg.double_quant,
        bnb_4bit_compute_dtype=compute_dtype,
    )


def load_model(
    cfg: ModelConfig, *, with_tokenizer: bool = True, on_download=None, cancel=None
) -> LoadedModel:
    """Load the base model (optionally 4/8-bit) on the resolved device and dtype.

    A hub id loads from its cached snapshot, downloaded first when the cache lacks files
    (studio.core.hub.ensure_model: `on_download(DownloadProgress)`, `cancel` an Event)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from transformers import AutoModelForCausalLM
    from transformers.utils import logging as hf_logging

    # The per-tensor "Loading weights" bar is noise in our own progress output and logs.
    hf_logging.disable_progress_bar()
    path = cfg.path
    if not path:
        raise ModelError(
            "model.path: no model given; pass --model FOLDER_OR_HUB_ID", field="model.path"
        )
    source, from_hub = path, not is_local(path)
    if from_hub:
        from studio.core.hub import ensure_model

        path = ensure_model(
            path,
            allow_pickle=cfg.allow_pickle,
            trust_remote_code=cfg.trust_remote_code,
            on_progress=on_download,
            cancel=cancel,
        )
    if is_local(path):
        path = str(check_local_folder(path, cfg.allow_pickle))
    device = resolve_device(cfg.device)
    dtype = resolve_dtype(cfg.dtype, device)
    if is_local(path):
        # From the config alone, before anything is built: a stranger's config.json can ask
        # for terabytes (vocab_size 10^10) or ten million layers.
        from studio.core.model_size import check_model_size

        check_model_size(
            read_config(path), device, dtype, cfg.quant, where=str(Path(path) / "config.json")
        )
    tokenizer = load_tokenizer(path, cfg.trust_remote_code) if with_tokenizer else None
    kwargs = dict(_hub_kwargs(cfg), dtype=dtype)
    if not cfg.allow_pickle:
        kwargs["use_safetensors"] = True
    qconf = quantization_config(cfg, dtype)
    if qconf is not None:
        kwargs["quantization_config"] = qconf
        kwargs["device_map"] = {"": device}
    attention = attention_kwargs(device, dtype)
    try:
        # One load at a time in a process: from_pretrained swaps PreTrainedModel.tie_weights
        # class-wide while it runs (transformers' no_tie_weights), and two overlapping loads
        # (the app's step timing and a chat load, say) can leave tying disabled for good.
        with LOAD_LOCK:
            try:
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs, **attention)
            except (ValueError, ImportError):
                if not attention:
                    raise
                # This architecture (or this flash-attn build) cannot: the default attention.
                model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    except ImportError as e:
        raise ModelError(
            f"model.quant: {cfg.quant} loading needs bitsandbytes: {e}", field="model.quant"
        ) from None
    except Exception as e:
        raise _wrap_load_error(e, path) from None
    if qconf is None:
        model.to(device)
    if from_hub and is_local(path):
        # Loaded from the cache's snapshot folder: the hub id is the model's name (what PEFT
        # records as an adapter's base model), not that folder.
        model.config.name_or_path = model.name_or_path = source
        path = source
    return LoadedModel(model, tokenizer, device, dtype, cfg.quant, path)


def attention_kwargs(device: str, dtype, has_flash: bool | None = None) -> dict:
    """Variable-length attention kernels for packed rows, where present: flash-attention 2 on
    a CUDA GPU in 16-bit. It keeps attention inside each packed example without building a
    row-length-squared mask; elsewhere transformers' default attention does it with a mask."""
    import importlib.util

    import torch

    if has_flash is None:
        has_flash = importlib.util.find_spec("flash_attn") is not None
    if device == "cuda" and has_flash and dtype in (torch.bfloat16, torch.float16):
        return {"attn_implementation": "flash_attention_2"}
    return {}


def linear_layers(model):
    """(short name, module) for every linear layer but the LM head: the LoRA candidates.

    bitsandbytes' 4- and 8-bit layers subclass nn.Linear, so quantized models count too.
    """
    import torch

    for name, module in model.named_modules():
        short = name.rsplit(".", 1)[-1]
        if isinstance(module, torch.nn.Linear) and short != "lm_head":
            yield short, module


def linear_module_names(model) -> list[str]:
    """Candidate LoRA targets: last name parts of the linear layers, lm_head excluded."""
    return sorted({short for short, _ in linear_layers(model)})
