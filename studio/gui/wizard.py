"""The guided "New fine-tune" wizard: Data → Model → Settings → Review → Train.

Each step validates before Next (the RunConfig dataclasses raise ConfigError naming the
field); the defaults work. Review shows the equivalent `studio train` command and the memory
estimate; Train writes RUN/run.yaml and starts `python -m studio train --config RUN/run.yaml`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QVBoxLayout,
    QWizard,
    QWizardPage,
)

from studio.core import model_info, presets, step_timing
from studio.core.config import FORMATS, RunConfig
from studio.core.errors import ConfigError, StudioError
from studio.core.project import command_line, create_project
from studio.gui import run_launcher, theme
from studio.gui.goals import DISTILL, GoalChooser, TeacherPicker, goal_for_mode, misfit, with_goal
from studio.gui.memory_view import MemoryView
from studio.gui.pages.data import FILE_FILTER, NeedsColumns, load_file
from studio.gui.settings_step import SettingsStep
from studio.gui.workers import run_task

_status = theme.show_status


class DataStep(QWizardPage):
    def __init__(self, wizard: NewRunWizard):
        super().__init__()
        self.w = wizard
        self.setTitle("1. Data")
        self.setSubTitle(
            "What the fine-tune is for, and the file to learn from: JSONL, JSON, CSV, Parquet "
            "or TXT. Every record is checked now."
        )
        self.goals = GoalChooser()
        self.goals.changed.connect(self._goal_changed)
        self.path = QLineEdit()
        self.path.setPlaceholderText("Path to your training data")
        self.path.editingFinished.connect(self.check)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self.browse)
        self.format = QComboBox()
        self.format.addItems(FORMATS)
        self.format.currentTextChanged.connect(lambda _t: self.check(force=True))
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form = QFormLayout(self)
        form.addRow("Goal", self.goals)
        form.addRow("File", row)
        form.addRow("Format", self.format)
        form.addRow("", self.status)
        self.dataset = None
        self._checked = ("", "")
        self._fit_text = ""
        self._task = None

    def initializePage(self) -> None:
        self.goals.set_goal(goal_for_mode(self.w.cfg.train.mode))
        ds = self.w.state.dataset
        if ds is not None:
            self.path.setText(ds.path)
            self.format.blockSignals(True)
            self.format.setCurrentText(ds.format)
            self.format.blockSignals(False)
            self._accept(ds, ds.format)
        elif self.w.cfg.data.path:
            self.path.setText(self.w.cfg.data.path)
            self.check()

    def browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Training data", "", FILE_FILTER)
        if path:
            self.path.setText(path)
            self.check()

    def check(self, force: bool = False) -> None:
        path, fmt = self.path.text().strip(), self.format.currentText()
        if not path or (not force and (path, fmt) == self._checked and self.dataset is not None):
            return
        self.dataset = None
        self.completeChanged.emit()
        if not Path(path).is_file():
            _status(self.status, f"{path} does not exist.", "error")
            return
        _status(self.status, "Checking every record…")
        if self._task is not None:
            self._task.cancel()
        self._task = run_task(
            self, load_file, path, fmt, None, on_done=self._loaded, on_error=self._failed
        )
        self._pending = (path, fmt)

    def _loaded(self, ds) -> None:
        self._task = None
        self._accept(ds, self._pending[1])
        self.w.state.set_dataset(ds)

    def _accept(self, ds, fmt: str) -> None:
        self.dataset = ds
        self._checked = (ds.path, fmt)
        text = f"Format {ds.format}: {ds.kept:,} records ready"
        if ds.skipped:
            first = ", ".join(str(p.line) for p in ds.problems[:5])
            text += f"; {ds.skipped:,} skipped (lines {first}{'…' if ds.skipped > 5 else ''}; see the Data page)"
        self._fit_text = text
        self._show_fit()

    def _goal_changed(self, _goal) -> None:
        if self.dataset is not None:
            self._show_fit()

    def _show_fit(self) -> None:
        """The records' count, or why the file does not suit the goal chosen above."""
        why = misfit(self.goals.goal(), self.dataset)
        if why:
            _status(self.status, f"{self._fit_text}. {why}", "error")
        else:
            _status(self.status, self._fit_text, "ok")
        self.completeChanged.emit()

    def _failed(self, error) -> None:
        self._task = None
        text = str(error)
        if isinstance(error, NeedsColumns):
            text = (
                f"Studio cannot tell which column of {Path(self._pending[0]).name} is the "
                "instruction and which the answer. Import it on the Data page, choose the "
                f"columns there, then come back. ({error})"
            )
        _status(self.status, text, "error")

    def isComplete(self) -> bool:
        return (
            self.dataset is not None
            and self._checked[0] == self.path.text().strip()
            and not misfit(self.goals.goal(), self.dataset)
        )

    def validatePage(self) -> bool:
        if not self.isComplete():
            return False
        try:
            # The format the import found (or was told) and its column mapping: training
            # reads the file exactly as it was checked here.
            data = dataclasses.replace(
                self.w.cfg.data,
                path=self.dataset.path,
                format=self.dataset.format,
                columns=dict(self.dataset.columns) if self.dataset.columns else None,
            )
        except ConfigError as e:
            _status(self.status, e.message, "error")
            return False
        self.w.cfg = dataclasses.replace(self.w.cfg, data=data)
        if self.goals.goal() is not DISTILL:  # distillation's mode comes with its teacher
            self.w.cfg = with_goal(self.w.cfg, self.goals.goal())
        return True


class ModelStep(QWizardPage):
    def __init__(self, wizard: NewRunWizard):
        super().__init__()
        self.w = wizard
        self.setTitle("2. Model")  # the subtitle depends on the goal (_show_teacher)
        self.source = QLineEdit()
        self.source.setPlaceholderText(
            "A model folder or a hub id such as Qwen/Qwen2.5-0.5B-Instruct"
        )
        self.source.editingFinished.connect(self.check)
        browse = QPushButton("Folder…")
        browse.clicked.connect(self.browse)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.source, 1)
        row.addWidget(browse)
        self.teacher = TeacherPicker()
        self.teacher.checked.connect(self.completeChanged)
        self.form = form = QFormLayout(self)
        self.model_label = QLabel("Model")
        form.addRow(self.model_label, row)
        form.addRow("", self.status)
        form.addRow(self.teacher)
        self.info = None
        self._task = None

    def initializePage(self) -> None:
        self._show_teacher()
        info = self.w.state.model_info
        if info is not None:
            self.source.setText(info.source)
            self._accept(info)
        elif self.w.cfg.model.path:
            self.source.setText(self.w.cfg.model.path)
            self.check()

    def _show_teacher(self) -> None:
        """Distillation: the model chosen here is the student, and a teacher is chosen too."""
        distill = self.w.goal() is DISTILL
        self.form.setRowVisible(self.teacher, distill)
        self.model_label.setText("Student" if distill else "Model")
        self.setSubTitle(
            "The student to fine-tune and the bigger teacher it learns from: local folders or "
            "Hugging Face hub ids already downloaded."
            if distill
            else "The model to fine-tune: a local folder or a Hugging Face hub id already downloaded."
        )
        if distill and not self.teacher.source() and self.w.cfg.distill.teacher:
            self.teacher.model_edit.setText(self.w.cfg.distill.teacher)
            self.teacher.quant_box.setCurrentText(self.w.cfg.distill.teacher_quant)
            self.teacher.check()

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Model folder (with config.json)")
        if folder:
            self.source.setText(folder)
            self.check()

    def check(self) -> None:
        source = self.source.text().strip()
        if not source or (self.info is not None and self.info.source == source):
            return
        self.info = None
        self.completeChanged.emit()
        _status(self.status, "Reading the model's config (no weights are loaded)…")
        if self._task is not None:
            self._task.cancel()
        self._task = run_task(
            self, model_info.read_model_info, source, on_done=self._loaded, on_error=self._failed
        )

    def _loaded(self, info) -> None:
        self._task = None
        self._accept(info)
        self.w.state.set_model(info)

    def _accept(self, info) -> None:
        self.info = info
        self.teacher.student = info
        self.teacher.describe()
        template = (
            "has a chat template"
            if info.chat_template
            else "no chat template of its own (ChatML will be used unless you pick another under Advanced)"
        )
        _status(
            self.status,
            f"{info.architecture}: {info.num_params / 1e6:,.1f} M parameters, "
            f"context {info.context_length:,} tokens, {template}.\n"
            f"LoRA can adapt: {', '.join(info.target_modules) or 'no linear layers found'}."
            + "".join(f"\n{note}" for note in info.notes),
            "ok",
        )
        self.completeChanged.emit()

    def _failed(self, error) -> None:
        self._task = None
        _status(self.status, str(error), "error")

    def isComplete(self) -> bool:
        chosen = self.info is not None and self.info.source == self.source.text().strip()
        return chosen and (self.w.goal() is not DISTILL or self.teacher.is_ready())

    def validatePage(self) -> bool:
        if not self.isComplete():
            return False
        data = self.w.cfg.data
        if not self.info.chat_template and data.template == "auto" and data.format != "text":
            # No template of its own: say which one is used (the run.yaml and the command
            # carry it; Advanced can change it) rather than fail when training starts.
            data = dataclasses.replace(data, template="chatml")
        self.w.cfg = dataclasses.replace(
            self.w.cfg,
            model=dataclasses.replace(self.w.cfg.model, path=self.info.source),
            data=data,
        )
        if self.w.goal() is DISTILL:
            self.w.cfg = with_goal(
                self.w.cfg, DISTILL, self.teacher.source(), self.teacher.quant_box.currentText()
            )
        return True


class ReviewStep(QWizardPage):
    def __init__(self, wizard: NewRunWizard):
        super().__init__()
        self.w = wizard
        self.setTitle("4. Review")
        self.setSubTitle("Check what will run. The same run from a terminal is the command below.")
        self.setCommitPage(True)
        self.setButtonText(QWizard.WizardButton.CommitButton, "Start training")
        self.project = QLineEdit()
        self.run_name = QLineEdit()
        self.command = QPlainTextEdit()
        self.command.setReadOnly(True)
        self.command.setFont(theme.mono_font())
        self.command.setMaximumHeight(90)
        self.gpus = QSpinBox()
        self.gpus.setToolTip(
            "Train on several GPUs of this machine: one process a GPU (torchrun), each taking "
            "its share of every batch. The batch size is per GPU."
        )
        self.gpus.valueChanged.connect(self._gpus_changed)
        self.memory = MemoryView()
        self.time = QLabel("")
        self.time.setWordWrap(True)
        self.time.setAlignment(Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
        self._timing = None
        self.error = QLabel("")
        self.error.setWordWrap(True)
        form = QFormLayout(self)
        form.addRow("Project", self.project)
        form.addRow("Run name", self.run_name)
        form.addRow("GPUs", self.gpus)
        form.addRow("Command", self.command)
        form.addRow("Memory", self.memory)
        self.gpus_row = form
        form.addRow("Time", self.time)
        form.addRow("", self.error)
        form.setLabelAlignment(Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignTop)

    def initializePage(self) -> None:
        project = self.w.state.project
        if project is not None:
            self.project.setText(project.name)
            self.project.setEnabled(False)
            self.project.setToolTip(str(project.folder))
        else:
            self.project.setText(Path(self.w.cfg.data.path).stem or "My project")
        self.run_name.setText(f"run-{_stamp()}")
        many = self.w.state.gpus > 1
        self.gpus_row.setRowVisible(self.gpus, many)
        if many:
            self.gpus.blockSignals(True)
            self.gpus.setRange(1, self.w.state.gpus)
            self.gpus.setValue(min(self.w.cfg.train.processes, self.w.state.gpus))
            self.gpus.blockSignals(False)
        self.command.setPlainText(command_line(self.w.cfg, "RUN/run.yaml"))
        info = self.w.state.model_info
        if info is not None:
            self.memory.show_estimate(info, self.w.cfg, self.w.state, self.w.teacher_info())
        self._estimate_time()

    def _gpus_changed(self, n: int) -> None:
        cfg = self.w.cfg
        model = dataclasses.replace(cfg.model, device="cuda" if n > 1 else cfg.model.device)
        train = dataclasses.replace(cfg.train, processes=n)
        self.w.cfg = dataclasses.replace(cfg, model=model, train=train)
        self.command.setPlainText(command_line(self.w.cfg, "RUN/run.yaml"))

    def _estimate_time(self) -> None:
        """The run's length in steps now, and in time once one step has been timed."""
        data, model = self.w.sizes or presets.TYPICAL
        steps, _ = step_timing.planned_steps(self.w.cfg, data)
        self._cancel_timing()
        device = self.w.cfg.model.device
        if device == "auto":
            device = "cuda" if self.w.state.on_gpu else "cpu"
        if not step_timing.cheap_to_measure(model, device):
            self.time.setText(step_timing.RunEstimate(steps, 0).describe())
            return
        self.time.setText(f"{steps:,} steps. Timing one step of this model on this machine…")
        self._timing = run_task(
            self, step_timing.estimate_run, self.w.cfg, data, model,
            on_done=self._timed, on_error=self._not_timed, on_progress=self._timing_progress,
        )  # fmt: skip

    def _timing_progress(self, _done, _total) -> None:
        pass  # given so that the measurement can be cancelled between its steps

    def _timed(self, estimate) -> None:
        self._timing = None
        self.time.setText(estimate.describe())

    def _not_timed(self, error) -> None:
        self._timing = None
        steps, _ = step_timing.planned_steps(self.w.cfg, (self.w.sizes or presets.TYPICAL)[0])
        self.time.setText(
            f"{steps:,} steps. Could not time a step ahead ({str(error).splitlines()[0]}); "
            "the Train page shows the time left once the first steps are done."
        )

    def _cancel_timing(self) -> None:
        # The measurement checks for this between its steps, so it ends within one step
        # rather than compete with the training process for the machine.
        if self._timing is not None:
            self._timing.cancel()
            self._timing = None

    def cleanupPage(self) -> None:
        self._cancel_timing()
        super().cleanupPage()

    def validatePage(self) -> bool:
        self._cancel_timing()
        try:
            self.w.start(self.project.text().strip(), self.run_name.text().strip())
        except (StudioError, OSError) as e:
            _status(self.error, f"Could not start training: {e}", "error")
            return False
        return True


class TrainStep(QWizardPage):
    def __init__(self, wizard: NewRunWizard):
        super().__init__()
        self.w = wizard
        self.setTitle("5. Train")
        self.label = QLabel("")
        self.label.setWordWrap(True)
        QVBoxLayout(self).addWidget(self.label)

    def initializePage(self) -> None:
        run = self.w.run
        self.setSubTitle("Training has started.")
        self.label.setText(
            f"Started: {run.run_dir.name} (process {run.process.pid}).\n\n"
            f"The run folder is {run.run_dir}; it holds run.yaml, events.jsonl, checkpoints/ and, at "
            "the end, adapter/. Close this window to follow the run on the Train page."
        )


def _stamp() -> str:
    import time

    return time.strftime("%Y%m%d-%H%M%S")


class NewRunWizard(QWizard):
    run_started = Signal(object)
    """Emitted with the run_launcher.LaunchedRun once the child process is running."""

    def __init__(self, state, parent=None, running=lambda: ""):
        super().__init__(parent)
        self.state = state
        self.running = running
        """Returns the name of the run training now ("" when none): one run at a time."""
        self.setWindowTitle("New fine-tune")
        self.setWizardStyle(QWizard.WizardStyle.ModernStyle)
        self.setOption(QWizard.WizardOption.NoBackButtonOnLastPage, True)
        self.setOption(QWizard.WizardOption.NoCancelButtonOnLastPage, True)
        self.resize(820, 640)
        self.cfg: RunConfig = state.config
        self.sizes = None
        """(DataStats, ModelStats) of the chosen data and model, once measured."""
        self.sizes_key = ("", "")
        self.run = None
        self.steps = [
            DataStep(self),
            ModelStep(self),
            SettingsStep(self),
            ReviewStep(self),
            TrainStep(self),
        ]
        for step in self.steps:
            self.addPage(step)

    def teacher_info(self):
        """A distillation's teacher as read on the Model step (None otherwise)."""
        return self.steps[1].teacher.info if self.cfg.train.mode == "distill" else None

    def goal(self):
        """The goals.Goal chosen on the Data step."""
        return self.steps[0].goals.goal()

    def start(self, project_name: str, run_name: str) -> None:
        """Create the project if needed, write RUN/run.yaml and start the training process."""
        busy = self.running()
        if busy:
            raise StudioError(
                f"{busy} is still training, and one run at a time shares this device. "
                "Stop it on the Train page, or wait for it to end, then start this one."
            )
        project = self.state.project
        if project is None:
            project = create_project(project_name or "My project")
            self.state.set_project(project)
        run_dir = project.runs_dir / (run_name or f"run-{_stamp()}")
        if run_dir.exists():
            raise StudioError(
                f"A run named {run_dir.name} already exists in this project; choose another name."
            )
        project.remember(self.cfg)
        self.run = run_launcher.launch_run(self.cfg, run_dir)
        self.state.update_config(
            **{f.name: getattr(self.cfg, f.name) for f in dataclasses.fields(self.cfg)}
        )
        self.run_started.emit(self.run)
