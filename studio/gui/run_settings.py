"""The dialog that starts a run from settings: a new run from the project's settings, or a
re-run of an earlier run with its run.yaml prefilled and edited. It writes a new run folder;
the earlier run is never changed."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtWidgets import (
    QDialog,
    QDialogButtonBox,
    QFormLayout,
    QLabel,
    QLineEdit,
    QVBoxLayout,
)

from studio.core.config import RunConfig
from studio.core.errors import ConfigError
from studio.gui import theme
from studio.gui.forms import ConfigForm


class RunSettingsDialog(QDialog):
    def __init__(self, cfg: RunConfig, runs_dir: Path, name: str, title: str, parent=None):
        super().__init__(parent)
        self.setWindowTitle(title)
        self.resize(720, 600)
        self.base = cfg
        self.runs_dir = Path(runs_dir)
        self.cfg: RunConfig | None = None
        layout = QVBoxLayout(self)
        top = QFormLayout()
        self.name = QLineEdit(name)
        self.model = QLineEdit(cfg.model.path)
        self.data = QLineEdit(cfg.data.path)
        top.addRow("Run name", self.name)
        top.addRow("Model", self.model)
        top.addRow("Training data", self.data)
        layout.addLayout(top)
        self.form = ConfigForm()
        self.form.set_config(cfg)
        layout.addWidget(self.form, 1)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {theme.error_color().name()}")
        layout.addWidget(self.error)
        buttons = QDialogButtonBox(
            QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel
        )
        buttons.button(QDialogButtonBox.StandardButton.Ok).setText("Start training")
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        layout.addWidget(buttons)

    def run_dir(self) -> Path:
        return self.runs_dir / self.name.text().strip()

    def build(self) -> RunConfig:
        """The edited settings; raises ConfigError naming the bad field."""
        name = self.name.text().strip()
        if not name or "/" in name or "\\" in name:
            raise ConfigError("Give the run a folder name (no slashes).", field="name")
        if self.run_dir().exists():
            raise ConfigError(
                f"A run named {name} exists already; choose another name.", field="name"
            )
        if not self.model.text().strip() or not self.data.text().strip():
            raise ConfigError("Choose a model and training data first.", field="model.path")
        cfg = self.form.build(self.base)
        return dataclasses.replace(
            cfg,
            model=dataclasses.replace(cfg.model, path=self.model.text().strip()),
            data=dataclasses.replace(cfg.data, path=self.data.text().strip()),
        )

    def accept(self) -> None:
        try:
            self.cfg = self.build()
        except ConfigError as e:
            self.error.setText(e.message)
            self.form.highlight(e.field)
            return
        super().accept()
