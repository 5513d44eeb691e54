"""The Evaluate page: the base model against one or more runs, side by side.

Choose the runs (all trained on one base), the data (the first run's validation split or a
held-out file), how many prompts to answer and, optionally, an LLM judge or lm-evaluation-
harness tasks; then Evaluate. The work is `studio eval ... --events` in a child process
(studio.gui.eval_job), shown as a stage and a progress bar; the result is a table of the
metrics and every model's answers side by side. Past reports of the run open from a list, and
the full report.html opens in the browser. This page only draws and never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QApplication,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTextBrowser,
    QVBoxLayout,
    QWidget,
)

from studio.gui import eval_job, export_job, theme, workers
from studio.gui.download_view import show_download
from studio.gui.eval_job import EvalChoice, EvalJob


class EvaluatePage(QWidget):
    evaluation_finished = Signal(str)
    """completed, stopped or failed: after each evaluation ends."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.job: EvalJob | None = None
        self.report: dict = {}
        self.report_folder = ""
        self._wanted: set[str] = set()
        heading = QLabel("Evaluate")
        heading.setFont(theme.title_font())
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._settings_column())
        splitter.addWidget(self._result_column())
        splitter.setStretchFactor(0, 2)
        splitter.setStretchFactor(1, 3)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(splitter, 1)
        state.project_changed.connect(lambda _p: self.refresh_runs())
        app = QApplication.instance()
        if app is not None:  # a child left going at exit is stopped, not orphaned
            app.aboutToQuit.connect(self.shutdown)
        self.refresh_runs()

    # --- layout ---------------------------------------------------------------------------

    def _settings_column(self) -> QWidget:
        self.run_list = QListWidget()
        self.run_list.setMinimumHeight(90)
        self.run_list.itemChanged.connect(self._runs_changed)
        self.base_box = QCheckBox("Include the base model (the adapters switched off)")
        self.base_box.setChecked(True)
        self.data_edit = QLineEdit()
        self.data_edit.setPlaceholderText("The first run's validation split")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_data)
        data_row = QHBoxLayout()
        data_row.addWidget(self.data_edit, 1)
        data_row.addWidget(browse)
        self.samples = QSpinBox()
        self.samples.setRange(0, 1000)
        self.samples.setValue(10)
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 4096)
        self.max_tokens.setValue(64)
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("eval-DATE-TIME")
        form = QFormLayout()
        form.addRow("Data:", data_row)
        form.addRow("Prompts answered:", self.samples)
        form.addRow("Longest answer (tokens):", self.max_tokens)
        form.addRow("Report name:", self.name_edit)

        judge = QGroupBox("LLM judge (optional): scores 1–10 from another model")
        self.judge_url = QLineEdit()
        self.judge_url.setPlaceholderText("http://127.0.0.1:8000/v1 (studio serve, vLLM, Ollama…)")
        self.judge_model = QLineEdit()
        self.judge_key = QLineEdit()
        self.judge_key.setEchoMode(QLineEdit.EchoMode.Password)
        judge_form = QFormLayout(judge)
        judge_form.addRow("Endpoint:", self.judge_url)
        judge_form.addRow("Model:", self.judge_model)
        judge_form.addRow("API key:", self.judge_key)
        self.lm_tasks = QLineEdit()
        self.lm_tasks.setPlaceholderText("A task YAML or a folder of them (local files)")
        from studio.core.evaluate import harness

        if not harness.installed():
            self.lm_tasks.setEnabled(False)
            self.lm_tasks.setPlaceholderText(harness.MISSING)
        lm_form = QFormLayout()
        lm_form.addRow("lm-eval tasks:", self.lm_tasks)
        for w in (self.data_edit, self.name_edit, self.judge_url, self.judge_model, self.lm_tasks):
            w.textChanged.connect(self._update_command)
        for w in (self.samples, self.max_tokens):
            w.valueChanged.connect(self._update_command)
        self.base_box.toggled.connect(self._update_command)

        self.command_view = QPlainTextEdit()
        self.command_view.setReadOnly(True)
        self.command_view.setFont(theme.mono_font())
        self.command_view.setFixedHeight(self.command_view.fontMetrics().lineSpacing() * 3 + 12)
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setDefault(True)
        self.evaluate_button.clicked.connect(self.start)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.evaluate_button)

        self.form = QWidget()  # disabled while an evaluation runs: one at a time
        inner = QVBoxLayout(self.form)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(QLabel("Runs (trained on one base model):"))
        inner.addWidget(self.run_list)
        inner.addWidget(self.base_box)
        inner.addLayout(form)
        inner.addWidget(judge)
        inner.addLayout(lm_form)
        inner.addWidget(QLabel("The same from a terminal:"))
        inner.addWidget(self.command_view)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 8, 0)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addStretch(1)
        return column

    def _result_column(self) -> QWidget:
        self.stage_label = QLabel("Choose the runs, then Evaluate.")
        self.stage_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.hide()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.past_box = QComboBox()
        self.past_box.setMinimumContentsLength(20)
        self.past_box.activated.connect(lambda i: self.open_report(self.past_box.itemData(i)))
        self.open_button = QPushButton("Open report.html")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_in_browser)
        past = QHBoxLayout()
        past.addWidget(QLabel("Reports:"))
        past.addWidget(self.past_box, 1)
        past.addWidget(self.open_button)
        self.table = QTextBrowser()
        self.table.setOpenLinks(False)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(8, 0, 0, 0)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.message)
        layout.addLayout(past)
        layout.addWidget(self.table, 1)
        return column

    # --- runs -----------------------------------------------------------------------------

    def refresh_runs(self) -> None:
        project = self.state.project
        if project is None:
            self._runs_listed([])
            return
        workers.run_task(
            self,
            export_job.export_runs,  # the runs with a final adapter, newest first
            project.runs_dir,
            on_done=self._runs_listed,
            on_error=lambda e: self.message.setText(f"Cannot list the runs: {e}"),
        )

    def showEvent(self, event) -> None:
        if self.job is None:
            self.refresh_runs()  # runs may have ended (or come from a terminal) since
        super().showEvent(event)

    def _runs_listed(self, rows) -> None:
        self.run_list.blockSignals(True)
        self.run_list.clear()
        listed = set()
        for label, folder, _status in rows:
            self._add_run(label, folder)
            listed.add(folder)
        for folder in sorted(self._wanted - listed):  # opened from the Train page, or by hand
            self._add_run(Path(folder).name, folder)
        self.run_list.blockSignals(False)
        self._runs_changed()

    def _add_run(self, label: str, folder: str) -> None:
        item = QListWidgetItem(label)
        item.setData(Qt.ItemDataRole.UserRole, folder)
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        checked = folder in self._wanted
        item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self.run_list.addItem(item)

    def chosen_runs(self) -> list[str]:
        items = [self.run_list.item(i) for i in range(self.run_list.count())]
        return [
            it.data(Qt.ItemDataRole.UserRole)
            for it in items
            if it.checkState() == Qt.CheckState.Checked
        ]

    def open_run(self, run_dir) -> None:
        """From the Train page's "Evaluate": this run chosen alone, its latest report shown."""
        self._wanted = {str(run_dir)}
        self.refresh_runs()
        self._runs_listed_now(str(run_dir))

    def _runs_listed_now(self, folder: str) -> None:
        """Show the run at once (the listing on a worker may come a moment later)."""
        found = [
            self.run_list.item(i)
            for i in range(self.run_list.count())
            if self.run_list.item(i).data(Qt.ItemDataRole.UserRole) == folder
        ]
        self.run_list.blockSignals(True)
        if not found:
            self._add_run(Path(folder).name, folder)
        for i in range(self.run_list.count()):
            it = self.run_list.item(i)
            on = it.data(Qt.ItemDataRole.UserRole) == folder
            it.setCheckState(Qt.CheckState.Checked if on else Qt.CheckState.Unchecked)
        self.run_list.blockSignals(False)
        self._runs_changed()

    def _runs_changed(self, *_args) -> None:
        runs = self.chosen_runs()
        self._wanted = set(runs)
        self.evaluate_button.setEnabled(bool(runs) and self.job is None)
        self._list_reports(runs[0] if runs else "")
        self._update_command()

    def _list_reports(self, run_dir: str) -> None:
        from studio.core.evaluate.report import past_reports

        self.past_box.clear()
        found = past_reports(run_dir) if run_dir else []
        for folder in found:
            self.past_box.addItem(folder.name, str(folder))
        if not found:
            self.past_box.addItem("No report for this run yet", "")
        if found and self.report_folder not in {str(f) for f in found}:
            self.open_report(str(found[0]))

    # --- the form -------------------------------------------------------------------------

    def _browse_data(self) -> None:
        path, _ = QFileDialog.getOpenFileName(
            self, "Held-out data", "", "Data (*.jsonl *.json *.csv *.tsv *.parquet *.txt)"
        )
        if path:
            self.data_edit.setText(path)

    def choice(self) -> EvalChoice:
        return EvalChoice(
            runs=self.chosen_runs(),
            data=self.data_edit.text().strip(),
            name=self.name_edit.text().strip(),
            samples=self.samples.value(),
            max_new_tokens=self.max_tokens.value(),
            base=self.base_box.isChecked(),
            judge_url=self.judge_url.text().strip(),
            judge_model=self.judge_model.text().strip(),
            judge_key=self.judge_key.text(),
            lm_eval_tasks=self.lm_tasks.text().strip() if self.lm_tasks.isEnabled() else "",
        )

    def _update_command(self, *_args) -> None:
        c = self.choice()
        shown = eval_job.shown_command(eval_job.eval_args(c)) if c.runs else ""
        self.command_view.setPlainText(shown)

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        c = self.choice()
        if self.job is not None or not c.runs:
            return
        folder = c.runs[0]
        self.job = EvalJob(eval_job.eval_args(c), folder, parent=self)
        self.job.event.connect(self._event)
        self.job.ended.connect(self._ended)
        self.form.setEnabled(False)
        self.evaluate_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.message.clear()
        self.stage_label.setText("Starting…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.state.set_job("Evaluating")
        self.job.start()

    def _event(self, ev: dict) -> None:
        if ev.get("type") == "progress" and str(ev.get("stage")).startswith("download "):
            show_download(self.progress, self.stage_label, ev)
        elif ev.get("type") == "progress":
            stage = str(ev.get("stage") or "")
            self.stage_label.setText(eval_job.STAGES.get(stage, stage) + "…")
            self.progress.setRange(0, max(1, int(ev.get("total") or 1)))
            self.progress.setValue(int(ev.get("done") or 0))
        elif ev.get("type") == "log" and ev.get("level") == "warning":
            self.message.setText(str(ev.get("message") or ""))

    def _ended(self, status: str, folder: str, message: str) -> None:
        self.job.deleteLater()
        self.job = None
        self.form.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.hide()
        self.state.set_job("")
        self._runs_changed()
        if status == "completed":
            self.stage_label.setText("Done.")
            self.open_report(folder)
            self._list_reports(self.chosen_runs()[0] if self.chosen_runs() else "")
        else:
            self.stage_label.setText("Cancelled." if status == "stopped" else "Failed.")
            theme.show_status(self.message, message, "error" if status == "failed" else "")
        self.evaluation_finished.emit(status)

    def cancel(self) -> None:
        if self.job is not None:
            self.stage_label.setText("Stopping…")
            self.job.cancel()

    # --- reports --------------------------------------------------------------------------

    def open_report(self, folder: str) -> None:
        from studio.core.evaluate.report import read_report

        if not folder:
            return
        report = read_report(folder)
        self.report, self.report_folder = report, folder if report else ""
        self.open_button.setEnabled(bool(report))
        index = self.past_box.findData(folder)
        if index >= 0:
            self.past_box.setCurrentIndex(index)
        if not report:
            theme.show_status(self.message, f"Cannot read the report in {folder}.", "error")
            self.table.clear()
            return
        muted = theme.muted_color().name()
        self.table.setHtml(eval_job.report_html(report, muted))

    def open_in_browser(self) -> None:
        if self.report_folder:
            path = Path(self.report_folder) / "report.html"
            QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def shutdown(self) -> None:
        """At exit: stop a running evaluation (it writes nothing half-way) and wait for it."""
        if self.job is not None:
            self.job.stop_and_wait()
