"""The Data page's Generate dialog: make new training rows with a model, review them as they
come, and add the ones kept to the project as a new dataset.

Settings are in plain words (what to make, from which file, which model or server, how
many, how creative). Generate runs `studio data generate ... --events` in a child process
(studio.gui.generate_job), so the window never freezes and a crash never takes it down.
Rows show up in the preview as the core writes them; each can be accepted, rejected or
edited. Stop ends the child; Continue runs the same command again and the core continues its
output file. "Add to project" writes the rows not rejected, as edited, to a new JSONL in the
project's data folder and asks the Data page to import it.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QDialog,
    QDoubleSpinBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QSpinBox,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.core.project import slugify
from studio.gui import generate_job as gj
from studio.gui import theme
from studio.gui.export_job import eta_text
from studio.gui.generate_preview import RowPreview
from studio.gui.model_picker import ModelPicker

DATA_FILTER = "Data (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)"


class GenerateDialog(QDialog):
    saved = Signal(str)
    """A dataset was written (its path): the Data page imports it."""
    finished_run = Signal(str)
    """completed, stopped or failed: after each generation ends."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Generate data")
        self.state = state
        self.job: gj.GenerateJob | None = None
        self.args: list[str] = []
        self.output = ""
        self._seen = None
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._settings_column())
        split.addWidget(self._preview_column())
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        self.resize(1200, 760)
        self._fill_from_state()
        app = QApplication.instance()
        if app is not None:  # a child left going at exit is stopped, not orphaned
            app.aboutToQuit.connect(self.shutdown)

    # --- layout ---------------------------------------------------------------------------

    def _settings_column(self) -> QWidget:
        self.mode_box = QComboBox()
        for key, words in gj.MODES.items():
            self.mode_box.addItem(words, key)
        self.mode_help = QLabel("")
        self.mode_help.setWordWrap(True)
        self.input_edit = QLineEdit()
        self.input_edit.setPlaceholderText("A file of prompts (or a few examples)")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_input)
        input_row = QHBoxLayout()
        input_row.addWidget(self.input_edit, 1)
        input_row.addWidget(browse)
        self.n_spin = QSpinBox()
        self.n_spin.setRange(1, 100)
        self.n_spin.setValue(2)
        self.count_spin = QSpinBox()
        self.count_spin.setRange(1, 1_000_000)
        self.count_spin.setValue(20)
        self.temperature = QDoubleSpinBox()
        self.temperature.setRange(0.0, 2.0)
        self.temperature.setSingleStep(0.1)
        self.temperature.setValue(0.7)
        self.temperature.setToolTip("0 always picks the likeliest words; higher is more varied.")
        self.max_tokens = QSpinBox()
        self.max_tokens.setRange(1, 8192)
        self.max_tokens.setValue(256)
        self.batch_size = QSpinBox()
        self.batch_size.setRange(1, 1024)
        self.batch_size.setValue(8)
        self.batch_size.setToolTip("Prompts answered together: faster, but more memory.")
        self.form = QFormLayout()
        self.form.addRow("What to make:", self.mode_box)
        self.form.addRow("", self.mode_help)
        self.form.addRow("From the file:", input_row)
        self.form.addRow("Rewordings of each:", self.n_spin)
        self.form.addRow("New examples to make:", self.count_spin)
        self.form.addRow("Creativity (temperature):", self.temperature)
        self.form.addRow("Longest answer (tokens):", self.max_tokens)
        self.form.addRow("Prompts at a time:", self.batch_size)
        self.afresh = QCheckBox("Start afresh (drop the rows made before from these settings)")

        self.command_view = QPlainTextEdit()
        self.command_view.setReadOnly(True)
        self.command_view.setFont(theme.mono_font())
        self.command_view.setFixedHeight(self.command_view.fontMetrics().lineSpacing() * 4 + 12)
        self.settings = QWidget()  # disabled while generating
        inner = QVBoxLayout(self.settings)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addLayout(self.form)
        inner.addWidget(self._model_box())
        inner.addWidget(self.afresh)
        inner.addWidget(QLabel("The same from a terminal:"))
        inner.addWidget(self.command_view)
        self.generate_button = QPushButton("Generate")
        self.generate_button.setDefault(True)
        self.generate_button.clicked.connect(self.start)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.continue_button = QPushButton("Continue")
        self.continue_button.setEnabled(False)
        self.continue_button.setToolTip("Run again: the rows already made are kept, not redone.")
        self.continue_button.clicked.connect(self.resume)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        for b in (self.stop_button, self.continue_button, self.generate_button):
            buttons.addWidget(b)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 8, 0)
        layout.addWidget(self.settings)
        layout.addLayout(buttons)
        layout.addStretch(1)
        self.mode_box.currentIndexChanged.connect(self._mode_changed)
        for w in (self.input_edit, self.endpoint_url, self.endpoint_model):
            w.textChanged.connect(self._update_command)
        self.picker.model_edit.textChanged.connect(self._update_command)
        self.picker.quant_box.currentIndexChanged.connect(self._update_command)
        for w in (self.n_spin, self.count_spin, self.temperature, self.max_tokens, self.batch_size):
            w.valueChanged.connect(self._update_command)
        self.afresh.toggled.connect(self._update_command)
        self.local_radio.toggled.connect(self._source_changed)
        return column

    def _model_box(self) -> QGroupBox:
        box = QGroupBox("Which model writes the rows")
        self.local_radio = QRadioButton("A model on this computer")
        self.server_radio = QRadioButton(
            "A server (OpenAI-compatible: studio serve, vLLM, Ollama…)"
        )
        group = QButtonGroup(box)
        group.addButton(self.local_radio)
        group.addButton(self.server_radio)
        self.local_radio.setChecked(True)
        self.picker = ModelPicker(0, title="Model")
        self.picker.model_only()
        self.picker.setTitle("")
        self.picker.setStyleSheet("QGroupBox { border: 0; margin-top: 0; padding: 0; }")
        self.picker.layout().setContentsMargins(18, 0, 0, 0)
        self.endpoint_url = QLineEdit()
        self.endpoint_url.setPlaceholderText("http://127.0.0.1:8000/v1")
        self.endpoint_model = QLineEdit()
        self.endpoint_model.setPlaceholderText("The model name the server serves")
        self.api_key = QLineEdit()
        self.api_key.setEchoMode(QLineEdit.EchoMode.Password)
        self.server_form = QWidget()
        sf = QFormLayout(self.server_form)
        sf.setContentsMargins(18, 0, 0, 0)
        sf.addRow("Address:", self.endpoint_url)
        sf.addRow("Model:", self.endpoint_model)
        sf.addRow("API key:", self.api_key)
        layout = QVBoxLayout(box)
        layout.addWidget(self.local_radio)
        layout.addWidget(self.picker)
        layout.addWidget(self.server_radio)
        layout.addWidget(self.server_form)
        return box

    def _preview_column(self) -> QWidget:
        self.stage_label = QLabel("Choose what to make, then Generate.")
        self.stage_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.hide()
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.preview = RowPreview()
        self.preview.changed.connect(self._counts_changed)
        self.counts_label = QLabel("")
        self.name_edit = QLineEdit()
        self.name_edit.setPlaceholderText("file name (optional)")
        self.name_edit.setMinimumWidth(160)
        self.add_button = QPushButton("Add to project")
        self.add_button.setEnabled(False)
        self.add_button.setToolTip("Save the rows not rejected, as edited, and import them.")
        self.add_button.clicked.connect(self.add_to_project)
        save_row = QHBoxLayout()
        save_row.addWidget(self.counts_label, 1)
        save_row.addWidget(QLabel("Name:"))
        save_row.addWidget(self.name_edit)
        save_row.addWidget(self.add_button)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(8, 0, 0, 0)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.message)
        layout.addWidget(self.preview, 1)
        layout.addLayout(save_row)
        return column

    # --- the form -------------------------------------------------------------------------

    def _fill_from_state(self) -> None:
        self.refill()
        self._mode_changed()
        self._source_changed()

    def refill(self) -> None:
        """The Data page's dataset and the chosen model, as the starting point."""
        ds, info = self.state.dataset, self.state.model_info
        if ds is not None and ds is not self._seen:  # the Data page's file, when new
            self.input_edit.setText(ds.path)
        self._seen = ds
        model = info.source if info is not None else self.state.config.model.path
        if model and not self.picker.model_edit.text().strip():
            self.picker.model_edit.setText(model)

    def _mode_changed(self, *_args) -> None:
        mode = self.mode_box.currentData()
        self.mode_help.setText(gj.MODE_HELP[mode])
        self.form.setRowVisible(self.n_spin, mode == "paraphrase")
        self.form.setRowVisible(self.count_spin, mode == "self-instruct")
        self._update_command()

    def _source_changed(self, *_args) -> None:
        local = self.local_radio.isChecked()
        self.picker.setEnabled(local)
        self.server_form.setEnabled(not local)
        self._update_command()

    def _browse_input(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Prompts or examples", "", DATA_FILTER)
        if path:
            self.input_edit.setText(path)

    def choice(self) -> gj.GenerateChoice:
        mode = self.mode_box.currentData()
        source = self.input_edit.text().strip()
        local = self.local_radio.isChecked()
        picked = self.picker.choice()
        return gj.GenerateChoice(
            mode=mode,
            input=source,
            output=str(gj.output_path(self.state.project, source, mode)),
            model=picked.model if local else "",
            quant=picked.quant if local else "none",
            endpoint="" if local else self.endpoint_url.text().strip(),
            endpoint_model="" if local else self.endpoint_model.text().strip(),
            api_key="" if local else self.api_key.text(),
            n=self.n_spin.value(),
            count=self.count_spin.value(),
            temperature=self.temperature.value(),
            max_new_tokens=self.max_tokens.value(),
            batch_size=self.batch_size.value(),
            overwrite=self.afresh.isChecked(),
        )

    def _missing(self, c: gj.GenerateChoice) -> str:
        if not c.input:
            return "Choose the file to start from."
        if not (c.model or c.endpoint):
            return "Choose a model, or the address of a server."
        if c.endpoint and not c.endpoint_model:
            return "Name the model the server serves."
        return ""

    def _update_command(self, *_args) -> None:
        c = self.choice()
        missing = self._missing(c)
        shown = gj.shown_command(gj.generate_args(c)) if not missing else missing
        self.command_view.setPlainText(shown)
        self.generate_button.setEnabled(not missing and self.job is None)

    # --- running --------------------------------------------------------------------------

    def start(self) -> None:
        c = self.choice()
        if self.job is not None or self._missing(c):
            return
        if c.output != self.output or c.overwrite:
            self.preview.clear()  # another file: its rows are another preview
        self.output = c.output
        self.args = gj.generate_args(c)
        self._launch(self.args)

    def resume(self) -> None:
        """Continue: the same command again, never afresh (the core skips rows it has)."""
        if self.job is None and self.args:
            self._launch([a for a in self.args if a != "--overwrite"])

    def _launch(self, args: list[str]) -> None:
        if "--overwrite" not in args:  # rows made before (this session or an earlier one)
            for index, record in enumerate(gj.read_rows(self.output)):
                self.preview.add_row(index, record)
        self.job = gj.GenerateJob(args, self.output, str(Path(self.output).parent), parent=self)
        Path(self.output).parent.mkdir(parents=True, exist_ok=True)
        self.job.event.connect(self._event)
        self.job.ended.connect(self._ended)
        self.settings.setEnabled(False)
        self.generate_button.setEnabled(False)
        self.continue_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self.message.clear()
        self.stage_label.setText("Starting…")
        self.progress.setRange(0, 0)
        self.progress.show()
        self.state.set_job("Generating data")
        self.job.start()

    def _event(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "row":
            self.preview.add_row(int(ev.get("index", len(self.preview.rows))), ev.get("record"))
        elif kind == "progress":
            self._show_progress(ev)
        elif kind == "log" and ev.get("level") == "warning":
            theme.show_status(self.message, str(ev.get("message") or ""))

    def _show_progress(self, ev: dict) -> None:
        stage = str(ev.get("stage") or "")
        done, total = int(ev.get("done") or 0), int(ev.get("total") or 0)
        words = gj.STAGES.get(stage, stage.capitalize() or "Working")
        text = f"{words}: {done:,} of {total:,}" if total else f"{words}…"
        eta = eta_text(float(ev.get("eta_s") or 0))
        self.stage_label.setText(f"{text} · {eta}" if eta else text)
        self.progress.setRange(0, max(1, total))
        self.progress.setValue(min(done, max(1, total)))

    def _ended(self, status: str, _output: str, message: str) -> None:
        self.job.deleteLater()
        self.job = None
        self.settings.setEnabled(True)
        self.stop_button.setEnabled(False)
        self.continue_button.setEnabled(status != "completed" and bool(self.args))
        self.progress.hide()
        self.state.set_job("")
        self._update_command()
        words = {"completed": "Done.", "stopped": "Stopped.", "failed": "Failed."}
        self.stage_label.setText(f"{words[status]} {len(self.preview.rows):,} rows made.")
        if message:
            theme.show_status(self.message, message, "error" if status == "failed" else "")
        self.finished_run.emit(status)

    def stop(self) -> None:
        if self.job is not None:
            self.stage_label.setText("Stopping…")
            self.job.cancel()

    def _counts_changed(self) -> None:
        n = self.preview.counts()
        kept = n[gj.ACCEPTED] + n[gj.PENDING]
        text = (
            f"{kept:,} to save ({n[gj.ACCEPTED]:,} accepted, {n[gj.PENDING]:,} not reviewed) · "
            f"{n[gj.REJECTED]:,} rejected"
        )
        if n["unpicked"]:
            text += f" · {n['unpicked']:,} pairs with no better answer picked (left out)"
        self.counts_label.setText(text)
        self.add_button.setEnabled(kept > 0)

    # --- saving ---------------------------------------------------------------------------

    def add_to_project(self) -> str:
        """Write the rows kept to a new file in the project's data folder; the Data page
        imports it (the `saved` signal). Returns the path written, or "" on failure."""
        self.preview.edit_button.setChecked(False)  # an edit in progress is applied first
        mode = self.mode_box.currentData()
        stem = slugify(self.name_edit.text() or f"{Path(self.input_edit.text()).stem}-{mode}")
        path = gj.free_path(gj.data_folder(self.state.project), stem)
        try:
            n = gj.write_kept(list(self.preview.rows.values()), path)
        except OSError as e:
            theme.show_status(self.message, f"Cannot write {path}: {e}", "error")
            return ""
        theme.show_status(self.message, f"Saved {n:,} rows to {path}; importing it.", "ok")
        self.saved.emit(str(path))
        return str(path)

    def closeEvent(self, event) -> None:
        self.shutdown()
        super().closeEvent(event)

    def shutdown(self) -> None:
        """Closing (or quitting): stop a running generation; its rows so far are kept."""
        if self.job is not None:
            self.job.stop_and_wait()


def open_generate(page) -> GenerateDialog:
    """The Data page's "Generate…": one dialog per page, kept (with its rows) between uses;
    a saved dataset is imported on the page."""
    dialog = getattr(page, "generate_dialog", None)
    if dialog is None:
        dialog = page.generate_dialog = GenerateDialog(page.state, page)
        dialog.saved.connect(page.import_file)
    elif dialog.job is None:
        dialog.refill()
    dialog.show()
    dialog.raise_()
    return dialog
