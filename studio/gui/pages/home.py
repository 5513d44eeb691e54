"""The Home page: start a fine-tune, open a project or the demo, recent projects, runs."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QFrame,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPushButton,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.core import paths
from studio.gui import settings, theme
from studio.gui.workers import run_task


def list_runs(project):
    """Worker: the project's runs with their status, newest first."""
    return project, project.runs()


class HomePage(QWidget):
    new_run_requested = Signal()
    open_requested = Signal()
    demo_requested = Signal()
    new_project_requested = Signal()
    recent_chosen = Signal(str)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        layout = QVBoxLayout(self)
        heading = QLabel("Welcome to Studio")
        heading.setFont(theme.title_font(1.8))
        intro = QLabel(
            "Fine-tune a language model on your own data: import a file, pick a model, "
            "choose how hard to train, and watch it learn. Every problem with the data is "
            "shown before training starts."
        )
        intro.setWordWrap(True)
        layout.addWidget(heading)
        layout.addWidget(intro)
        self.gpu_banner = self._make_gpu_banner()
        layout.addWidget(self.gpu_banner)
        state.gpu_hint_changed.connect(self.show_gpu_hint)

        buttons = QHBoxLayout()
        self.new_button = QPushButton("New fine-tune…")
        self.new_button.setDefault(True)
        self.new_button.setToolTip("Ctrl+N: a guided wizard from data to a running training")
        self.open_button = QPushButton("Open project…")
        self.open_button.setToolTip("Ctrl+O: a project folder, or a run folder from the CLI")
        self.project_button = QPushButton("New project…")
        self.demo_button = QPushButton("Open the demo project")
        if not paths.demo_available():
            self.demo_button.setEnabled(False)
            self.demo_button.setToolTip(f"The bundled demo is missing from {paths.demo_dir()}")
        else:
            self.demo_button.setToolTip(
                "A small instruction dataset and a tiny model: trains in minutes on a CPU"
            )
        for b in (self.new_button, self.open_button, self.project_button, self.demo_button):
            b.setMinimumHeight(36)
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self.new_button.clicked.connect(self.new_run_requested)
        self.open_button.clicked.connect(self.open_requested)
        self.demo_button.clicked.connect(self.demo_requested)
        self.project_button.clicked.connect(self.new_project_requested)

        columns = QHBoxLayout()
        recent_box = QGroupBox("Recent projects")
        rl = QVBoxLayout(recent_box)
        self.recent = QListWidget()
        self.recent.itemActivated.connect(
            lambda item: self.recent_chosen.emit(item.data(Qt.ItemDataRole.UserRole))
        )
        rl.addWidget(self.recent)
        self.project_box = QGroupBox("Current project")
        pl = QVBoxLayout(self.project_box)
        self.project_label = QLabel("No project open.")
        self.project_label.setWordWrap(True)
        self.project_label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.runs = QTableWidget(0, 4)
        self.runs.setHorizontalHeaderLabels(["Run", "Status", "Step", "Loss"])
        self.runs.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.runs.verticalHeader().setVisible(False)
        self.runs.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        pl.addWidget(self.project_label)
        pl.addWidget(self.runs, 1)
        columns.addWidget(recent_box, 1)
        columns.addWidget(self.project_box, 2)
        layout.addLayout(columns, 1)
        state.project_changed.connect(self.refresh)
        self.refresh()

    def _make_gpu_banner(self) -> QFrame:
        """An NVIDIA GPU under a CPU-only torch: what it costs, and the command that fixes it."""
        banner = QFrame()
        banner.setObjectName("gpuBanner")
        banner.setStyleSheet(
            f"#gpuBanner {{ border: 1px solid {theme.error_color().name()}; border-radius: 4px; }}"
        )
        bl = QVBoxLayout(banner)
        self.gpu_text = QLabel("")
        self.gpu_text.setWordWrap(True)
        self.gpu_command = QLineEdit()
        self.gpu_command.setReadOnly(True)
        self.gpu_command.setFont(theme.mono_font())
        self.gpu_copy = QPushButton("Copy")
        self.gpu_copy.setToolTip("Copy the command to the clipboard")
        self.gpu_copy.clicked.connect(self.copy_gpu_command)
        row = QHBoxLayout()
        row.addWidget(self.gpu_command, 1)
        row.addWidget(self.gpu_copy)
        bl.addWidget(self.gpu_text)
        bl.addLayout(row)
        banner.hide()
        return banner

    def show_gpu_hint(self, hint) -> None:
        self.gpu_banner.setVisible(hint is not None)
        if hint is not None:
            self.gpu_text.setText(hint.text)
            self.gpu_command.setText(hint.command)
            self.gpu_command.setCursorPosition(0)

    def copy_gpu_command(self) -> None:
        QApplication.clipboard().setText(self.gpu_command.text())
        self.gpu_copy.setText("Copied")

    def refresh(self, *_args) -> None:
        self.recent.clear()
        for folder in settings.recent_projects():
            item = QListWidgetItem(folder)
            item.setData(Qt.ItemDataRole.UserRole, folder)
            self.recent.addItem(item)
        if self.recent.count() == 0:
            item = QListWidgetItem("No recent projects yet.")
            item.setFlags(Qt.ItemFlag.NoItemFlags)
            self.recent.addItem(item)
        project = self.state.project
        self.runs.setRowCount(0)
        if project is None:
            self.project_label.setText(
                "No project open. Start a new fine-tune or open the demo project."
            )
            return
        lines = [f"<b>{project.name}</b> — {project.folder}"]
        if project.dataset:
            lines.append(f"Data: {project.dataset}")
        if project.model:
            lines.append(f"Model: {project.model}")
        self.project_label.setText("<br>".join(lines))
        # Reading every run's events (tens of MB for long runs) is not for the GUI thread.
        run_task(self, list_runs, project, on_done=self._runs_listed)

    def _runs_listed(self, result) -> None:
        project, runs = result
        if project is not self.state.project:
            return  # another project was opened meanwhile
        self.runs.setRowCount(len(runs))
        for row, run in enumerate(runs):
            loss = "" if run.final_loss is None else f"{run.final_loss:.4f}"
            step = f"{run.step}/{run.total_steps}" if run.total_steps else ""
            for col, text in enumerate((run.name, run.status, step, loss)):
                self.runs.setItem(row, col, QTableWidgetItem(text))
