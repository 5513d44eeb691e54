"""What an export is asked to do: one dataclass, shared by the CLI, the API and the Export page."""

from __future__ import annotations

from dataclasses import dataclass

from studio.core.errors import ConfigError

TARGETS = ("hf", "gguf", "ollama", "lora-gguf", "onnx")
"""hf: merged safetensors folder; gguf: one GGUF file; ollama: GGUF + Modelfile;
lora-gguf: the adapter alone as a GGUF for llama.cpp --lora / Ollama ADAPTER; onnx: ONNX + KV cache."""

NATIVE_GGUF = ("f32", "f16", "bf16", "q8_0", "q5_0", "q4_0")
"""Written by Studio itself with the gguf package (no compiler, no llama.cpp)."""
K_QUANTS = ("q6_k", "q5_k_m", "q4_k_m")
"""Made by llama.cpp's own quantizer through llama-cpp-python (the `studio[gguf]` extra)."""
GGUF_QUANTS = NATIVE_GGUF + K_QUANTS

# Bits per weight as written (blocks of 32 with a 16-bit scale, K-quants as llama.cpp reports),
# for size estimates, and a one-line quality note per type for the Export page and --help.
BITS_PER_WEIGHT = {
    "f32": 32.0,
    "f16": 16.0,
    "bf16": 16.0,
    "q8_0": 8.5,
    "q6_k": 6.56,
    "q5_k_m": 5.69,
    "q5_0": 5.5,
    "q4_k_m": 4.85,
    "q4_0": 4.5,
}
QUALITY = {
    "f32": "Full precision; twice the size of 16-bit for no gain in answers.",
    "f16": "16-bit: the same answers as the model you chatted with.",
    "bf16": "16-bit with a wider range: the same answers; needs a recent llama.cpp.",
    "q8_0": "8-bit: practically the same answers at half the size.",
    "q6_k": "6-bit: very close to 16-bit.",
    "q5_k_m": "5-bit: close to 16-bit; a good default for larger models.",
    "q5_0": "5-bit, simple blocks: close to 16-bit.",
    "q4_k_m": "4-bit: the usual choice for laptops; slightly worse answers.",
    "q4_0": "4-bit, simple blocks: smallest; answers drift the most.",
}
DTYPES = ("auto", "float32", "float16", "bfloat16")


@dataclass
class ExportOptions:
    adapter: str
    """A run folder, its adapter/ folder or a checkpoints/step-* folder."""
    target: str = "gguf"
    """One of TARGETS."""
    quant: str = "f16"
    """GGUF type (GGUF_QUANTS) for gguf/ollama; lora-gguf takes f32/f16/bf16/q8_0; ignored by hf/onnx."""
    output: str = ""
    """The folder to write; default: RUN/export/<target>-<quant>."""
    model: str = ""
    """The base model; default: the one in run.yaml or adapter_config.json."""
    dtype: str = "auto"
    """Merge dtype: auto keeps a bf16/fp16 base as it is and an fp32 base in fp32."""
    overwrite: bool = False
    """Replace a non-empty output folder (the old one is kept until the new one is whole)."""
    verify: bool = True
    """After a GGUF, load it with llama-cpp-python (when installed) and compare with transformers."""
    name: str = ""
    """The Ollama model name (default: the run folder's name)."""
    pre_tokenizer: str = ""
    """Force llama.cpp's pre-tokenizer name when Studio cannot recognise it (logged)."""
    allow_pickle: bool = False
    trust_remote_code: bool = False

    def __post_init__(self):
        self.quant = (self.quant or "f16").lower()
        if self.target not in TARGETS:
            raise ConfigError(
                f"export.target: {self.target!r} is not one of {', '.join(TARGETS)}",
                field="export.target",
            )
        if self.target in ("gguf", "ollama") and self.quant not in GGUF_QUANTS:
            raise ConfigError(
                f"export.quant: {self.quant!r} is not a GGUF type; choose one of "
                f"{', '.join(GGUF_QUANTS)}",
                field="export.quant",
            )
        if self.target == "lora-gguf" and self.quant not in ("f32", "f16", "bf16", "q8_0"):
            raise ConfigError(
                f"export.quant: a LoRA GGUF is written as f32, f16, bf16 or q8_0, not {self.quant!r}",
                field="export.quant",
            )
        if self.dtype not in DTYPES:
            raise ConfigError(
                f"export.dtype: {self.dtype!r} is not one of {', '.join(DTYPES)}",
                field="export.dtype",
            )
        if not str(self.adapter or "").strip():
            raise ConfigError(
                "export.adapter: give the run to export (a run folder or its adapter/)",
                field="export.adapter",
            )

    @property
    def uses_quant(self) -> bool:
        return self.target in ("gguf", "ollama", "lora-gguf")
