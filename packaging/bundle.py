"""What the PyInstaller bundle holds, kept apart from `studio.spec` so a test can check it
without PyInstaller: the data files, the transformers model families and the excluded modules.

`studio.spec` imports this module; `tests/test_packaging.py` checks that every data file
exists. Nothing here imports torch, transformers or Qt.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

RESOURCES = ("resources/demo", "resources/desktop", "resources/icons")
"""Copied whole to `resources/` beside the bundled `studio` package (see studio.core.paths)."""

DEMO_FILES = (
    "resources/demo/data.jsonl",
    "resources/demo/model/config.json",
    "resources/demo/model/model.safetensors",
    "resources/demo/model/tokenizer.json",
    "resources/demo/model/tokenizer_config.json",
    "resources/desktop/studio.desktop",
    "resources/icons/hicolor/scalable/apps/studio.svg",
)
"""The files the self-test and the app's window need; a build without one of them fails."""

MODEL_FAMILIES = (
    # The architectures Studio exports to GGUF, its presets and the small chat models people
    # fine-tune on one GPU. transformers imports a family only when a config names it (lazy
    # modules), so PyInstaller cannot see which ones are needed: these are kept, with every
    # family they import, and the other ~500 (vision, audio, encoders) are left out.
    "llama",
    "mistral",
    "mixtral",
    "qwen2",
    "qwen2_moe",
    "qwen3",
    "qwen3_moe",
    "phi",
    "phi3",
    "gemma",
    "gemma2",
    "gemma3",
    "gpt2",
    "gpt_neox",
    "olmo",
    "olmo2",
    "granite",
    "smollm3",
    "starcoder2",
    "stablelm",
)

ALL_MODELS_ENV = "STUDIO_BUNDLE_ALL_MODELS"
"""Set to 1 when building to bundle every transformers model family (the generic fallback:
bigger, but loads any architecture the installed transformers knows)."""

EXCLUDES = (
    # Qt modules the app never imports (the GUI is QtCore/QtGui/QtWidgets and pyqtgraph).
    "PySide6.QtWebEngineCore",
    "PySide6.QtWebEngineWidgets",
    "PySide6.QtWebEngineQuick",
    "PySide6.QtWebChannel",
    "PySide6.QtWebSockets",
    "PySide6.QtWebView",
    "PySide6.Qt3DAnimation",
    "PySide6.Qt3DCore",
    "PySide6.Qt3DExtras",
    "PySide6.Qt3DInput",
    "PySide6.Qt3DLogic",
    "PySide6.Qt3DRender",
    "PySide6.QtQuick",
    "PySide6.QtQuick3D",
    "PySide6.QtQuickControls2",
    "PySide6.QtQuickWidgets",
    "PySide6.QtQuickTest",
    "PySide6.QtQml",
    "PySide6.QtMultimedia",
    "PySide6.QtMultimediaWidgets",
    "PySide6.QtSpatialAudio",
    "PySide6.QtTextToSpeech",
    "PySide6.QtCharts",
    "PySide6.QtDataVisualization",
    "PySide6.QtGraphs",
    "PySide6.QtGraphsWidgets",
    "PySide6.QtLocation",
    "PySide6.QtPositioning",
    "PySide6.QtBluetooth",
    "PySide6.QtNfc",
    "PySide6.QtSensors",
    "PySide6.QtSerialPort",
    "PySide6.QtSerialBus",
    "PySide6.QtSql",
    "PySide6.QtDesigner",
    "PySide6.QtHelp",
    "PySide6.QtPdf",
    "PySide6.QtPdfWidgets",
    "PySide6.QtRemoteObjects",
    "PySide6.QtScxml",
    "PySide6.QtStateMachine",
    "PySide6.QtHttpServer",
    "PySide6.QtNetworkAuth",
    "PySide6.QtUiTools",
    "PySide6.QtCanvasPainter",
    # Optional extras and development tools: not in the bundle (see README, "Bundle").
    "tensorboard",
    "lm_eval",
    "datasets",
    "pandas",
    "onnx",
    "onnxruntime",
    "onnxscript",
    "llama_cpp",
    "openai",
    "matplotlib",
    "tkinter",
    "_tkinter",
    "IPython",
    "jupyter_client",
    "ipykernel",
    "notebook",
    "pytest",
    "hypothesis",
    "torchvision",
    "torchaudio",
)


def datas(root: Path = ROOT) -> list[tuple[str, str]]:
    """PyInstaller `datas`: (source folder, destination inside the bundle)."""
    return [(str(root / rel), rel) for rel in RESOURCES]


_SIBLING = re.compile(r"^\s*from \.\.(\w+)", re.M)  # inside models/F: from ..llama import ...
_ABSOLUTE = re.compile(r"^\s*from (?:transformers|\.+)\.models\.(\w+)", re.M)


def _imported_families(files) -> set[str]:
    found: set[str] = set()
    for f in files:
        text = f.read_text(encoding="utf-8", errors="replace")
        found.update(_ABSOLUTE.findall(text))
        if f.parent.parent.name == "models":
            found.update(_SIBLING.findall(text))
    return found


USERS = ("peft", "accelerate")
"""Libraries whose `from transformers import SomeModelClass` reaches a family at import time
(peft's constants import BloomPreTrainedModel): their imports are followed as well."""


def _package_dir(name: str) -> Path | None:
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _names_from_transformers(files) -> tuple[set[str], set[str]]:
    """(names imported with `from transformers import ...`, families named as
    `transformers.models.X` in an import) over these files."""
    names: set[str] = set()
    families: set[str] = set()
    for f in files:
        try:
            tree = ast.parse(f.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module == "transformers":
                    names.update(alias.name for alias in node.names)
                elif node.module.startswith("transformers.models."):
                    families.add(node.module.split(".")[2])
    return names, families


def _families_defining(models: Path, names: set[str]) -> set[str]:
    """The families whose modules define a class of one of these names."""
    found = set()
    pattern = re.compile(r"^class (\w+)\b", re.M)
    for f in models.glob("*/*.py"):
        if names & set(pattern.findall(f.read_text(encoding="utf-8", errors="replace"))):
            found.add(f.parent.name)
    return found


def kept_model_families(transformers_dir: Path, users: tuple[str, ...] = USERS) -> set[str]:
    """MODEL_FAMILIES, `auto`, the families that transformers' own modules and the USERS
    import, and everything those import in turn (read from the source: modeling files import
    each other)."""
    models = transformers_dir / "models"
    present = {p.name for p in models.iterdir() if (p / "__init__.py").is_file()}
    outside = [f for f in transformers_dir.rglob("*.py") if models not in f.parents]
    start = {"auto", *MODEL_FAMILIES} | _imported_families(outside)
    user_files = [f for u in users if (d := _package_dir(u)) for f in d.rglob("*.py")]
    user_files += list((ROOT / "studio").rglob("*.py"))
    names, families = _names_from_transformers(user_files)
    start |= families | _families_defining(models, names)
    todo = start & present
    kept: set[str] = set()
    while todo:
        family = todo.pop()
        kept.add(family)
        todo |= (_imported_families((models / family).glob("*.py")) & present) - kept
    return kept


def transformers_excludes(transformers_dir: Path) -> list[str]:
    """`transformers.models.X` for every family not kept (none with STUDIO_BUNDLE_ALL_MODELS=1)."""
    if os.environ.get(ALL_MODELS_ENV) == "1":
        return []
    models = transformers_dir / "models"
    kept = kept_model_families(transformers_dir)
    return sorted(
        f"transformers.models.{p.name}"
        for p in models.iterdir()
        if (p / "__init__.py").is_file() and p.name not in kept
    )


PACKAGE_DATA = (
    # Non-Python files read at run time: huggingface_hub's model card template (peft writes
    # README.md beside every saved adapter); peft's kernel sources (BOFT compiles them).
    "huggingface_hub",
    "peft",
)

METADATA = (
    # importlib.metadata.version() of these is read at run time: Settings shows the versions
    # (studio.core.system.LIBRARIES) and transformers/peft check their dependencies'.
    "studio",
    "torch",
    "transformers",
    "peft",
    "accelerate",
    "bitsandbytes",
    "huggingface_hub",
    "tokenizers",
    "safetensors",
    "pyside6",
    "numpy",
)


def transformers_hiddenimports(transformers_dir: Path) -> list[str]:
    """Every module of the kept families (transformers imports them by name, lazily)."""
    names = []
    for family in sorted(kept_model_families(transformers_dir)):
        for f in sorted((transformers_dir / "models" / family).glob("*.py")):
            stem = "" if f.stem == "__init__" else "." + f.stem
            names.append(f"transformers.models.{family}{stem}")
    return names
