"""Cheap facts about a model, read without loading its weights, and a memory estimate.

`read_model_info` reads config.json, tokenizer_config.json / chat_template.jinja and the
safetensors headers, and builds the model on the meta device (no memory, no weights) to
list its linear layers. `estimate_memory` predicts what training will need, so an
out-of-memory error is foreseen before a minute of compute is spent. No Qt here; torch and
transformers are imported only inside the functions that need them.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.config import PAIR_MODES, RunConfig
from studio.core.errors import ModelError
from studio.core.model_size import check_structure, config_sizes
from studio.core.models import linear_layers

GB = 1024**3
MB = 1024**2
_DTYPE_BYTES = {
    "F64": 8,
    "F32": 4,
    "F16": 2,
    "BF16": 2,
    "I64": 8,
    "I32": 4,
    "I16": 2,
    "I8": 1,
    "U8": 1,
    "BOOL": 1,
    "F8_E4M3": 1,
    "F8_E5M2": 1,
}


@dataclass
class ModelInfo:
    path: str
    """The folder the facts were read from (a snapshot folder for hub ids)."""
    name: str = ""
    source: str = ""
    """The folder or hub id as the user gave it (what goes into run.yaml)."""
    architecture: str = ""
    model_type: str = ""
    num_params: int = 0
    hidden_size: int = 0
    num_layers: int = 0
    num_heads: int = 0
    intermediate_size: int = 0
    vocab_size: int = 0
    context_length: int = 0
    chat_template: bool = False
    dtype: str = ""
    """The dtype the weights are stored in (from config.json)."""
    weights_bytes_on_disk: int = 0
    linear_layers: list[tuple[str, int, int]] = field(default_factory=list)
    """Every nn.Linear except lm_head: (last name component, in_features, out_features)."""
    notes: list[str] = field(default_factory=list)

    @property
    def target_modules(self) -> list[str]:
        """Candidate LoRA target modules: linear layer names, deduplicated, in model order."""
        return list(dict.fromkeys(name for name, _, _ in self.linear_layers))


@dataclass
class CachedModel:
    repo_id: str
    path: str
    """The newest snapshot folder."""
    size_bytes: int


def read_json_object(path: Path) -> dict:
    """The JSON object in `path`, or {} when there is none (missing, damaged, not an object)."""
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def resolve_model_dir(path_or_id: str, *, allow_network: bool = False) -> Path:
    """A local folder for a path or hub id. Hub ids use the local cache unless allow_network."""
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file():
            raise ModelError(
                f"{p} has no config.json; choose the folder that holds the model's config.json and weights."
            )
        return p
    if not path_or_id.strip():
        raise ModelError(
            "Choose a model folder or type a Hugging Face hub id such as Qwen/Qwen2.5-0.5B-Instruct."
        )
    if path_or_id.count("/") != 1 or p.is_absolute() or path_or_id.startswith("."):
        raise ModelError(f"{path_or_id} is neither a model folder nor a hub id (owner/name).")
    from huggingface_hub import hf_hub_download, try_to_load_from_cache

    cached = try_to_load_from_cache(path_or_id, "config.json")
    if isinstance(cached, str):
        return Path(cached).parent
    if not allow_network:
        raise ModelError(
            f"{path_or_id} is not in the local Hugging Face cache yet, so its details come once it "
            "is fetched (the Model page's Fetch from hub or Download; a run downloads it first)."
        )
    try:
        config = hf_hub_download(path_or_id, "config.json")
        # Metadata only: the parameter count then comes from the meta-device model.
        for extra in ("tokenizer_config.json", "chat_template.jinja"):
            try:
                hf_hub_download(path_or_id, extra)
            except Exception:  # optional files: a model need not have them
                pass
    except Exception as e:
        if _offline(e):
            raise ModelError(
                f"Could not fetch {path_or_id}: the Hugging Face hub cannot be reached from this "
                "computer, so choose a model folder or a model already downloaded (Settings "
                "lists them)."
            ) from None
        raise ModelError(
            f"Could not fetch {path_or_id} from the Hugging Face hub: {str(e).splitlines()[0]}"
        ) from None
    return Path(config).parent


def _offline(error: Exception) -> bool:
    """Whether a hub download failed for want of a connection (or HF_HUB_OFFLINE=1)."""
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    # hf_hub_download turns a failed connection into LocalEntryNotFoundError when the file
    # is not cached either; ConnectionError covers calls that let the network error through.
    return isinstance(error, (LocalEntryNotFoundError, OfflineModeIsEnabled, ConnectionError))


def safetensors_header(path: Path) -> dict:
    """The JSON header of a .safetensors file (tensor names, dtypes, shapes), read directly."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        if n > 100 * MB:
            raise ModelError(f"{path} has an implausible safetensors header.")
        return json.loads(f.read(n))


def weight_files(folder: Path) -> list[Path]:
    """The model's safetensors files, picked as for a download (hub.weight_files): those its
    index names, else model.safetensors, else any (a repository may also ship another copy,
    e.g. Mistral's consolidated.safetensors); [] when it has none."""
    from studio.core import hub

    folder = Path(folder)
    names = [p.name for p in folder.iterdir() if p.is_file()] if folder.is_dir() else []
    if not any(n.endswith(".safetensors") for n in names):
        return []
    return [folder / n for n in hub.weight_files(folder.name, names, False, lambda n: folder / n)]


def _count_safetensors(folder: Path) -> tuple[int, int]:
    """(parameter count, bytes) from the safetensors headers in folder."""
    count = size = 0
    for f in weight_files(folder):
        for name, meta in safetensors_header(f).items():
            if name == "__metadata__":
                continue
            n = 1
            for d in meta["shape"]:
                n *= d
            count += n
            size += n * _DTYPE_BYTES.get(meta["dtype"], 2)
    return count, size


def _linear_layers_on_meta(
    folder: Path, trust_remote_code: bool
) -> tuple[list[tuple[str, int, int]], int]:
    """Build the model on the meta device; return its linear layers and parameter count."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
    layers = [(short, m.in_features, m.out_features) for short, m in linear_layers(model)]
    return layers, sum(p.numel() for p in model.parameters())


def read_model_info(
    path_or_id: str, *, allow_network: bool = False, trust_remote_code: bool = False
) -> ModelInfo:
    """Facts about a model from its files; never loads weights. Raises ModelError."""
    folder = resolve_model_dir(path_or_id, allow_network=allow_network)
    cfg = read_json_object(folder / "config.json")
    if not cfg:
        raise ModelError(f"{folder / 'config.json'} is not valid JSON (or not a JSON object).")
    tok_cfg = read_json_object(folder / "tokenizer_config.json")
    has_template = bool(
        tok_cfg.get("chat_template")
        or (folder / "chat_template.jinja").is_file()
        or (folder / "chat_template.json").is_file()
    )
    sizes = config_sizes(cfg, str(folder / "config.json"))
    archs = cfg.get("architectures")
    arch = archs[0] if isinstance(archs, list) and archs and isinstance(archs[0], str) else ""
    model_type = cfg.get("model_type")
    dtype = cfg.get("dtype") or cfg.get("torch_dtype")
    info = ModelInfo(
        path=str(folder),
        name=path_or_id if not Path(path_or_id).expanduser().is_dir() else folder.name,
        source=path_or_id if not Path(path_or_id).expanduser().is_dir() else str(folder),
        architecture=arch,
        model_type=model_type if isinstance(model_type, str) else "",
        hidden_size=sizes.hidden,
        num_layers=sizes.layers,
        num_heads=sizes.heads,
        intermediate_size=sizes.intermediate,
        vocab_size=sizes.vocab,
        context_length=sizes.context,
        chat_template=has_template,
        dtype=dtype if isinstance(dtype, str) else "",
    )
    if not info.intermediate_size and info.hidden_size:
        info.intermediate_size = 4 * info.hidden_size
    try:
        info.num_params, info.weights_bytes_on_disk = _count_safetensors(folder)
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        RecursionError,
        struct.error,
    ) as e:
        info.notes.append(f"Could not read the safetensors headers: {e}")
    # Building the structure costs a Python object per module: refuse absurd counts first.
    check_structure(sizes, str(folder / "config.json"))
    try:
        info.linear_layers, meta_count = _linear_layers_on_meta(folder, trust_remote_code)
        if meta_count and not (info.num_params and _quantized(cfg)):
            info.num_params = meta_count
    except Exception as e:  # unknown architecture, remote code refused...
        info.notes.append(
            f"Could not build the model structure ({str(e).splitlines()[0]}); LoRA targets are a guess."
        )
        info.linear_layers = _guess_linear_layers(info)
    if not info.num_params:
        info.notes.append(
            "No safetensors weights found; the parameter count is estimated from the config."
        )
        info.num_params = sizes.params
    if not has_template:
        info.notes.append(
            "No chat template of its own: conversations need a built-in one (data.template: "
            "chatml, alpaca or llama2); the wizard picks chatml."
        )
    return info


def _quantized(cfg: dict) -> bool:
    return bool(cfg.get("quantization_config"))


def _guess_linear_layers(info: ModelInfo) -> list[tuple[str, int, int]]:
    h, i = info.hidden_size, info.intermediate_size
    per_layer = [("q_proj", h, h), ("k_proj", h, h), ("v_proj", h, h), ("o_proj", h, h),
                 ("gate_proj", h, i), ("up_proj", h, i), ("down_proj", i, h)]  # fmt: skip
    return per_layer * info.num_layers


def list_cached_models() -> list[CachedModel]:
    """Models in the local Hugging Face cache, largest first; [] when there is no cache."""
    try:
        from huggingface_hub import constants, scan_cache_dir

        # Read now, not scan_cache_dir's default (bound when huggingface_hub was imported).
        cache = scan_cache_dir(constants.HF_HUB_CACHE)
    except Exception:  # no cache folder, unreadable cache
        return []
    found = []
    for repo in cache.repos:
        if repo.repo_type != "model" or not repo.revisions:
            continue
        newest = max(repo.revisions, key=lambda r: r.last_modified)
        if (Path(newest.snapshot_path) / "config.json").exists():
            found.append(CachedModel(repo.repo_id, str(newest.snapshot_path), repo.size_on_disk))
    return sorted(found, key=lambda m: m.size_bytes, reverse=True)


# --- memory estimate --------------------------------------------------------------------


@dataclass
class MemoryEstimate:
    weights: int
    lora: int
    optimizer: int
    activations: int
    overhead: int
    lora_params: int
    weight_format: str
    device_total: int | None = None
    teacher: int = 0
    """Distillation: the teacher's weights and its logits for one chunk of answer tokens."""

    @property
    def total(self) -> int:
        return (
            self.weights + self.lora + self.optimizer + self.activations + self.overhead
            + self.teacher
        )  # fmt: skip

    @property
    def fits(self) -> bool | None:
        """None when the device memory is unknown."""
        if self.device_total is None:
            return None
        return self.total <= self.device_total * 0.95

    def summary(self) -> str:
        parts = (
            f"weights {human_bytes(self.weights)} ({self.weight_format}), "
            f"LoRA {human_bytes(self.lora)} ({self.lora_params / 1e6:.2f}M params), "
            f"optimizer {human_bytes(self.optimizer)}, activations {human_bytes(self.activations)}, "
            f"overhead {human_bytes(self.overhead)}"
        )
        if self.teacher:
            parts += f", teacher {human_bytes(self.teacher)}"
        line = f"Estimated memory: {human_bytes(self.total)} ({parts})"
        if self.fits is True:
            line += f"; fits in {human_bytes(self.device_total)}."
        elif self.fits is False:
            line += (
                f"; WILL NOT FIT in {human_bytes(self.device_total)}: lower the batch size or sequence "
                "length, turn on gradient checkpointing, or quantize to 4bit."
            )
        else:
            line += "."
        return line


def human_bytes(n: float | None) -> str:
    if n is None:
        return "?"
    for unit, size in (("GB", GB), ("MB", MB), ("KB", 1024)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def lora_param_count(info: ModelInfo, cfg: RunConfig) -> int:
    targets = cfg.lora.target_modules
    chosen = [
        (n, i, o) for n, i, o in info.linear_layers if targets == "all-linear" or n in targets
    ]
    r = cfg.lora.r
    count = sum(r * (i + o) for _, i, o in chosen)
    if cfg.lora.use_dora:
        count += sum(o for _, _, o in chosen)  # the magnitude vector
    return count


def estimate_memory(
    info: ModelInfo,
    cfg: RunConfig,
    device_total_bytes: int | None = None,
    *,
    on_gpu: bool | None = None,
    teacher: ModelInfo | None = None,
) -> MemoryEstimate:
    """Predict training memory for cfg on info's model.

    on_gpu decides what dtype `auto` means (bf16/fp16 on a GPU, fp32 on the CPU); by default
    it follows cfg.model.device, and for `auto` whether device_total_bytes is given. The mode
    counts too: a preference row holds both answers of its pairs (up to 2 x seq_len tokens; the
    DPO reference pass keeps no activations), and distillation adds `teacher`'s weights.
    """
    if on_gpu is None:
        on_gpu = cfg.model.device in ("cuda", "mps") or (
            cfg.model.device == "auto" and device_total_bytes is not None
        )
    dtype = cfg.model.dtype
    if dtype == "auto":
        dtype = "bfloat16" if on_gpu else "float32"
    elem = 4 if dtype == "float32" else 2

    weights, fmt = _weight_bytes(info, cfg.model.quant, cfg.model.double_quant, elem, dtype)
    lora_params = lora_param_count(info, cfg)
    lora = lora_params * 4  # LoRA weights are kept in fp32
    optimizer = lora_params * 12  # AdamW: two fp32 moments + an fp32 gradient

    tokens = cfg.train.batch_size * cfg.train.seq_len * (2 if cfg.train.mode in PAIR_MODES else 1)
    h, inter, layers = (
        info.hidden_size,
        info.intermediate_size or 4 * info.hidden_size,
        info.num_layers,
    )
    act_elem = 2 if on_gpu and cfg.train.mixed_precision == "auto" else elem
    per_layer = tokens * (10 * h + 2 * inter) * act_elem  # saved inputs of attention and MLP
    if cfg.train.gradient_checkpointing:
        body = tokens * h * act_elem * layers + per_layer  # layer inputs + one recomputed layer
    else:
        body = per_layer * layers
    logits = tokens * info.vocab_size * 4 * 2  # fp32 logits and their gradient
    activations = int(body + logits)
    overhead = int(0.05 * (weights + activations)) + (512 * MB if on_gpu else 64 * MB)
    return MemoryEstimate(
        weights=weights,
        lora=lora,
        optimizer=optimizer,
        activations=activations,
        overhead=overhead,
        lora_params=lora_params,
        weight_format=fmt,
        device_total=device_total_bytes,
        teacher=_teacher_bytes(teacher, cfg, elem, dtype) if cfg.train.mode == "distill" else 0,
    )


def _weight_bytes(info: ModelInfo, quant: str, double_quant: bool, elem: int, dtype: str):
    """(bytes of the weights as loaded, what format that is)."""
    n = info.num_params
    linear = min(sum(i * o for _, i, o in info.linear_layers), n)
    if quant == "4bit":
        # NF4: half a byte a weight, plus one absmax per 64 weights (8-bit with double quant).
        scale = (1 if double_quant else 4) / 64
        return int(linear * (0.5 + scale) + (n - linear) * elem), "4-bit NF4"
    if quant == "8bit":
        return int(linear * (1 + 4 / 64) + (n - linear) * elem), "8-bit"
    return n * elem, dtype


def _teacher_bytes(teacher: ModelInfo | None, cfg: RunConfig, elem: int, dtype: str) -> int:
    """The teacher's weights (at distill.teacher_quant) and, per chunk of answer tokens, its
    and the student's fp32 logits and log-softmaxes (the chunks bound this)."""
    if teacher is None:
        return 0
    d = cfg.distill
    weights, _ = _weight_bytes(teacher, d.teacher_quant, True, elem, dtype)
    return weights + d.chunk_tokens * teacher.vocab_size * 4 * 4
