"""Write GGUF files for llama.cpp / Ollama with the gguf package alone (no compiler, no llama.cpp).

- `write_gguf`: a whole merged model (llama incl. Mistral, qwen2, qwen3) in F32/F16/BF16/Q8_0/
  Q5_0/Q4_0, with its tokenizer and chat template.
- `write_lora_gguf`: a PEFT LoRA adapter alone, for `llama-cli --lora` and Ollama's ADAPTER.

The layout follows llama.cpp's convert_hf_to_gguf.py / convert_lora_to_gguf.py. Tensors are
streamed: their types and sizes are planned first, the header written, then each tensor is
converted and written in turn, so memory stays at the input weights plus one converted tensor.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from studio.core.export.errors import Cancelled, ExportError

SUPPORTED_ARCHS: dict[str, str] = {
    "LlamaForCausalLM": "llama",
    "MistralForCausalLM": "llama",
    "Qwen2ForCausalLM": "qwen2",
    "Qwen3ForCausalLM": "qwen3",
    # config.json's model_type, for configs without an architectures list
    "llama": "llama",
    "mistral": "llama",
    "qwen2": "qwen2",
    "qwen3": "qwen3",
}

QTYPES = ("f32", "f16", "bf16", "q8_0", "q5_0", "q4_0")
LORA_QTYPES = ("f32", "f16", "bf16", "q8_0")


def check_supported(config: dict) -> str:
    """The gguf architecture for an HF config.json dict, or an ExportError naming what is not."""
    names = list(config.get("architectures") or [])
    for name in [*names, config.get("model_type") or ""]:
        if name in SUPPORTED_ARCHS:
            return SUPPORTED_ARCHS[name]
    shown = names[0] if names else config.get("model_type") or "unknown"
    supported = ", ".join(k for k in SUPPORTED_ARCHS if k[0].isupper())
    raise ExportError(
        f"GGUF export does not support the {shown} architecture; it supports {supported}"
    )


# --- types --------------------------------------------------------------------------------


def _ggml(qtype: str):
    from gguf import GGMLQuantizationType

    return GGMLQuantizationType[qtype.upper()]  # F32, F16, BF16, Q8_0, Q5_0, Q4_0


def _file_type(qtype: str) -> int:
    """general.file_type: llama.cpp's llama_ftype (MOSTLY_*: all but the 1-D tensors)."""
    from gguf import LlamaFileType

    return int(LlamaFileType["ALL_F32" if qtype == "f32" else f"MOSTLY_{qtype.upper()}"])


def _nbytes(shape: tuple[int, ...], ggml_type) -> int:
    from gguf import GGML_QUANT_SIZES

    block, size = GGML_QUANT_SIZES[ggml_type]
    return math.prod(shape) // block * size


@dataclass
class _Tensor:
    name: str  # the GGUF name
    shape: tuple[int, ...]  # numpy order (rows, row length)
    ggml_type: object
    load: Callable  # () -> float32 numpy array of `shape`, permuted/scaled as it must be stored
    nbytes: int = 0


@dataclass
class _Plan:
    tensors: list[_Tensor] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)

    def add(self, name, shape, want, load, *, log) -> None:
        """Choose the stored type as llama.cpp's converter does and queue the tensor."""
        from gguf import GGML_QUANT_SIZES
        from gguf import GGMLQuantizationType as T

        shape = tuple(int(s) for s in shape)
        if len(shape) <= 1 or name.endswith("_norm.weight") or not name.endswith(_MATRIX_SUFFIXES):
            ggml_type = T.F32  # norms, biases and vectors: llama.cpp's kernels expect F32
        elif shape[-1] % GGML_QUANT_SIZES[want][0]:
            ggml_type = T.F16  # a row that is not whole blocks cannot be block-quantized
            self.fallbacks.append(name)
            if log:
                log(f"{name}: rows of {shape[-1]} are not whole {want.name} blocks; stored as F16")
        else:
            ggml_type = want
        self.tensors.append(_Tensor(name, shape, ggml_type, load, _nbytes(shape, ggml_type)))


_MATRIX_SUFFIXES = (".weight", ".lora_a", ".lora_b")


def _stream(writer, path: Path, plan: _Plan, progress, cancel) -> int:
    """Header, metadata, tensor index, then the tensors one at a time; the file size back."""
    import numpy as np
    from gguf import quants

    for t in plan.tensors:
        # float32 as the nominal dtype keeps `shape` in elements (uint8 would mean bytes).
        writer.add_tensor_info(t.name, t.shape, np.float32, t.nbytes, raw_dtype=t.ggml_type)
    try:
        writer.write_header_to_file(path=path)
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        total = len(plan.tensors)
        for done, t in enumerate(plan.tensors, 1):
            if cancel is not None and cancel():
                raise Cancelled()
            data = quants.quantize(np.ascontiguousarray(t.load(), dtype=np.float32), t.ggml_type)
            writer.write_tensor_data(data)
            del data
            if progress is not None:
                progress(done, total)
        writer.close()
    except BaseException:
        writer.close()
        path.unlink(missing_ok=True)
        raise
    return path.stat().st_size


def _name_map(arch: str, n_blocks: int):
    import gguf

    by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    return gguf.get_tensor_name_map(by_name[arch], n_blocks)


# --- llama's Q/K layout ---------------------------------------------------------------------


def permute_qk(w, n_head: int, n_head_kv: int | None = None):
    """HF's Q/K rows (two rotary halves per head) -> llama.cpp's (interleaved pairs).

    llama.cpp applies RoPE to adjacent pairs as Meta's original checkpoints did; transformers'
    Llama rotates the two halves of each head. Works on numpy arrays of 1 or 2 dimensions.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def _qk_heads(arch: str, hp: _Hparams, hf_name: str) -> tuple[int, int] | None:
    """(n_head, n_head_kv) for permute_qk when `hf_name` is a llama Q or K projection."""
    if arch != "llama":
        return None  # qwen2/qwen3 are converted in transformers' own (halves) layout
    if ".q_proj." in hf_name + ".":
        return (hp.n_head, hp.n_head)
    if ".k_proj." in hf_name + ".":
        return (hp.n_head, hp.n_head_kv)
    return None


def unpermute_qk(w, n_head: int, n_head_kv: int | None = None):
    """The inverse of permute_qk (llama.cpp's rows back to HF's)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


# --- hyperparameters ------------------------------------------------------------------------


@dataclass
class _Hparams:
    n_layers: int
    hidden: int
    n_head: int
    n_head_kv: int
    head_dim: int
    rope: dict

    @classmethod
    def read(cls, config: dict) -> _Hparams:
        try:
            n_head = int(config["num_attention_heads"])
            hidden = int(config["hidden_size"])
            n_layers = int(config["num_hidden_layers"])
        except KeyError as e:
            raise ExportError(f"config.json has no {e.args[0]}; it is needed for the GGUF") from e
        rope = dict(config.get("rope_parameters") or config.get("rope_scaling") or {})
        rope = dict(rope.get("full_attention", rope))  # per-layer-type form of transformers 5
        rope.setdefault("rope_theta", config.get("rope_theta", 10000.0))
        return cls(
            n_layers=n_layers,
            hidden=hidden,
            n_head=n_head,
            n_head_kv=int(config.get("num_key_value_heads") or n_head),
            head_dim=int(config.get("head_dim") or hidden // n_head),
            rope=rope,
        )


def _add_rope(writer, arch: str, hp: _Hparams, config: dict) -> list[tuple[str, object]]:
    """RoPE metadata; llama 3's frequency table comes back as an extra (name, array) tensor."""
    from gguf import RopeScalingType

    rope = hp.rope
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    kind = (rope.get("rope_type") or rope.get("type") or "default").lower()
    factor = rope.get("factor")
    if kind == "default":
        return []
    if kind == "linear" and factor:
        writer.add_rope_scaling_type(RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(factor))
        return []
    if kind == "yarn" and factor:
        original = rope.get("original_max_position_embeddings") or config.get(
            "original_max_position_embeddings"
        )
        if not original:
            raise ExportError("rope_scaling yarn has no original_max_position_embeddings")
        writer.add_rope_scaling_type(RopeScalingType.YARN)
        writer.add_rope_scaling_factor(float(factor))
        writer.add_rope_scaling_orig_ctx_len(int(original))
        extras = {
            "extrapolation_factor": writer.add_rope_scaling_yarn_ext_factor,
            "attention_factor": writer.add_rope_scaling_yarn_attn_factor,
            "beta_fast": writer.add_rope_scaling_yarn_beta_fast,
            "beta_slow": writer.add_rope_scaling_yarn_beta_slow,
        }
        for key, add in extras.items():
            if rope.get(key) is not None:
                add(float(rope[key]))
        return []
    if kind == "llama3" and arch == "llama":
        return [("rope_freqs.weight", _llama3_factors(rope, hp.head_dim, config))]
    raise ExportError(
        f"rope scaling {kind!r} cannot be written to a {arch} GGUF (llama.cpp reads linear, "
        "yarn and llama3 scaling)"
    )


def _llama3_factors(rope: dict, dim: int, config: dict):
    """Llama 3.1+'s per-frequency RoPE factors, which llama.cpp reads from rope_freqs.weight."""
    import numpy as np

    factor = float(rope.get("factor") or 8.0)
    low, high = float(rope.get("low_freq_factor", 1.0)), float(rope.get("high_freq_factor", 4.0))
    old = float(
        rope.get("original_max_position_embeddings")
        or config.get("original_max_position_embeddings")
        or 8192
    )
    wavelen = 2 * math.pi * float(rope["rope_theta"]) ** (np.arange(0, dim, 2) / dim)
    with np.errstate(divide="ignore", invalid="ignore"):
        smooth = (old / wavelen - low) / (high - low)
        between = 1 / ((1 - smooth) / factor + smooth)
    # short wavelengths keep their frequency, long ones are slowed by `factor`, between: blended
    out = np.where(wavelen < old / high, 1.0, np.where(wavelen > old / low, factor, between))
    return out.astype(np.float32)


def _add_model_metadata(writer, arch, hp: _Hparams, config: dict, n_vocab: int, name, ftype):
    from gguf import GGML_QUANT_VERSION, GGUFType

    writer.add_type(GGUFType.MODEL)
    writer.add_name(name)
    writer.add_file_type(ftype)
    writer.add_quantization_version(GGML_QUANT_VERSION)
    writer.add_vocab_size(n_vocab)
    writer.add_context_length(int(config.get("max_position_embeddings") or 4096))
    writer.add_embedding_length(hp.hidden)
    writer.add_block_count(hp.n_layers)
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(hp.n_head)
    writer.add_head_count_kv(hp.n_head_kv)
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps", 1e-6)))
    if config.get("head_dim"):  # as the converter: explicit when config.json states it
        writer.add_key_length(hp.head_dim)
        writer.add_value_length(hp.head_dim)
    if arch == "llama":
        writer.add_rope_dimension_count(hp.head_dim)


# --- the model ------------------------------------------------------------------------------


def _is_tied(tensors: Mapping, config: dict) -> bool:
    """Whether lm_head is the embedding (llama.cpp then reads token_embd as the output)."""
    head, embed = tensors.get("lm_head.weight"), tensors.get("model.embed_tokens.weight")
    if head is None:
        return True
    if embed is None or tuple(head.shape) != tuple(embed.shape):
        return False
    if hasattr(head, "load"):  # lazily merged weights (stream_merge): compare the values
        if not config.get("tie_word_embeddings"):
            return False
        head, embed = head.load(), embed.load()
    elif head.data_ptr() == embed.data_ptr():
        return True
    import torch

    return bool(config.get("tie_word_embeddings")) and torch.equal(head, embed)


def _torch_loader(tensor, permute: tuple[int, int] | None):
    def load():
        import torch

        # A LazyTensor (stream_merge) is read and merged only now, one tensor at a time.
        value = tensor.load() if hasattr(tensor, "load") else tensor
        arr = value.detach().to("cpu", torch.float32).numpy()
        return permute_qk(arr, *permute) if permute else arr

    return load


def write_gguf(
    path,
    tensors: Mapping,
    config: dict,
    tokenizer_dir,
    qtype: str,
    *,
    chat_template: str | None,
    name: str = "",
    progress=None,
    cancel=None,
    pre_tokenizer: str = "",
    log=None,
    add_bos: bool | None = None,
) -> dict:
    """Write a complete model GGUF to `path` (see the module docstring); a summary dict back.

    add_bos, when given, is llama.cpp's add-BOS flag: whether the prompts the model was trained
    on start with BOS (Studio tokenises its rendered chats without adding special tokens, so a
    tokenizer that would add BOS does not decide it)."""
    from gguf import GGMLQuantizationType as T
    from gguf import GGUFWriter

    from studio.core.export.gguf_vocab import VocabError, read_vocab

    arch = check_supported(config)
    qtype = qtype.lower()
    if qtype not in QTYPES:
        raise ExportError(f"GGUF type {qtype!r} is not one Studio writes ({', '.join(QTYPES)})")
    hp = _Hparams.read(config)
    embed = tensors.get("model.embed_tokens.weight")
    if embed is None:
        raise ExportError("the model has no model.embed_tokens.weight; it cannot become a GGUF")
    n_vocab = int(embed.shape[0])
    try:
        vocab = read_vocab(
            tokenizer_dir,
            n_vocab,
            config,
            chat_template=chat_template,
            pre_tokenizer=pre_tokenizer,
            log=log,
        )
    except VocabError as e:
        raise ExportError(str(e)) from None
    if add_bos is not None:
        vocab.special.add_special_token["bos"] = bool(add_bos)
    writer = GGUFWriter(path=None, arch=arch)
    model_name = name or str(config.get("_name_or_path") or arch).rstrip("/").split("/")[-1]
    _add_model_metadata(writer, arch, hp, config, n_vocab, model_name, _file_type(qtype))
    extra = _add_rope(writer, arch, hp, config)
    vocab.add_to(writer)

    want = _ggml(qtype)
    tied = _is_tied(tensors, config)
    names = _name_map(arch, hp.n_layers)
    # llama.cpp's quantizer keeps the output matrix at 6 bits in its 4/5-bit files because it
    # matters most for quality; Q6_K cannot be written here, so 4/5-bit files keep it at Q8_0.
    output_name = "token_embd.weight" if tied else "output.weight"
    plan = _Plan()
    for extra_name, array in extra:
        plan.add(extra_name, array.shape, T.F32, lambda a=array: a, log=log)
    for hf_name, tensor in tensors.items():
        if hf_name.endswith("rotary_emb.inv_freq") or (hf_name == "lm_head.weight" and tied):
            continue
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"the tensor {hf_name} has no place in a {arch} GGUF")
        permute = _qk_heads(arch, hp, hf_name)
        target = want
        if gguf_name == output_name and qtype in ("q4_0", "q5_0"):
            target = T.Q8_0
            if log:
                log(f"{gguf_name}: kept at Q8_0 (the output matrix matters most for quality)")
        plan.add(gguf_name, tuple(tensor.shape), target, _torch_loader(tensor, permute), log=log)
    size = _stream(writer, Path(path), plan, progress, cancel)
    return {
        "arch": arch,
        "tensors": len(plan.tensors),
        "file_type": qtype.upper(),
        "pre_tokenizer": vocab.pre,
        "vocab_size": n_vocab,
        "bytes": size,
        "fallbacks": len(plan.fallbacks),
    }


# --- the LoRA adapter -----------------------------------------------------------------------

_DORA = "this adapter is DoRA; llama.cpp can only apply plain LoRA adapters"

_LORA_KEY = re.compile(
    r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])(?:\.[^.]+)?\.weight$"
)


def _pattern_value(patterns: dict, module: str, default):
    """peft's rank_pattern / alpha_pattern lookup: a key matches the end of a module name."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def _lora_modules(keys: list[str], arch: str, names, tied: bool) -> dict[str, dict[str, str]]:
    """module -> {"A": key, "B": key, "gguf": GGUF name}; refuses what llama.cpp cannot apply."""
    modules: dict[str, dict[str, str]] = {}
    for key in keys:
        if "lora_magnitude_vector" in key:
            raise ExportError(_DORA)
        if "lora_embedding_" in key or ".embed_tokens." in key:
            raise ExportError(
                "this adapter trains the embeddings, which a LoRA GGUF cannot carry; "
                "export the merged model as a GGUF instead"
            )
        m = _LORA_KEY.match(key)
        if m is None:
            raise ExportError(
                f"the adapter holds {key}, which is not a LoRA matrix (modules_to_save?); "
                "export the merged model as a GGUF instead"
            )
        module = m["module"]
        gguf_name = names.get_name(module + ".weight", try_suffixes=(".weight",))
        if gguf_name is None:
            raise ExportError(
                f"the adapter targets {module.split('.')[-1]}, which has no GGUF name in a "
                f"{arch} model, so llama.cpp could not apply it"
            )
        if gguf_name == "output.weight" and tied:
            raise ExportError(
                "the adapter targets lm_head, which this model shares with the embeddings; "
                "llama.cpp cannot apply it there, export the merged model instead"
            )
        modules.setdefault(module, {"gguf": gguf_name})[m["ab"]] = key
    for module, entry in modules.items():
        if "A" not in entry or "B" not in entry:
            raise ExportError(f"the adapter has only half of the LoRA pair for {module}")
    return modules


def _block(module: str) -> tuple[int, str]:
    m = re.search(r"\.(\d+)\.", module)
    return (int(m.group(1)) if m else -1, module)


def _adapter_config(folder: Path) -> dict:
    """adapter_config.json, refused when llama.cpp could not apply the adapter as trained."""
    try:
        cfg = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ExportError(
            f"{folder} has no adapter_config.json; it is not a PEFT adapter"
        ) from None
    if not (folder / "adapter_model.safetensors").is_file():
        raise ExportError(f"{folder} has no adapter_model.safetensors (save with safetensors)")
    if str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise ExportError(f"this is a {cfg.get('peft_type')} adapter; llama.cpp applies LoRA only")
    if cfg.get("use_dora"):
        raise ExportError(_DORA)
    if cfg.get("modules_to_save"):
        raise ExportError(
            f"this adapter also saves whole modules ({', '.join(cfg['modules_to_save'])}), "
            "which a LoRA GGUF cannot carry; export the merged model as a GGUF instead"
        )
    if cfg.get("lora_bias"):
        raise ExportError("this adapter trains LoRA biases, which llama.cpp cannot apply")
    return cfg


def write_lora_gguf(
    path,
    adapter_dir,
    base_config: dict,
    qtype: str = "f16",
    *,
    progress=None,
    cancel=None,
    log=None,
) -> dict:
    """The adapter alone as a LoRA GGUF (general.type=adapter); a summary dict back."""
    from gguf import GGML_QUANT_VERSION, GGUFType, GGUFWriter, Keys
    from safetensors import safe_open

    arch = check_supported(base_config)
    qtype = qtype.lower()
    if qtype not in LORA_QTYPES:
        raise ExportError(f"a LoRA GGUF is written as {', '.join(LORA_QTYPES)}, not {qtype!r}")
    folder = Path(adapter_dir)
    cfg = _adapter_config(folder)
    hp = _Hparams.read(base_config)
    rank = int(cfg.get("r") or 8)
    alpha = float(cfg.get("lora_alpha") or rank)
    rslora = bool(cfg.get("use_rslora"))
    # llama.cpp scales every pair by alpha / rank. rsLoRA (alpha / sqrt(rank)) and per-module
    # rank/alpha patterns are folded into B, so the one alpha stored reproduces peft's scaling.
    alpha_gguf = alpha * math.sqrt(rank) if rslora else alpha

    writer = GGUFWriter(path=None, arch=arch)
    writer.add_type(GGUFType.ADAPTER)
    writer.add_string(Keys.Adapter.TYPE, "lora")
    writer.add_float32(Keys.Adapter.LORA_ALPHA, alpha_gguf)
    writer.add_name(folder.parent.name if folder.name == "adapter" else folder.name)
    writer.add_file_type(_file_type(qtype))
    writer.add_quantization_version(GGML_QUANT_VERSION)

    want = _ggml(qtype)
    plan = _Plan()
    tied = bool(base_config.get("tie_word_embeddings", False))
    with safe_open(str(folder / "adapter_model.safetensors"), framework="pt") as handle:
        modules = _lora_modules(list(handle.keys()), arch, _name_map(arch, hp.n_layers), tied)
        for module in sorted(modules, key=_block):
            entry = modules[module]
            a_shape = tuple(handle.get_slice(entry["A"]).get_shape())
            b_shape = tuple(handle.get_slice(entry["B"]).get_shape())
            r_m = int(a_shape[0])
            alpha_m = float(_pattern_value(cfg.get("alpha_pattern"), module, alpha))
            peft_scale = alpha_m / (math.sqrt(r_m) if rslora else r_m)
            fold = peft_scale / (alpha_gguf / r_m)
            if abs(fold - 1.0) > 1e-6 and log:
                log(f"{module}: LoRA scale {peft_scale:g} folded into lora_b")
            # lora_b's rows are the output rows of Q/K: they take the weight's permutation.
            permute = _qk_heads(arch, hp, module)
            load_b = _lora_loader(handle, entry["B"], permute=permute, scale=fold)
            plan.add(
                entry["gguf"] + ".lora_a", a_shape, want, _lora_loader(handle, entry["A"]), log=log
            )
            plan.add(entry["gguf"] + ".lora_b", b_shape, want, load_b, log=log)
        size = _stream(writer, Path(path), plan, progress, cancel)
    return {
        "arch": arch,
        "tensors": len(plan.tensors),
        "file_type": qtype.upper(),
        "alpha": alpha_gguf,
        "rank": rank,
        "modules": len(modules),
        "bytes": size,
        "fallbacks": len(plan.fallbacks),
    }


def _lora_loader(handle, key: str, *, permute=None, scale: float = 1.0):
    def load():
        import torch

        arr = handle.get_tensor(key).to(torch.float32).numpy()
        if abs(scale - 1.0) > 1e-6:
            arr = arr * scale
        return permute_qk(arr, *permute) if permute else arr

    return load
