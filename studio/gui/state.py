"""What the pages share: the open project, the imported dataset, the chosen model, the
current settings and the device. Pages read it and listen to its signals; no page reaches
into another page.
"""

from __future__ import annotations

import dataclasses

from PySide6.QtCore import QObject, Signal

from studio.core.config import RunConfig
from studio.core.project import Project


def probe_device() -> tuple[str, int | None, bool, int]:
    """(name, memory in bytes, is_gpu, CUDA GPUs). Runs on a worker thread: it imports torch."""
    import torch

    if torch.cuda.is_available():
        props = torch.cuda.get_device_properties(0)
        return props.name, int(props.total_memory), True, torch.cuda.device_count()
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        import psutil

        return "Apple GPU (MPS)", int(psutil.virtual_memory().total), True, 0
    import psutil

    return "CPU", int(psutil.virtual_memory().total), False, 0


class AppState(QObject):
    project_changed = Signal(object)
    dataset_changed = Signal(object)
    model_changed = Signal(object)
    config_changed = Signal(object)
    device_changed = Signal()
    gpu_hint_changed = Signal(object)
    job_changed = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.project: Project | None = None
        self.dataset = None
        """The imported studio.core.data.records.Dataset, or None."""
        self.model_info = None
        """studio.core.model_info.ModelInfo of the chosen model, or None."""
        self.config = RunConfig()
        self.device_name = "detecting…"
        self.device_total: int | None = None
        self.on_gpu = False
        self.gpus = 0
        """CUDA GPUs visible: with more than one, a run can train on several (torchrun)."""
        self.gpu_hint = None
        """studio.core.system.GpuHint: an NVIDIA GPU that the installed torch cannot use."""
        self.job = ""

    def set_project(self, project: Project | None) -> None:
        self.project = project
        # Nothing of the previous project's data or model carries over into this one.
        self.dataset = None
        self.model_info = None
        if project is not None:
            self.config = project.config()
            self.config_changed.emit(self.config)
        self.project_changed.emit(project)

    def set_dataset(self, dataset) -> None:
        self.dataset = dataset
        if dataset is not None:
            # The format and column mapping the import used are what training must use too.
            self.update_config(
                data=dataclasses.replace(
                    self.config.data,
                    path=dataset.path,
                    format=dataset.format,
                    columns=dict(dataset.columns) if dataset.columns else None,
                )
            )
            self._remember()
        self.dataset_changed.emit(dataset)

    def set_model(self, info) -> None:
        self.model_info = info
        if info is not None:
            self.update_config(model=dataclasses.replace(self.config.model, path=info.source))
            self._remember()
        self.model_changed.emit(info)

    def _remember(self) -> None:
        """Keep the project's data and model choice in project.yaml (reopened next time)."""
        if self.project is None:
            return
        try:
            self.project.remember(self.config)
        except OSError:
            pass  # a read-only project folder: the choice still holds for this session

    def update_config(self, **sections) -> None:
        self.config = dataclasses.replace(self.config, **sections)
        self.config_changed.emit(self.config)

    def set_device(self, name: str, total: int | None, on_gpu: bool, gpus: int = 0) -> None:
        self.device_name, self.device_total, self.on_gpu, self.gpus = name, total, on_gpu, gpus
        self.device_changed.emit()

    def set_gpu_hint(self, hint) -> None:
        self.gpu_hint = hint
        self.gpu_hint_changed.emit(hint)

    def set_job(self, text: str) -> None:
        self.job = text
        self.job_changed.emit(text)
