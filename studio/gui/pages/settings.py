"""The Settings page: what this computer gives Studio. Library versions, devices and their
memory, the folders Studio and Hugging Face use (each with an Open button), and the models
already in the Hugging Face cache, so a person offline picks one they have.

Everything is read on a worker thread (it imports torch) the first time the page is shown.
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFormLayout,
    QGridLayout,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPushButton,
    QScrollArea,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.core import system
from studio.core.model_info import human_bytes
from studio.gui import theme
from studio.gui.workers import run_task


def _selectable(text: str) -> QLabel:
    label = QLabel(text)
    label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    return label


class SettingsPage(QWidget):
    model_chosen = Signal(str)
    """A hub id from the cache list: the window hands it to the Model page."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.report: system.SystemReport | None = None
        self._task = None
        outer = QVBoxLayout(self)
        outer.setContentsMargins(0, 0, 0, 0)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        outer.addWidget(scroll)
        body = QWidget()
        scroll.setWidget(body)
        layout = QVBoxLayout(body)

        top = QHBoxLayout()
        heading = QLabel("Settings")
        heading.setFont(theme.title_font())
        self.status = QLabel("")
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.setToolTip("Read versions, devices and the model cache again")
        self.refresh_button.clicked.connect(self.refresh)
        top.addWidget(heading)
        top.addStretch(1)
        top.addWidget(self.status)
        top.addWidget(self.refresh_button)
        layout.addLayout(top)

        columns = QHBoxLayout()
        devices_box = QGroupBox("Devices")
        self.devices_layout = QFormLayout(devices_box)
        self.hint = QLabel("")
        self.hint.setWordWrap(True)
        self.hint.setStyleSheet(f"color: {theme.error_color().name()}")
        self.hint.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.hint.hide()
        versions_box = QGroupBox("Versions")
        self.versions_layout = QFormLayout(versions_box)
        columns.addWidget(devices_box, 1, Qt.AlignmentFlag.AlignTop)
        columns.addWidget(versions_box, 1, Qt.AlignmentFlag.AlignTop)
        layout.addLayout(columns)
        layout.addWidget(self.hint)

        folders_box = QGroupBox("Folders")
        self.folders_layout = QGridLayout(folders_box)
        self.folders_layout.setColumnStretch(1, 1)
        layout.addWidget(folders_box)

        models_box = QGroupBox("Models already downloaded (Hugging Face cache)")
        ml = QVBoxLayout(models_box)
        self.models = QTableWidget(0, 2)
        self.models.setHorizontalHeaderLabels(["Model", "Size on disk"])
        self.models.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.models.horizontalHeader().setSectionResizeMode(
            1, QHeaderView.ResizeMode.ResizeToContents
        )
        self.models.verticalHeader().setVisible(False)
        self.models.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.models.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.models.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.models.setMinimumHeight(160)
        self.models.itemSelectionChanged.connect(self._selection_changed)
        self.models.itemDoubleClicked.connect(lambda _item: self.use_selected())
        self.use_button = QPushButton("Use this model")
        self.use_button.setToolTip("Open it on the Model page as this project's model")
        self.use_button.setEnabled(False)
        self.use_button.clicked.connect(self.use_selected)
        self.no_models = QLabel("")
        self.no_models.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.no_models, 1)
        row.addWidget(self.use_button)
        ml.addWidget(self.models, 1)
        ml.addLayout(row)
        layout.addWidget(models_box, 1)

    # --- reading --------------------------------------------------------------------

    def showEvent(self, event) -> None:
        super().showEvent(event)
        if self.report is None and self._task is None:
            self.refresh()

    def refresh(self) -> None:
        if self._task is not None:
            return
        self.refresh_button.setEnabled(False)
        theme.show_status(self.status, "Reading…")
        self._task = run_task(
            self, system.system_report, on_done=self.show_report, on_error=self._failed
        )

    def _failed(self, error) -> None:
        self._task = None
        self.refresh_button.setEnabled(True)
        theme.show_status(self.status, f"Could not read this computer's details: {error}", "error")

    # --- showing --------------------------------------------------------------------

    def show_report(self, report: system.SystemReport) -> None:
        self._task = None
        self.report = report
        self.refresh_button.setEnabled(True)
        theme.show_status(self.status, "")
        self._fill_form(
            self.devices_layout,
            [(d.kind, self._device_text(d)) for d in report.devices],
        )
        self._fill_form(self.versions_layout, list(report.versions.items()))
        self._show_folders(report.folders)
        self._show_models(report.models, report.folders.get("Hugging Face cache"))
        self.hint.setVisible(report.hint is not None)
        if report.hint is not None:
            self.hint.setText(f"{report.hint.text}\n{report.hint.command}")

    @staticmethod
    def _device_text(device: system.Device) -> str:
        if device.memory is None:
            return device.name
        kind = "RAM" if device.kind in ("cpu", "mps") else "memory"
        free = f", {human_bytes(device.free)} free" if device.free is not None else ""
        return f"{device.name} — {human_bytes(device.memory)} {kind}{free}"

    @staticmethod
    def _fill_form(form: QFormLayout, rows: list[tuple[str, str]]) -> None:
        while form.rowCount():
            form.removeRow(0)
        for key, value in rows:
            form.addRow(key, _selectable(value))

    def _show_folders(self, folders) -> None:
        grid = self.folders_layout
        while grid.count():
            item = grid.takeAt(0)
            if item.widget() is not None:
                item.widget().deleteLater()
        self.folder_buttons: dict[str, QPushButton] = {}
        for row, (name, path) in enumerate(folders.items()):
            button = QPushButton("Open")
            exists = path.is_dir()
            button.setEnabled(exists)
            button.setToolTip(str(path) if exists else "Not created yet")
            button.clicked.connect(
                lambda _=False, p=path: QDesktopServices.openUrl(QUrl.fromLocalFile(str(p)))
            )
            self.folder_buttons[name] = button
            grid.addWidget(QLabel(name), row, 0)
            grid.addWidget(_selectable(str(path)), row, 1)
            grid.addWidget(button, row, 2)

    def _show_models(self, models, cache) -> None:
        self.models.setRowCount(len(models))
        for row, m in enumerate(models):
            item = QTableWidgetItem(m.repo_id)
            item.setData(Qt.ItemDataRole.UserRole, m.repo_id)
            item.setToolTip(m.path)
            self.models.setItem(row, 0, item)
            size = QTableWidgetItem(human_bytes(m.size_bytes))
            size.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.models.setItem(row, 1, size)
        if models:
            self.no_models.setText(
                f"{len(models)} model(s) in {cache}: training on one needs no internet."
            )
        else:
            self.no_models.setText(
                f"No models in {cache} yet. Fetch one from the hub on the Model page (needs the "
                "internet) or choose a model folder there."
            )
        self._selection_changed()

    def _selection_changed(self) -> None:
        self.use_button.setEnabled(self.selected_model() is not None)

    def selected_model(self) -> str | None:
        rows = self.models.selectionModel().selectedRows()
        if not rows:
            return None
        return self.models.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    def use_selected(self) -> None:
        repo = self.selected_model()
        if repo:
            self.model_chosen.emit(repo)
