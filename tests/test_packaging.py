"""The PyInstaller bundle's manifest (packaging/bundle.py, read by packaging/studio.spec) and
its entry point, checked without PyInstaller: the data files exist and land where the frozen
app looks for them, the model families kept exist, and the frozen binary understands the
command lines Studio starts its children with. (`studio --selftest` from a source install is
tests/test_selftest.py; packaging/build.sh runs it in the frozen bundle.)"""

import importlib.util
import shutil
import sys
from pathlib import Path

import pytest

from studio.core import paths

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "packaging"))

import bundle  # noqa: E402
import studio_entry  # noqa: E402


def transformers_dir() -> Path:
    spec = importlib.util.find_spec("transformers")
    return Path(next(iter(spec.submodule_search_locations)))


def test_spec_takes_its_data_and_excludes_from_the_manifest():
    spec = (ROOT / "packaging" / "studio.spec").read_text(encoding="utf-8")
    assert "datas = bundle.datas()" in spec
    assert "bundle.EXCLUDES" in spec and "bundle.transformers_excludes(" in spec
    assert "bundle.transformers_hiddenimports(" in spec
    # The Train page's form reads the config fields' docstrings with inspect.getsource.
    assert 'module_collection_mode={"studio": "pyz+py"}' in spec


def test_every_data_file_exists_and_is_inside_a_bundled_folder():
    if not paths.demo_available():
        pytest.skip("the bundled demo is not in this checkout")
    for src, dest in bundle.datas():
        assert Path(src).is_dir(), src
        assert Path(src) == ROOT / dest  # same relative place in the bundle as in the checkout
    for rel in bundle.DEMO_FILES:
        assert (ROOT / rel).is_file(), rel
        assert any(rel.startswith(folder + "/") for folder in bundle.RESOURCES), rel


def test_frozen_app_finds_the_data_where_the_spec_puts_it(tmp_path, monkeypatch):
    """Lay the datas out as PyInstaller does (under sys._MEIPASS) and ask paths/desktop."""
    if not paths.demo_available():
        pytest.skip("the bundled demo is not in this checkout")
    for src, dest in bundle.datas():
        shutil.copytree(src, tmp_path / dest)
    monkeypatch.setattr(sys, "frozen", True, raising=False)
    monkeypatch.setattr(sys, "_MEIPASS", str(tmp_path), raising=False)
    from studio import desktop

    assert paths.repo_root() == tmp_path
    assert paths.demo_available()
    assert paths.demo_dir() == tmp_path / "resources" / "demo"
    assert desktop.icon_svg().is_file() and desktop.icon_svg().is_relative_to(tmp_path)
    assert desktop.icon_png(48).is_file()


def test_kept_model_families_exist_and_include_the_demo_architecture():
    tdir = transformers_dir()
    kept = bundle.kept_model_families(tdir)
    families = {p.name for p in (tdir / "models").iterdir() if (p / "__init__.py").is_file()}
    missing = set(bundle.MODEL_FAMILIES) - families
    assert not missing, f"not in this transformers: {sorted(missing)}"
    assert {"auto", "llama", "qwen2", "mistral"} <= kept
    excluded = bundle.transformers_excludes(tdir)
    assert excluded and not {name.rsplit(".", 1)[1] for name in excluded} & kept
    assert len(excluded) + len(kept) == len(families)
    hidden = bundle.transformers_hiddenimports(tdir)
    assert "transformers.models.llama.modeling_llama" in hidden
    assert "transformers.models.auto.configuration_auto" in hidden


def test_all_models_env_keeps_every_family(monkeypatch):
    monkeypatch.setenv(bundle.ALL_MODELS_ENV, "1")
    assert bundle.transformers_excludes(transformers_dir()) == []


def test_excluded_qt_modules_are_not_used_by_the_app():
    used = set()
    for f in (ROOT / "studio").rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        used |= {m for m in bundle.EXCLUDES if m.startswith("PySide6.") and m in text}
    assert not used


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        ([], (None, [], False)),
        (["--selftest"], (None, ["--selftest"], False)),
        (["data.jsonl"], (None, ["data.jsonl"], False)),
        (
            ["-m", "studio", "train", "--config", "r.yaml"],
            (None, ["train", "--config", "r.yaml"], False),
        ),
        (["-u", "-m", "studio", "train"], (None, ["train"], True)),
        (
            ["-m", "studio.core.export.llama_probe", "a", "b"],
            ("studio.core.export.llama_probe", ["a", "b"], False),
        ),
        (
            ["-m", "torch.distributed.run", "--standalone"],
            ("torch.distributed.run", ["--standalone"], False),
        ),
    ],
)
def test_frozen_binary_reads_interpreter_command_lines(argv, expected):
    assert studio_entry.split_python_argv(argv) == expected


def test_train_page_command_runs_studio_train_in_the_frozen_binary():
    from studio.gui.run_launcher import resume_command, train_command

    cmd = train_command("/runs/r1/run.yaml")
    assert studio_entry.split_python_argv(cmd[1:]) == (
        None,
        ["train", "--config", "/runs/r1/run.yaml"],
        False,
    )
    module, args, _ = studio_entry.split_python_argv(resume_command("/runs/r1")[1:])
    assert module is None and args[:2] == ["train", "--resume"]
