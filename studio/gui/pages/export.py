"""The Export page: a trained run as GGUF (llama.cpp, LM Studio), Ollama, a merged Hugging
Face folder, a LoRA GGUF or ONNX, in a few clicks.

Choose the run, what to export it as and the type (each with its expected size and what it
does to the answers), then Export. The export is `studio export ... --events` in a child
process (studio.gui.export_job), shown live as a stage, a progress bar with its ETA and a log;
when it is done the page lists the files from export.json, says whether the result was checked
in llama.cpp, and gives the commands that run it. The equivalent CLI command is always shown.
One export at a time; this page only draws and never imports torch.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextOption
from PySide6.QtWidgets import (
    QApplication,
    QButtonGroup,
    QCheckBox,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QRadioButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.core.export.options import GGUF_QUANTS, TARGETS
from studio.gui import export_job, theme, workers
from studio.gui.export_job import TARGET_LABELS, ExportChoice, ExportJob
from studio.gui.export_widgets import ExportResult, TypeList, copy_text

OTHER = "__other__"
DEFAULT_KEY = {"gguf": "f16", "lora-gguf": "f16", "hf": "auto", "onnx": "float32"}


class ExportPage(QWidget):
    export_finished = Signal(str)
    """completed, stopped or failed: after each export ends."""
    progressed = Signal(int, int, str)

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.facts: export_job.RunFacts | None = None
        self.job: ExportJob | None = None
        # The type chosen per target, kept while switching (GGUF and Ollama share theirs).
        self.keys = dict(DEFAULT_KEY)
        self._auto_output = ""
        self._facts_for = ""
        self._list_generation = 0
        self._previous_job = ""
        self.llama_ok = export_job.llama_cpp_installed()
        self.onnx_ok = export_job.onnx_installed()

        heading = QLabel("Export")
        heading.setFont(theme.title_font())
        splitter = QSplitter(Qt.Orientation.Horizontal)
        splitter.addWidget(self._settings_column())
        splitter.addWidget(self._result_column())
        splitter.setStretchFactor(0, 1)
        splitter.setStretchFactor(1, 1)
        splitter.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(heading)
        layout.addWidget(splitter, 1)

        state.project_changed.connect(self._project_changed)
        app = QApplication.instance()
        if app is not None:  # a child left going at exit is stopped, not orphaned
            app.aboutToQuit.connect(self.shutdown)
        self.set_target("gguf")
        self.refresh_runs()

    # --- layout ---------------------------------------------------------------------------

    def _settings_column(self) -> QWidget:
        self.run_box = QComboBox()
        self.run_box.setMinimumContentsLength(30)
        self.run_box.activated.connect(self._run_activated)
        self.run_box.currentIndexChanged.connect(self._run_changed)
        self.base_label = QLabel("")
        self.base_label.setWordWrap(True)
        self.base_label.setStyleSheet(f"color: {theme.muted_color().name()}")
        run_row = QHBoxLayout()
        run_row.addWidget(QLabel("Run:"))
        run_row.addWidget(self.run_box, 1)

        target_group = QGroupBox("Export as")
        grid = QVBoxLayout(target_group)
        grid.setSpacing(2)
        self.target_group = QButtonGroup(self)
        self.target_buttons: dict[str, QRadioButton] = {}
        for target in ("gguf", "ollama", "hf", "lora-gguf", "onnx"):
            button = QRadioButton(TARGET_LABELS[target])
            if target == "onnx" and not self.onnx_ok:
                button.setEnabled(False)
                button.setText(f"{TARGET_LABELS[target]}: {export_job.ONNX_EXTRA}")
            self.target_buttons[target] = button
            self.target_group.addButton(button)
            button.toggled.connect(lambda on, t=target: on and self.set_target(t))
            grid.addWidget(button)

        type_group = QGroupBox("Type")
        self.type_list = TypeList(len(GGUF_QUANTS))
        self.type_list.currentItemChanged.connect(self._type_changed)
        type_layout = QVBoxLayout(type_group)
        type_layout.addWidget(self.type_list)

        self.output_edit = QLineEdit()
        self.output_edit.setPlaceholderText("RUN/exports/<target>-<type>")
        self.output_edit.textChanged.connect(self._update_command)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse_output)
        output_row = QHBoxLayout()
        output_row.addWidget(QLabel("Output folder:"))
        output_row.addWidget(self.output_edit, 1)
        output_row.addWidget(browse)
        self.replace_box = QCheckBox("Replace if it exists")
        self.replace_box.setToolTip(
            "The old folder stays until the new export is whole, then it is replaced."
        )
        self.verify_box = QCheckBox("Check the result in llama.cpp")
        self.verify_box.setChecked(True)
        self._verify_wanted = True
        self.verify_box.clicked.connect(lambda on: setattr(self, "_verify_wanted", on))
        for box in (self.replace_box, self.verify_box):
            box.toggled.connect(self._update_command)
        checks = QHBoxLayout()
        checks.addWidget(self.replace_box)
        checks.addWidget(self.verify_box)
        checks.addStretch(1)

        # The whole command, wrapped: a path cut off at the edge could not be checked.
        self.command_view = QPlainTextEdit()
        self.command_view.setReadOnly(True)
        self.command_view.setFont(theme.mono_font())
        self.command_view.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.command_view.setFixedHeight(self.command_view.fontMetrics().lineSpacing() * 3 + 12)
        self.command_view.setToolTip("The same export from a terminal")
        copy_command = QPushButton("Copy")
        copy_command.clicked.connect(lambda: copy_text(self.command_view.toPlainText()))
        command_head = QHBoxLayout()
        command_head.addWidget(QLabel("The same from a terminal:"), 1)
        command_head.addWidget(copy_command)

        self.export_button = QPushButton("Export")
        self.export_button.setDefault(True)
        self.export_button.clicked.connect(self.start_export)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.export_button)

        self.form = QWidget()  # disabled while an export runs: one at a time
        form = QVBoxLayout(self.form)
        form.setContentsMargins(0, 0, 0, 0)
        form.addLayout(run_row)
        form.addWidget(self.base_label)
        form.addWidget(target_group)
        form.addWidget(type_group)
        form.addLayout(output_row)
        form.addLayout(checks)
        form.addLayout(command_head)
        form.addWidget(self.command_view)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 8, 0)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addStretch(1)
        scroll = QScrollArea()  # a small window scrolls rather than squashing the list
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setWidget(column)
        return scroll

    def _result_column(self) -> QWidget:
        self.stage_label = QLabel("Choose a run and a type, then Export.")
        self.stage_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.hide()  # until the first export: an idle 0% bar reads as stuck
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.message.hide()

        self.result = ExportResult()
        self.result.log_text.connect(self._log)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(theme.mono_font())
        self.log.setMaximumBlockCount(5000)
        self.log.setPlaceholderText("What the export does appears here.")
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(8, 0, 0, 0)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.message)
        layout.addWidget(self.result)
        layout.addWidget(QLabel("Log:"))
        layout.addWidget(self.log, 1)
        return column

    # --- the run ---------------------------------------------------------------------------

    def _project_changed(self, _project) -> None:
        self.run_box.clear()  # a folder chosen in the last project is not kept
        self.refresh_runs()

    def refresh_runs(self) -> None:
        project = self.state.project
        self._list_generation += 1
        if project is None:
            self._runs_listed((self._list_generation, []))
            return
        generation = self._list_generation
        workers.run_task(
            self,
            lambda: (generation, export_job.export_runs(project.runs_dir)),
            on_done=self._runs_listed,
            on_error=lambda e: self.base_label.setText(f"Cannot list the runs: {e}"),
        )

    def _runs_listed(self, result) -> None:
        generation, rows = result
        if generation != self._list_generation:
            return  # a newer listing is on its way
        current = self.adapter()
        self.run_box.blockSignals(True)
        self.run_box.clear()
        for label, folder, _status in rows:
            self.run_box.addItem(label, folder)
        if not rows:
            self.run_box.addItem("No run with an adapter yet: train one first", "")
        if current and self.run_box.findData(current) < 0:
            self.run_box.addItem(Path(current).name, current)  # a folder chosen by hand
        self.run_box.addItem("Other folder…", OTHER)
        # Keep the choice; else the latest finished run; else the latest run.
        index = self.run_box.findData(current) if current else -1
        if index < 0:
            finished = [i for i, r in enumerate(rows) if r[2] == "completed"]
            index = finished[0] if finished else 0
        self.run_box.setCurrentIndex(index)
        self.run_box.blockSignals(False)
        self._run_changed()

    def adapter(self) -> str:
        data = self.run_box.currentData()
        return "" if data in (None, OTHER) else str(data)

    def select_run(self, folder: str) -> None:
        """Choose a run (or adapter/checkpoint) folder, listed or not."""
        folder = str(folder)
        index = self.run_box.findData(folder)
        if index < 0:
            self.run_box.insertItem(self.run_box.count() - 1, Path(folder).name, folder)
            index = self.run_box.findData(folder)
        self.run_box.setCurrentIndex(index)

    def _run_activated(self, index: int) -> None:
        if self.run_box.itemData(index) != OTHER:
            return
        folder = QFileDialog.getExistingDirectory(
            self, "Choose a run, adapter or checkpoint folder"
        )
        if folder:
            self.select_run(folder)
        else:
            self.run_box.setCurrentIndex(max(0, self.run_box.findData(self._facts_for)))

    def _run_changed(self, *_args) -> None:
        folder = self.adapter()
        if folder == self._facts_for or self.run_box.currentData() == OTHER:
            return  # for Other folder…, the dialog decides (_run_activated)
        self._facts_for = folder
        self.facts = None
        self._fill_types()
        if not folder:
            self.base_label.setText("")
            return
        self.base_label.setText("Reading the base model…")
        workers.run_task(
            self,
            export_job.read_facts,
            folder,
            on_done=self._facts_read,
            on_error=lambda e: self.base_label.setText(f"Cannot read the run: {e}"),
        )

    def _facts_read(self, facts: export_job.RunFacts) -> None:
        if facts.folder != self._facts_for:
            return  # another run was chosen meanwhile
        self.facts = facts
        if facts.problem:
            self.base_label.setText(f"Sizes unknown: {facts.problem}.")
        else:
            self.base_label.setText(
                f"Base model: {facts.base} · {facts.num_params:,} parameters · {facts.dtype}"
            )
        self._fill_types()

    # --- target and type -------------------------------------------------------------------

    def set_target(self, target: str) -> None:
        assert target in TARGETS, target
        button = self.target_buttons[target]
        if not button.isChecked():
            button.setChecked(True)  # comes back here through toggled
            return
        self.target = target
        verify = {"gguf": "llama.cpp", "ollama": "llama.cpp", "onnx": "onnxruntime"}.get(target)
        self.verify_box.setEnabled(verify is not None and (verify != "llama.cpp" or self.llama_ok))
        self.verify_box.setHidden(verify is None)  # a merged folder has nothing to check
        # A check that cannot run is shown unticked; the user's choice returns with it.
        self.verify_box.setChecked(self.verify_box.isEnabled() and self._verify_wanted)
        text = f"Check the result in {verify or 'llama.cpp'}"
        if verify == "llama.cpp" and not self.llama_ok:
            text += " (needs llama-cpp-python)"
        self.verify_box.setText(text)
        self._fill_types()

    def _fill_types(self) -> None:
        if not hasattr(self, "target"):
            return
        rows = export_job.type_rows(self.target, self.facts, self.llama_ok)
        self.type_list.fill(rows, self.keys[self._slot()])
        self._type_changed()

    def _slot(self) -> str:
        return "gguf" if self.target == "ollama" else self.target

    def type_key(self) -> str:
        return self.type_list.key()

    def set_type(self, key: str) -> None:
        self.type_list.set_key(key)

    def type_sizes(self) -> dict[str, int | None]:
        """The expected size of each listed type, in bytes (None: unknown)."""
        return self.type_list.sizes()

    def _type_changed(self, *_args) -> None:
        key = self.type_key()
        if key:
            self.keys[self._slot()] = key
        # The default folder follows the choice until the user types their own.
        default = (
            export_job.default_output(self.facts, self.target, key) if self.facts and key else ""
        )
        if self.output_edit.text().strip() in ("", self._auto_output):
            self.output_edit.setText(default)
        self._auto_output = default
        self._update_command()

    def _browse_output(self) -> None:
        start = self.output_edit.text().strip() or (self.facts.home if self.facts else "")
        folder = QFileDialog.getExistingDirectory(self, "Export into this folder", start)
        if folder:
            self.output_edit.setText(folder)

    # --- the command -----------------------------------------------------------------------

    def choice(self) -> ExportChoice:
        output = self.output_edit.text().strip()
        if output and self._auto_output and Path(output) == Path(self._auto_output):
            output = ""  # the CLI picks the same folder: keep the command short
        return ExportChoice(
            adapter=self.adapter(),
            target=self.target,
            key=self.type_key(),
            output=output,
            overwrite=self.replace_box.isChecked(),
            # Unchecked and disabled (llama-cpp-python missing) lets the core say why it skipped.
            verify=self.verify_box.isChecked() or not self.verify_box.isEnabled(),
        )

    def _update_command(self, *_args) -> None:
        c = self.choice()
        ready = bool(c.adapter and c.key)
        self.command_view.setPlainText(
            export_job.shown_command(export_job.export_args(c)) if ready else ""
        )
        self.export_button.setEnabled(ready and not self.is_running())

    # --- the export ------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.job is not None

    def start_export(self) -> bool:
        """Start the export as chosen; False when one is already going or nothing is chosen."""
        c = self.choice()
        if self.is_running() or not c.adapter or not c.key:
            return False
        args = export_job.export_args(c)
        self.log.clear()
        self.log.appendPlainText("$ " + export_job.shown_command(args))
        self.result.show_report({}, "")
        self.message.hide()
        self.stage_label.setText("Starting…")
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.progress.show()
        home = self.facts.home if self.facts else str(Path(c.adapter).parent)
        self.job = ExportJob(args, home, parent=self)
        self.job.event.connect(self._event)
        self.job.log_text.connect(self._log)
        self.job.ended.connect(self._ended)
        self.form.setEnabled(False)
        self.export_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self._previous_job = self.state.job
        self.state.set_job(f"Exporting {Path(c.adapter).name}")
        self.job.start()
        return True

    def cancel(self) -> None:
        if self.job is not None and not self.job.cancelled:
            self.job.cancel()
            self.cancel_button.setEnabled(False)
            self.stage_label.setText("Stopping… (nothing will be left half-written)")

    def _event(self, ev: dict) -> None:
        kind = ev.get("type")
        if kind == "progress":
            done, total = int(ev.get("done") or 0), int(ev.get("total") or 0)
            stage = str(ev.get("stage") or "")
            # Busy until a stage's first tick: a merge sits at 0 of 2 for minutes on a big
            # model, and a bar stuck at 0% looks hung.
            self.progress.setRange(0, max(1, total) if done else 0)
            self.progress.setValue(done)
            if not (self.job and self.job.cancelled):
                words = export_job.STAGES.get(stage, stage.capitalize())
                eta = export_job.eta_text(float(ev.get("eta_s") or 0))
                self.stage_label.setText(f"{words}…" + (f" {eta}" if eta else ""))
            self.progressed.emit(done, total, stage)
        elif kind == "log":
            prefix = "warning: " if ev.get("level") == "warning" else ""
            self._log(prefix + str(ev.get("message") or "") + "\n")

    def _log(self, text: str) -> None:
        text = text.rstrip("\n")
        if text.strip():
            self.log.appendPlainText(text)

    def _ended(self, status: str, folder: str, message: str) -> None:
        job, self.job = self.job, None
        job.deleteLater()
        self.form.setEnabled(True)
        self.cancel_button.setEnabled(False)
        if self.state.job.startswith("Exporting "):
            self.state.set_job(self._previous_job)
        self.progress.setRange(0, 1)
        self.progress.setValue(1 if status == "completed" else 0)
        if status == "completed":
            self.stage_label.setText(f"Exported to {folder}")
            self.result.show_report(export_job.read_report(folder), folder)
        else:
            self.stage_label.setText(
                "Export cancelled." if status == "stopped" else "Export failed."
            )
            color = theme.muted_color() if status == "stopped" else theme.error_color()
            self.message.setStyleSheet(f"color: {color.name()}")
            self.message.setText(message)
            self.message.show()
        self._update_command()
        self.export_finished.emit(status)

    # --- lifecycle -------------------------------------------------------------------------

    def showEvent(self, event) -> None:
        if not self.is_running():
            self.refresh_runs()  # runs may have finished training since the page was shown
        super().showEvent(event)

    def shutdown(self) -> None:
        """At exit: stop a running export (it leaves nothing half-written) and wait for it."""
        if self.job is not None:
            self.job.stop_and_wait()
