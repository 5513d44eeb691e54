"""studio.core.system: the NVIDIA-GPU-under-a-CPU-only-torch hint (nvidia-smi and torch
mocked), versions, devices, folders; and the one-sentence error for a hub id offline."""

import subprocess

import pytest
import torch

from studio.core import system
from studio.core.errors import ModelError
from studio.core.model_info import resolve_model_dir

SMI = "/usr/bin/nvidia-smi"
CSV = "NVIDIA GeForce RTX 4090, 24564 MiB\nNVIDIA RTX A2000, 6138 MiB\n"


def fake_smi(monkeypatch, *, present=True, stdout=CSV, returncode=0, raises=None):
    """nvidia-smi on PATH (or not); its answer to the query; the command it was asked."""
    calls = []
    monkeypatch.setattr(system.shutil, "which", lambda name: SMI if present else None)

    def run(cmd, **kwargs):
        calls.append((cmd, kwargs))
        if raises is not None:
            raise raises
        return subprocess.CompletedProcess(cmd, returncode, stdout=stdout, stderr="")

    monkeypatch.setattr(system.subprocess, "run", run)
    return calls


def fake_torch(monkeypatch, version="2.13.0+cpu", cuda=None):
    monkeypatch.setattr(torch, "__version__", version)
    monkeypatch.setattr(torch.version, "cuda", cuda)


def test_gpu_with_cpu_only_torch_gives_the_hint_and_the_exact_command(monkeypatch):
    calls = fake_smi(monkeypatch)
    fake_torch(monkeypatch)
    hint = system.gpu_without_cuda()
    assert hint is not None
    assert hint.gpus == ["NVIDIA GeForce RTX 4090 (24.0 GB)", "NVIDIA RTX A2000 (6.0 GB)"]
    assert hint.command == (
        "pip install --index-url https://download.pytorch.org/whl/cu126 torch==2.13.0"
    )
    assert "CPU-only build" in hint.text and "2.13.0+cpu" in hint.text
    assert "order of magnitude slower" in hint.text and "10–50×" in hint.text
    assert hint.short.startswith("NVIDIA GeForce RTX 4090 (24.0 GB) found")
    # The query asked, with a timeout so a hung driver cannot hang the start-up probe.
    ((cmd, kwargs),) = calls
    assert cmd == [SMI, "--query-gpu=name,memory.total", "--format=csv,noheader"]
    assert 0 < kwargs["timeout"] <= 10


def test_the_command_follows_the_installed_torch_release(monkeypatch):
    fake_smi(monkeypatch)
    fake_torch(monkeypatch, version="2.12.1")
    assert system.gpu_without_cuda().command.endswith(" torch==2.12.1")
    assert system.cuda_install_command("not installed").endswith("/whl/cu126 torch")


def test_readme_names_the_same_wheel_index():
    from studio.core import paths

    readme = (paths.repo_root() / "README.md").read_text(encoding="utf-8")
    assert system.cuda_install_command(torch.__version__) in readme


@pytest.mark.parametrize(
    "smi",
    [
        {"present": False},  # no NVIDIA driver: nothing to say
        {"returncode": 9, "stdout": ""},  # driver installed but not loaded
        {"raises": subprocess.TimeoutExpired("nvidia-smi", 5)},  # a hung driver
        {"raises": PermissionError("denied")},
        {"stdout": ""},  # no GPU listed
    ],
)
def test_no_gpu_found_means_no_hint(monkeypatch, smi):
    fake_smi(monkeypatch, **smi)
    fake_torch(monkeypatch)
    assert system.gpu_without_cuda() is None


def test_a_cuda_build_of_torch_means_no_hint(monkeypatch):
    fake_smi(monkeypatch)
    fake_torch(monkeypatch, version="2.13.0+cu126", cuda="12.6")
    assert system.gpu_without_cuda() is None


def test_nvidia_smi_memory_in_other_units_is_kept_as_given(monkeypatch):
    fake_smi(monkeypatch, stdout="Tesla T4, [N/A]\nA100, 40 GB\n")
    assert system.nvidia_gpus() == ["Tesla T4 ([N/A])", "A100 (40 GB)"]


def test_versions_devices_and_folders(monkeypatch, tmp_path):
    v = system.versions()
    assert list(v) == [
        "torch",
        "CUDA",
        "transformers",
        "peft",
        "bitsandbytes",
        "accelerate",
        "huggingface_hub",
    ]
    assert v["torch"] == torch.__version__
    assert v["CUDA"] == (torch.version.cuda or "none (CPU-only torch)")
    cpu = system.devices()[-1]
    assert cpu.kind == "cpu" and cpu.memory > 0 and 0 < cpu.free <= cpu.memory
    monkeypatch.setenv("STUDIO_HOME", str(tmp_path / "home"))
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    f = system.folders()
    assert f["Studio data"] == tmp_path / "home" / "data"
    assert f["Projects"] == tmp_path / "home" / "data" / "projects"
    assert f["Hugging Face cache"] == tmp_path / "hf"


def test_a_hub_id_offline_is_one_clear_sentence(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        resolve_model_dir("someone/not-downloaded", allow_network=True)
    message = e.value.message
    assert message == (
        "Could not fetch someone/not-downloaded: the Hugging Face hub cannot be reached from "
        "this computer, so choose a model folder or a model already downloaded (Settings "
        "lists them)."
    )
