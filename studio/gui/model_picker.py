"""One model slot of the Chat page: base model, adapter, quantization, Load and its progress."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
)

from studio.gui import chat_worker, theme
from studio.gui.quality_check import QualityCheck

OTHER = "__other__"


class ModelPicker(QGroupBox):
    """Base model + adapter + quantization for one slot, with Load and its progress."""

    load_requested = Signal(int)
    cancel_requested = Signal(int)
    """Cancel pressed during a hub download."""

    def __init__(self, slot: int, parent=None, *, title: str = ""):
        super().__init__(title or f"Model {'AB'[slot]}", parent)
        self.slot = slot
        self.model_edit = QLineEdit()
        self.model_edit.setPlaceholderText("base model folder or hub id")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_model)
        self.adapter_box = QComboBox()
        self.adapter_box.setMinimumContentsLength(24)
        self.adapter_box.activated.connect(self._adapter_chosen)
        self.quant_box = QComboBox()
        self.quant_box.addItems(["none", "8bit", "4bit"])
        self.quality = QualityCheck(self.quant_box, self)  # sets the box's tooltip
        self.adapter_box.currentIndexChanged.connect(self._choice_changed)
        self.model_edit.textChanged.connect(self._choice_changed)
        self.load_button = QPushButton("Load")
        self.load_button.clicked.connect(lambda: self.load_requested.emit(self.slot))
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(120)
        self.progress.hide()
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setToolTip("Stop the download; the files fetched whole stay")
        self.cancel_button.clicked.connect(lambda: self.cancel_requested.emit(self.slot))
        self.cancel_button.hide()
        self.status = QLabel("Not loaded")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.model_edit, 2)
        row.addWidget(browse)
        self.adapter_label = QLabel("Adapter:")
        row.addWidget(self.adapter_label)
        row.addWidget(self.adapter_box, 2)
        row.addWidget(QLabel("Quantize:"))
        row.addWidget(self.quant_box)
        row.addWidget(self.quality.button)
        row.addWidget(self.load_button)
        status_row = QHBoxLayout()
        status_row.addWidget(self.progress)
        status_row.addWidget(self.status, 1)
        status_row.addWidget(self.cancel_button)
        quality_row = QHBoxLayout()
        quality_row.addWidget(self.quality.progress)
        quality_row.addWidget(self.quality.label, 1)
        layout = QVBoxLayout(self)
        layout.addLayout(row)
        layout.addLayout(status_row)
        layout.addLayout(quality_row)
        self.set_adapters([])

    def model_only(self) -> None:
        """Just the model and its quantization (the wizard's teacher): no adapter, no Load."""
        for w in (self.adapter_label, self.adapter_box, self.quality.button, self.load_button):
            w.hide()
        self.status.setText("")

    def set_adapters(self, adapters: list[tuple[str, str]]) -> None:
        current = self.adapter_box.currentData()
        self.adapter_box.clear()
        self.adapter_box.addItem("None: the base model alone", "")
        for label, folder in adapters:
            self.adapter_box.addItem(label, folder)
        if current and self.adapter_box.findData(current) < 0 and current != OTHER:
            self.adapter_box.addItem(Path(current).name, current)
        self.adapter_box.addItem("Other adapter folder…", OTHER)
        index = self.adapter_box.findData(current) if current else 0
        self.adapter_box.setCurrentIndex(max(0, index))

    def set_adapter(self, folder: str) -> None:
        index = self.adapter_box.findData(folder)
        if index < 0:
            self.adapter_box.insertItem(self.adapter_box.count() - 1, Path(folder).name, folder)
            index = self.adapter_box.findData(folder)
        self.adapter_box.setCurrentIndex(index)

    def choice(self) -> chat_worker.ModelChoice:
        adapter = self.adapter_box.currentData() or ""
        return chat_worker.ModelChoice(
            self.model_edit.text().strip(),
            "" if adapter == OTHER else adapter,
            self.quant_box.currentText(),
        )

    def _choice_changed(self, *_args) -> None:
        choice = self.choice()
        self.quality.set_choice(choice.adapter, choice.model)

    def _browse_model(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder")
        if folder:
            self.model_edit.setText(folder)

    def _adapter_chosen(self, index: int) -> None:
        if self.adapter_box.itemData(index) == OTHER:
            folder = QFileDialog.getExistingDirectory(
                self, "Choose a run, adapter or checkpoint folder"
            )
            if folder:
                self.set_adapter(folder)
            else:
                self.adapter_box.setCurrentIndex(0)
        folder = self.adapter_box.currentData()
        if folder and not self.model_edit.text().strip():
            base = chat_worker.run_base_model(folder)
            if base:
                self.model_edit.setText(base)

    def show_loading(self, done, total) -> None:
        """A loading stage (done of total), or ("download", DownloadProgress) for a hub model
        being downloaded first: its bytes, and Cancel."""
        if done == "download":
            self.show_download(total)
            return
        self.cancel_button.hide()
        self.progress.setFormat("%p%")
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        self.progress.show()
        self.status.setText(
            ("Loading the model…", "Applying the adapter…", "Preparing…", "Ready")[min(done, 3)]
        )

    def show_download(self, p) -> None:
        from studio.core.hub import bytes_text

        # Per mille: a byte count overflows the bar's int past 2 GB.
        self.progress.setRange(0, 1000)
        self.progress.setValue(int(1000 * p.fraction))
        self.progress.setFormat(f"{100 * p.fraction:.0f}%")
        self.progress.show()
        self.cancel_button.show()
        self.status.setStyleSheet("")
        self.status.setText(f"Downloading {p.file or p.repo_id}: {bytes_text(p.done, p.total)}")

    def show_status(self, text: str, error: bool = False) -> None:
        self.cancel_button.hide()
        self.progress.hide()
        self.status.setStyleSheet(f"color: {theme.error_color().name()}" if error else "")
        self.status.setText(text)
