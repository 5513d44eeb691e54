"""The Settings page (versions, devices, folders, a fake Hugging Face cache's models, "Use
this model") and the first-run GPU hint in the status bar and on Home (detection mocked)."""

import os
import shutil
from pathlib import Path

import pytest
import torch
from PySide6.QtWidgets import QApplication

from studio.core import system

SHOTS = os.environ.get("STUDIO_SHOTS", "")
"""Where the screenshots go; unset: none are written."""


def shot(widget, name: str) -> None:
    QApplication.processEvents()
    if SHOTS:
        Path(SHOTS).mkdir(parents=True, exist_ok=True)
        widget.grab().save(str(Path(SHOTS) / name))


@pytest.fixture
def hf_cache(tmp_path, monkeypatch, tiny_model):
    """A Hugging Face cache folder in the hub layout with two models (and one without a
    config.json, which is not a usable model)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-home" / "hub"
    for repo, files in (
        ("tiny-org/tiny-llama", ("config.json", "model.safetensors", "tokenizer_config.json")),
        ("other/small-model", ("config.json",)),
        ("broken/no-config", ()),
    ):
        folder = cache / f"models--{repo.replace('/', '--')}"
        snapshot = folder / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True)
        (folder / "refs").mkdir()
        (folder / "refs" / "main").write_text("0123abcd")
        for name in files:
            shutil.copy(tiny_model / name, snapshot / name)
        (snapshot / "README.md").write_text("x")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


def test_settings_page_shows_versions_devices_folders_and_the_cached_models(
    window, qtbot, hf_cache
):
    assert list(window.pages)[-1] == "Settings"
    page = window.pages["Settings"]
    window.show_page("Settings")  # the first show reads everything on a worker
    qtbot.waitUntil(lambda: page.report is not None, timeout=60000)
    versions = {
        page.versions_layout.itemAt(i, page.versions_layout.ItemRole.LabelRole).widget().text(): (
            page.versions_layout.itemAt(i, page.versions_layout.ItemRole.FieldRole).widget().text()
        )
        for i in range(page.versions_layout.rowCount())
    }
    assert versions["torch"] == torch.__version__
    assert {"CUDA", "transformers", "peft", "bitsandbytes"} <= set(versions)
    cpu_row = page.devices_layout.rowCount() - 1
    cpu = page.devices_layout.itemAt(cpu_row, page.devices_layout.ItemRole.FieldRole).widget()
    assert cpu.text().startswith("CPU (") and " RAM, " in cpu.text() and "free" in cpu.text()
    # The folders, each with Open (enabled only where the folder exists).
    assert page.report.folders["Hugging Face cache"] == hf_cache
    assert page.folder_buttons["Hugging Face cache"].isEnabled()
    assert page.folder_buttons["Hugging Face cache"].toolTip() == str(hf_cache)
    # The cache's models: the two with a config.json, not the broken one.
    names = [page.models.item(r, 0).text() for r in range(page.models.rowCount())]
    assert sorted(names) == ["other/small-model", "tiny-org/tiny-llama"]
    assert page.no_models.text().startswith(f"2 model(s) in {hf_cache}")
    assert not page.use_button.isEnabled()  # nothing chosen yet
    page.models.selectRow(names.index("tiny-org/tiny-llama"))
    assert page.use_button.isEnabled()
    shot(window, "settings.png")
    # "Use this model": the Model page reads it from the cache, offline, for the project.
    page.use_button.click()
    assert window.current_page() == "Model"
    model = window.pages["Model"]
    assert model.source.text() == "tiny-org/tiny-llama"
    qtbot.waitUntil(lambda: model._task is None, timeout=60000)
    assert not model.error.isVisible(), model.error.text()
    assert window.state.config.model.path == "tiny-org/tiny-llama"
    assert window.state.model_info.architecture == "LlamaForCausalLM"


def test_an_empty_cache_says_where_it_looked(window, qtbot, tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "nothing-here"))
    page = window.pages["Settings"]
    window.show_page("Settings")
    qtbot.waitUntil(lambda: page.report is not None, timeout=60000)
    assert page.models.rowCount() == 0
    assert page.no_models.text().startswith(f"No models in {tmp_path / 'nothing-here'} yet.")
    assert not page.folder_buttons["Hugging Face cache"].isEnabled()  # not created yet


def test_an_nvidia_gpu_under_a_cpu_only_torch_is_said_in_the_status_bar_and_on_home(
    window, qtbot, monkeypatch
):
    # Detection mocked: nvidia-smi lists a GPU, torch is a CPU-only build.
    monkeypatch.setattr(system.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    monkeypatch.setattr(
        system.subprocess,
        "run",
        lambda cmd, **kw: system.subprocess.CompletedProcess(
            cmd, 0, stdout="NVIDIA GeForce RTX 4090, 24564 MiB\n", stderr=""
        ),
    )
    monkeypatch.setattr(torch, "__version__", "2.13.0+cpu")
    monkeypatch.setattr(torch.version, "cuda", None)
    home = window.home
    assert not home.gpu_banner.isVisible() and not window.gpu_label.isVisible()
    window._start_probe()  # the start-up probe, on a worker, as after the first paint
    qtbot.waitUntil(lambda: window.state.gpu_hint is not None, timeout=60000)
    assert window.gpu_label.isVisible()
    assert window.gpu_label.text() == (
        "⚠ NVIDIA GeForce RTX 4090 (24.0 GB) found, but torch is a CPU-only build: "
        "training runs on the CPU"
    )
    command = "pip install --index-url https://download.pytorch.org/whl/cu126 torch==2.13.0"
    assert command in window.gpu_label.toolTip()
    assert home.gpu_banner.isVisible()
    assert "order of magnitude slower" in home.gpu_text.text()
    assert "NVIDIA GeForce RTX 4090 (24.0 GB)" in home.gpu_text.text()
    assert home.gpu_command.text() == command
    shot(window, "home-gpu-hint.png")
    home.gpu_copy.click()
    assert QApplication.clipboard().text() == command
    assert home.gpu_copy.text() == "Copied"
    assert window.device_label.text().startswith("Device: CPU")


def test_no_hint_when_torch_can_use_the_gpu(window, qtbot, monkeypatch):
    monkeypatch.setattr(system, "gpu_without_cuda", lambda: None)
    window._start_probe()
    qtbot.waitUntil(lambda: "detecting" not in window.device_label.text(), timeout=60000)
    assert window.state.gpu_hint is None
    assert not window.home.gpu_banner.isVisible() and not window.gpu_label.isVisible()
