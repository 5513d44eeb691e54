"""The Train page, for now: the run that was started, its status and its log tail.

Live loss curves come with the training-monitor work; this page already supervises the
child process (a one-second poll that reads events.jsonl and train.log).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, QTimer
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from studio.core.project import read_run
from studio.gui import theme


class TrainPage(QWidget):
    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.run = None  # a run_launcher.LaunchedRun
        layout = QVBoxLayout(self)
        heading = QLabel("Train")
        heading.setFont(theme.title_font())
        self.status = QLabel("No run started yet. Use New fine-tune (Ctrl+N) to start one.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.command = QLabel("")
        self.command.setFont(theme.mono_font())
        self.command.setWordWrap(True)
        self.command.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.command.hide()
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(theme.mono_font())
        self.log.setPlaceholderText("The training output appears here.")
        self.stop_button = QPushButton("Stop training")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        note = QLabel("Live loss curves and checkpoints are coming soon to this page.")
        note.setStyleSheet(f"color: {theme.muted_color().name()}")
        row = QHBoxLayout()
        row.addWidget(self.status, 1)
        row.addWidget(self.stop_button)
        layout.addWidget(heading)
        layout.addLayout(row)
        layout.addWidget(self.command)
        layout.addWidget(self.log, 1)
        layout.addWidget(note)
        self.timer = QTimer(self)
        self.timer.setInterval(1000)
        self.timer.timeout.connect(self.refresh)

    def show_run(self, run) -> None:
        self.run = run
        self.command.setText(" ".join(run.command))
        self.command.show()
        self.stop_button.setEnabled(True)
        self.refresh()
        self.timer.start()

    def refresh(self) -> None:
        if self.run is None:
            return
        summary = read_run(self.run.run_dir)
        code = self.run.poll()
        if code is None:
            text = f"Started: {self.run.run_dir.name} (process {self.run.process.pid})"
            if summary.total_steps:
                text += f" · step {summary.step} of {summary.total_steps}"
            self.state.set_job(f"Training {self.run.run_dir.name}")
        else:
            self.timer.stop()
            self.stop_button.setEnabled(False)
            outcome = summary.status if summary.status != "running" else "ended"
            text = f"{self.run.run_dir.name}: {outcome} (exit code {code})"
            if summary.message:
                text += f": {summary.message}"
            self.state.set_job("")
        self.status.setText(text)
        try:
            tail = self.run.log_path.read_text(encoding="utf-8", errors="replace")[-20000:]
        except OSError:
            tail = ""
        if tail != self.log.toPlainText():
            self.log.setPlainText(tail)
            self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())

    def stop(self) -> None:
        if self.run is not None:
            self.run.stop(timeout=10)
            self.refresh()

    def shutdown(self) -> None:
        self.timer.stop()
