"""Studio: fine-tune language models with LoRA and QLoRA.

`from studio import LoraConfig, Trainer` is the Python API. Heavy modules load on first use,
so importing `studio` stays cheap.
"""

__version__ = "0.1.0"

__all__ = [
    "LoraConfig",
    "Trainer",
    "RunConfig",
    "export",
    "ExportError",
    "evaluate",
    "generate_data",
    "__version__",
]


def __getattr__(name):
    if name in ("LoraConfig", "RunConfig"):
        from studio.core import config

        return getattr(config, name)
    if name == "Trainer":
        from studio.core.api import Trainer

        return Trainer
    if name == "export":
        from studio.core.api import export

        return export
    if name == "evaluate":
        from studio.core.api import evaluate

        return evaluate
    if name == "generate_data":
        from studio.core.api import generate_data

        return generate_data
    if name == "ExportError":
        from studio.core.export.pipeline import ExportError

        return ExportError
    raise AttributeError(f"module 'studio' has no attribute {name!r}")
