"""Export a trained run: a merged Hugging Face folder, GGUF (native types written by Studio,
K-quants by llama.cpp's quantizer), a LoRA GGUF, an Ollama Modelfile, or ONNX.

`export_events(ExportOptions(...))` is the one generator the CLI and the Export page drive.
"""

from studio.core.export.options import (
    BITS_PER_WEIGHT,
    GGUF_QUANTS,
    K_QUANTS,
    NATIVE_GGUF,
    QUALITY,
    TARGETS,
    ExportOptions,
)
from studio.core.export.pipeline import ExportError, export_events, run_export

__all__ = [
    "BITS_PER_WEIGHT",
    "GGUF_QUANTS",
    "K_QUANTS",
    "NATIVE_GGUF",
    "QUALITY",
    "TARGETS",
    "ExportError",
    "ExportOptions",
    "export_events",
    "run_export",
]
