"""What this computer offers Studio: library versions, devices and their memory, the folders
Studio and Hugging Face use, and one first-run check: an NVIDIA GPU with a CPU-only torch.

No Qt here. torch is imported only inside functions (they run on a worker thread in the
app, after the window is up); `nvidia-smi` runs with a short timeout so a hung driver
cannot hang the probe.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from studio.core import paths

CUDA_WHEELS = "cu126"
"""The CUDA build README's GPU instructions name (pytorch.org's wheel index for CUDA 12.6)."""

NVIDIA_SMI_TIMEOUT = 5.0


@dataclass(frozen=True)
class GpuHint:
    """An NVIDIA GPU is present but the installed torch cannot use it."""

    gpus: list[str]
    """What nvidia-smi reports, e.g. "NVIDIA GeForce RTX 4090 (24.0 GB)"."""
    torch_version: str
    command: str
    """The exact pip command that installs the matching CUDA build of torch."""

    @property
    def short(self) -> str:
        """One line for the status bar."""
        return f"{self.gpus[0]} found, but torch is a CPU-only build: training runs on the CPU"

    @property
    def text(self) -> str:
        """What it costs and what to do, for the Home banner."""
        found = ", ".join(self.gpus)
        return (
            f"This computer has an NVIDIA GPU, {found}, but the installed torch "
            f"({self.torch_version}) is a CPU-only build, so Studio trains on the CPU: "
            "typically an order of magnitude slower (often 10–50×) than on that GPU, and "
            "QLoRA's 4-bit loading is not available. Install the CUDA build of torch, "
            "then restart Studio:"
        )


def cuda_install_command(torch_version: str) -> str:
    """The pip command for the CUDA build of the same torch release (README's GPU install)."""
    release = torch_version.split("+", 1)[0]
    pin = f"torch=={release}" if release[:1].isdigit() else "torch"
    return f"pip install --index-url https://download.pytorch.org/whl/{CUDA_WHEELS} {pin}"


def nvidia_gpus() -> list[str]:
    """The NVIDIA GPUs nvidia-smi lists ("name (memory)"); [] without it or when it fails."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=NVIDIA_SMI_TIMEOUT,
        )
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []  # a driver that is installed but not loaded lists no GPU either
    gpus = []
    for line in out.stdout.splitlines():
        name, _, memory = line.partition(",")
        if name.strip():
            gpus.append(_gpu_label(name.strip(), memory.strip()))
    return gpus


def _gpu_label(name: str, memory: str) -> str:
    """ "NVIDIA A10G", "23028 MiB" -> "NVIDIA A10G (22.5 GB)"; the memory as given otherwise."""
    number, _, unit = memory.partition(" ")
    try:
        mib = float(number)
    except ValueError:
        return f"{name} ({memory})" if memory else name
    if unit.lower() in ("mib", ""):
        return f"{name} ({mib / 1024:.1f} GB)"
    return f"{name} ({memory})"


def _torch_build() -> tuple[str, str | None]:
    """(torch version, the CUDA version it was built for: None for a CPU-only build)."""
    try:
        import torch
    except ImportError:
        return "not installed", None
    return torch.__version__, torch.version.cuda


def gpu_without_cuda() -> GpuHint | None:
    """A hint when nvidia-smi finds a GPU and torch is a build without CUDA; None otherwise.

    A CUDA build that still does not see the GPU (`torch.cuda.is_available()` false: a
    driver too old for it) is not this case: reinstalling torch would not help.
    """
    gpus = nvidia_gpus()
    if not gpus:
        return None
    version, cuda = _torch_build()
    if cuda is not None:
        return None
    return GpuHint(gpus, version, cuda_install_command(version))


# --- versions, devices, folders ------------------------------------------------------------

LIBRARIES = ("torch", "transformers", "peft", "bitsandbytes", "accelerate", "huggingface_hub")


def versions() -> dict[str, str]:
    """Installed versions of the libraries that matter for training, plus CUDA's."""
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "not installed"
    try:
        import torch

        found["torch"] = torch.__version__
        found["CUDA"] = torch.version.cuda or "none (CPU-only torch)"
    except ImportError:
        found["CUDA"] = "none (no torch)"
    return {k: found[k] for k in ("torch", "CUDA", *LIBRARIES[1:])}


@dataclass(frozen=True)
class Device:
    name: str
    kind: str
    """"cuda", "mps" or "cpu"."""
    memory: int | None
    """Total bytes (GPU memory; RAM for the CPU and Apple GPUs)."""
    free: int | None = None


def devices() -> list[Device]:
    """Every device torch can train on, the CPU last, with its memory."""
    import psutil

    found = []
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            try:
                free, _ = torch.cuda.mem_get_info(i)
            except RuntimeError:
                free = None
            found.append(Device(props.name, f"cuda:{i}", int(props.total_memory), free))
    mps = getattr(getattr(torch, "backends", None), "mps", None)
    vm = psutil.virtual_memory()
    if mps is not None and mps.is_available():
        found.append(Device("Apple GPU (MPS)", "mps", int(vm.total), int(vm.available)))
    cpus = psutil.cpu_count(logical=False) or psutil.cpu_count() or 1
    found.append(Device(f"CPU ({cpus} cores)", "cpu", int(vm.total), int(vm.available)))
    return found


def folders() -> dict[str, Path]:
    """The folders Studio reads and writes, and the Hugging Face cache it finds models in."""
    from huggingface_hub import constants

    return {
        "Studio data": paths.data_dir(),
        "Projects": paths.projects_dir(),
        "Settings": paths.config_dir(),
        "Hugging Face cache": Path(constants.HF_HUB_CACHE),
    }


@dataclass
class SystemReport:
    """Everything the Settings page shows, gathered in one go on a worker thread."""

    versions: dict[str, str]
    devices: list[Device]
    folders: dict[str, Path]
    models: list
    """studio.core.model_info.CachedModel, largest first."""
    hint: GpuHint | None


def system_report() -> SystemReport:
    from studio.core.model_info import list_cached_models

    return SystemReport(versions(), devices(), folders(), list_cached_models(), gpu_without_cuda())
