"""The layering rules of DESIGN.md: studio.core never imports Qt; the GUI starts without torch."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
QT_MODULES = ("PySide6", "pyqtgraph", "shiboken6")


def test_core_source_never_imports_qt():
    offenders = []
    for path in (ROOT / "studio" / "core").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in QT_MODULES
            ]
    assert offenders == []


def test_importing_core_modules_loads_no_qt():
    code = (
        "import sys, pkgutil, importlib, studio.core as c\n"
        "for m in pkgutil.walk_packages(c.__path__, 'studio.core.'):\n"
        "    importlib.import_module(m.name)\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('PySide6', 'pyqtgraph', 'shiboken6')]\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_flash_attention_is_asked_for_only_where_it_can_run():
    import torch

    from studio.core.models import attention_kwargs

    flash = {"attn_implementation": "flash_attention_2"}
    assert attention_kwargs("cuda", torch.bfloat16, has_flash=True) == flash
    assert attention_kwargs("cuda", torch.float16, has_flash=True) == flash
    assert attention_kwargs("cuda", torch.float32, has_flash=True) == {}
    assert attention_kwargs("cuda", torch.bfloat16, has_flash=False) == {}
    assert attention_kwargs("cpu", torch.bfloat16, has_flash=True) == {}
    assert attention_kwargs("cpu", torch.float32) == {}  # this machine: the default attention
