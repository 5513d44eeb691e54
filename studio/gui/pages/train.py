"""The Train page: a run's live loss curves, progress, log, Stop / Resume / Re-run, what went
wrong when it failed, and the history of the project's runs.

The run trains in a child process (run_launcher); a RunWorker thread follows its files and
process and sends what it read here as signals. This page only draws: the plots redraw from
a 10 Hz timer, and only when new points came.
"""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QCoreApplication, Qt, QTimer, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFrame,
    QHBoxLayout,
    QLabel,
    QMessageBox,
    QPlainTextEdit,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTabWidget,
    QVBoxLayout,
    QWidget,
)

from studio.core import runs
from studio.core.config import RunConfig
from studio.core.errors import StudioError
from studio.core.step_timing import in_words
from studio.gui import run_launcher, theme, workers
from studio.gui.after_run_view import AfterRunView
from studio.gui.download_view import show_download
from studio.gui.run_history import RunHistory
from studio.gui.run_settings import RunSettingsDialog
from studio.gui.run_worker import MetricRows, RunWorker

LOG_LINES = 5000


def hms(seconds: float) -> str:
    s = int(max(0, seconds))
    return f"{s // 3600:d}:{s % 3600 // 60:02d}:{s % 60:02d}"


class FailurePanel(QFrame):
    """What happened, in plain words, what to try, and the last lines of the log."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        red = theme.error_color().name()
        self.setStyleSheet(f"FailurePanel {{ border: 1px solid {red}; border-radius: 4px; }}")
        self.title = QLabel()
        self.title.setStyleSheet(f"color: {red}; font-weight: bold; font-size: 13pt")
        self.text = QLabel()
        self.text.setWordWrap(True)
        self.text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text.setMinimumWidth(380)
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setFont(theme.mono_font())
        self.log.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.log.setToolTip("The last lines of train.log")
        words = QVBoxLayout()
        words.addWidget(self.title)
        words.addWidget(self.text)
        words.addStretch(1)
        layout = QHBoxLayout(self)
        layout.addLayout(words, 1)
        layout.addWidget(self.log, 1)
        self.setMaximumHeight(230)

    def show_failure(self, state: runs.RunState) -> None:
        headline, advice = runs.failure_advice(state)
        self.title.setText(headline)
        if state.checkpoints:
            keep = (
                f"The checkpoint at step {state.checkpoints[-1]} is kept: Resume continues from it."
            )
        else:
            keep = "No checkpoint was written before this; Re-run starts over."
        tips = "".join(f"<li>{t}</li>" for t in advice)
        message = (state.message or "").replace("&", "&amp;").replace("<", "&lt;")
        self.text.setText(f"{message}<br>{keep}<br><b>What to try:</b><ul>{tips}</ul>")
        self.log.setPlainText(runs.log_tail(state.folder, 30) or "(train.log is empty)")
        self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())
        self.show()


class TrainPage(QWidget):
    run_ended = Signal(object)
    """A runs.RunState, when a run watched live ends (for the window's notification)."""
    chat_requested = Signal(object)
    """A run folder, to open on the Chat page ("Chat with it")."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.run = None  # the run_launcher.LaunchedRun supervised now, if any
        self.run_dir: Path | None = None  # the run shown
        self.worker: RunWorker | None = None
        self.run_state: runs.RunState | None = None
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(100)
        self.timer.timeout.connect(self._redraw)
        state.project_changed.connect(self._project_changed)
        self._update_buttons()

    def _build(self) -> None:
        heading = QLabel("Train")
        heading.setFont(theme.title_font())
        self.title = QLabel("")
        self.title.setStyleSheet("font-weight: bold")
        self.status = QLabel("No run yet. Use New fine-tune (Ctrl+N) or New run… to start one.")
        self.status.setWordWrap(True)
        self.status.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.new_button = QPushButton("New run…")
        self.new_button.setToolTip("Start a run with this project's settings (editable)")
        self.new_button.clicked.connect(self.new_run)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setToolTip("Save a checkpoint and the adapter, then stop")
        self.stop_button.clicked.connect(self.stop)
        self.checkpoint_box = QComboBox()
        self.checkpoint_box.setToolTip("The checkpoint Resume continues from")
        self.resume_button = QPushButton("Resume")
        self.resume_button.clicked.connect(self.resume)
        self.rerun_button = QPushButton("Re-run with edited settings…")
        self.rerun_button.clicked.connect(self.rerun)
        top = QHBoxLayout()
        top.addWidget(heading)
        top.addSpacing(16)
        top.addWidget(self.title)
        top.addStretch(1)
        for w in (
            self.new_button,
            self.stop_button,
            self.checkpoint_box,
            self.resume_button,
            self.rerun_button,
        ):
            top.addWidget(w)
        self.progress = QProgressBar()
        self.progress.setFormat("step %v of %m")
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_text = QLabel("")
        self.progress_text.setFont(theme.mono_font())
        progress_row = QHBoxLayout()
        progress_row.addWidget(self.progress, 1)
        progress_row.addWidget(self.progress_text)
        self.details = QLabel("")  # processes and parameter groups, when the run has them
        self.details.setWordWrap(True)
        self.details.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.details.hide()
        self._details: dict[str, str] = {}
        self.failure = FailurePanel()
        self.failure.hide()
        self._plots = None  # plots.TrainingPlots, made on first use (pyqtgraph loads slowly)
        self._replaying = False
        self.console = QPlainTextEdit()
        self.console.setReadOnly(True)
        self.console.setFont(theme.mono_font())
        self.console.setMaximumBlockCount(LOG_LINES)
        self.console.setLineWrapMode(QPlainTextEdit.LineWrapMode.NoWrap)
        self.console.setPlaceholderText("The training output (train.log) appears here.")
        self.after_run = AfterRunView()  # the finished state: base vs tuned answers
        self.after_run.hide()
        self.after_run.chat_requested.connect(self.chat_requested)
        self.after_run.compared.connect(self._compared)
        self.monitor_split = monitor_split = QSplitter(Qt.Orientation.Vertical)
        monitor_split.addWidget(QWidget())
        monitor_split.addWidget(self.after_run)
        monitor_split.addWidget(self.console)
        monitor_split.setSizes([480, 0, 140])
        self.history = RunHistory()
        self.history.open_requested.connect(self.open_run_folder)
        self.tabs = QTabWidget()
        self.tabs.addTab(monitor_split, "Monitor")
        self.tabs.addTab(self.history, "History")
        self.tabs.currentChanged.connect(lambda i: i == 1 and self.history.refresh())
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.status)
        layout.addLayout(progress_row)
        layout.addWidget(self.details)
        layout.addWidget(self.failure)
        layout.addWidget(self.tabs, 1)

    @property
    def plots(self):
        """The live plots (plots.TrainingPlots), made the first time they are needed."""
        if self._plots is None:
            from studio.gui.plots import TrainingPlots

            self._plots = TrainingPlots()
            self.monitor_split.replaceWidget(0, self._plots)
            self.monitor_split.setSizes([480, 0, 140])
        return self._plots

    def _redraw(self) -> None:
        # Not while the worker replays a long events.jsonl: painting then would compete with
        # it for the GIL; the curve is drawn once it has caught up.
        if self._plots is not None and not self._replaying:
            self._plots.redraw()

    def _caught_up(self) -> None:
        if self._stale_signal():
            return
        self._replaying = False
        self._redraw()

    def showEvent(self, event) -> None:
        self.plots  # noqa: B018 - empty axes rather than a blank area
        super().showEvent(event)

    # --- showing a run ------------------------------------------------------------------------

    def show_run(self, run) -> None:
        """Follow a run that was just started (a run_launcher.LaunchedRun)."""
        self._watch(Path(run.run_dir), run)

    def open_run_folder(self, folder) -> None:
        """Show a run: re-attach when its process still goes, else replay its events."""
        folder = Path(folder)
        if self.is_running():
            if folder == self.run_dir:
                self.tabs.setCurrentIndex(0)
                return
            QMessageBox.information(
                self, "A run is going", "Stop the current run before opening another one."
            )
            return
        self._watch(folder, run_launcher.attach_run(folder))

    def _watch(self, run_dir: Path, run) -> None:
        self._end_worker(detach=True)
        self.run, self.run_dir = run, run_dir
        self.run_state = runs.RunState(folder=run_dir)
        self.plots.clear()
        self.console.clear()
        self.failure.hide()
        self._details = {}
        self.details.hide()
        self.after_run.reset()
        self.after_run.hide()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress_text.setText("")
        self.title.setText(run_dir.name)
        self.tabs.setCurrentIndex(0)
        if run is not None:
            self.status.setText("Starting: loading the model and the data…")
            self.state.set_job(f"Training {run_dir.name}")
        else:
            self.status.setText("Reading the run…")
        workers.collect_garbage_in_gui_thread()
        self.worker = RunWorker(run_dir, run)
        self._replaying = True
        self.worker.events_read.connect(self._events_read)
        self.worker.caught_up.connect(self._caught_up)
        self.worker.log_read.connect(self._log_read)
        self.worker.ended.connect(self._ended)
        # Started after the page has repainted: a paint while the worker parses a long
        # events.jsonl would fight it for the GIL.
        QTimer.singleShot(60, self._start_worker)
        self.timer.start()
        self._update_buttons()

    def _stale_signal(self) -> bool:
        """A signal queued by a worker this page has since let go (another run is shown)."""
        sender = self.sender()
        return sender is not None and sender is not self.worker

    def _start_worker(self) -> None:
        worker = self.worker
        if worker is not None and not worker.isRunning() and not worker.isFinished():
            worker.start()

    def _events_read(self, items: list) -> None:
        if self._stale_signal():
            return
        s = self.run_state
        last_step = download = None
        for item in items:
            if isinstance(item, MetricRows):  # the mode's figures of the steps just before
                self.plots.add_metrics(item.rows)
                continue
            if not isinstance(item, dict):  # a numpy block of step rows
                self.plots.add_steps(item)
                last_step = item[-1]
                s.step, s.final_loss = int(last_step[0]), float(last_step[2])
                continue
            s.apply(item)
            kind = item.get("type")
            if kind == "start":
                self.plots.start_at(s.start_step)
                self.progress.setRange(0, max(1, s.total_steps))
            elif kind == "eval":
                self.plots.add_eval(
                    int(item["step"]), float(item["eval_loss"]), item.get("metrics")
                )
            elif kind == "checkpoint":
                self.plots.add_checkpoint(int(item["step"]))
            elif kind == "log":
                self._note_detail(str(item.get("message", "")))
            elif kind == "progress" and str(item.get("stage")).startswith("download "):
                download = item  # a hub model being downloaded before training starts
        if download is not None and not s.total_steps:
            show_download(self.progress, self.progress_text, download)
            if not self._replaying:
                self.status.setText("Downloading the model before training…")
            return
        self.progress.setValue(min(s.step, self.progress.maximum()))
        if last_step is not None:
            _, epoch, loss, _lr, _gn, tps, elapsed, eta = last_step.tolist()
            mode = self.plots.mode_summary()  # a preference run's margin, a distillation's KL
            mode = f"{mode} · " if mode else ""
            self.progress_text.setText(
                f"loss {loss:.4f} · {mode}{tps:,.0f} tok/s · epoch {epoch:.2f} · "
                f"elapsed {hms(elapsed)} · ETA {hms(eta)}"
            )
        total = f" of {s.total_steps}" if s.total_steps else ""
        if self.run is not None and s.status == "running":
            left = f" About {in_words(last_step[-1])} left." if last_step is not None else ""
            self.status.setText(f"Training: step {s.step}{total}.{left}")
            self.state.set_job(f"Training {s.name}: step {s.step}{total}")
        elif s.status == "running" and not self._replaying:
            self.status.setText(f"Following a run started outside the app: step {s.step}{total}.")
        if self._replaying:
            self.status.setText(f"Reading the run: step {s.step}{total}…")

    DETAILS = ("training processes", "parameter groups")

    def _note_detail(self, message: str) -> None:
        """Keep the latest line on processes and on parameter groups under the progress bar."""
        kind = next((k for k in self.DETAILS if k in message.split(":")[0]), None)
        if kind is None:
            return
        self._details[kind] = message
        self.details.setText(
            "\n".join(self._details[k] for k in self.DETAILS if k in self._details)
        )
        self.details.show()

    def _log_read(self, text: str) -> None:
        if self._stale_signal():
            return
        bar = self.console.verticalScrollBar()
        at_end = bar.value() >= bar.maximum() - 2
        self.console.appendPlainText(text.rstrip("\n"))
        if at_end:
            bar.setValue(bar.maximum())

    def _ended(self, state: runs.RunState) -> None:
        if self._stale_signal():
            return
        live = self.run is not None
        self._end_worker(detach=False)
        self._replaying = False
        self.run_state = state
        self.run = None
        self.plots.redraw()
        self.timer.stop()
        if state.total_steps:
            self.progress.setRange(0, state.total_steps)
            self.progress.setValue(min(state.step, state.total_steps))
        self.status.setText(self._summary(state))
        self.progress_text.setText(self.progress_text.text().split(" · ETA")[0])
        if state.status == "failed":
            self.failure.show_failure(state)
        else:
            self.failure.hide()
        self.after_run.show_run(state.folder, state.status, live)
        if not self.after_run.isHidden():  # (isVisible is False while another page shows)
            # Room for the answers with the curves still readable: the log folds away (its
            # handle drags it back; train.log keeps it all).
            self.monitor_split.setSizes([330, 360, 0])
        if self.after_run.comparison is not None:
            self._compared(self.after_run.comparison)
        if live:
            self.state.set_job("")
            self.run_ended.emit(state)
            self.history.refresh()
        self._update_buttons()

    def _compared(self, comparison) -> None:
        """The run's summary says whether the model learned to end its answers."""
        if self.run_state is not None and not self.is_running():
            self.status.setText(f"{self._summary(self.run_state)} {comparison.short()}")

    def _summary(self, s: runs.RunState) -> str:
        losses = f"final loss {s.final_loss:.4f}" if s.final_loss is not None else ""
        if s.eval_loss is not None:
            losses += f", eval loss {s.eval_loss:.4f}"
        if s.status == "completed":
            return f"Completed: {s.step} steps, {losses}. The adapter is in {s.folder / 'adapter'}."
        if s.status == "stopped":
            where = (
                f"Resume continues from step {s.checkpoints[-1]}."
                if s.checkpoints
                else "There is no checkpoint to resume from."
            )
            return f"Stopped at step {s.step}. {s.message or ''} {where}".replace("  ", " ")
        if s.status == "failed":
            code = f" (exit code {s.returncode})" if s.returncode is not None else ""
            return f"Failed at step {s.step}{code}: {runs.failure_advice(s)[0].lower()}."
        if s.status == "running":
            return f"Running elsewhere (step {s.step} of {s.total_steps})."
        return "This run has not started."

    def _end_worker(self, detach: bool) -> None:
        worker, self.worker = self.worker, None
        if worker is None:
            return
        if detach:
            worker.detach()
        worker.wait()
        worker.deleteLater()

    # --- actions ------------------------------------------------------------------------------

    def is_running(self) -> bool:
        return self.worker is not None and self.run is not None

    def running_name(self) -> str:
        """The run training now under this page's watch, or ""."""
        return self.run_dir.name if self.is_running() and self.run_dir is not None else ""

    def stop(self) -> None:
        if not self.is_running():
            return
        if self.worker.stop_requested:
            self.worker.force_stop()
            self.status.setText("Ending the training process now…")
            return
        self.worker.request_stop()
        self.status.setText(
            "Stopping: saving a checkpoint and the adapter… (Stop again to end it at once)"
        )
        self.stop_button.setText("Force stop")

    def resume(self) -> None:
        if self.run_dir is None or self.is_running() or not self.checkpoint_box.count():
            return
        step = self.checkpoint_box.currentData()
        latest = self.run_state.checkpoints[-1] if self.run_state.checkpoints else None
        if step is not None and latest is not None and step < latest:
            newer = [s for s in self.run_state.checkpoints if s > step]
            text = (
                f"Resume from step {step}? The newer checkpoints (steps "
                f"{', '.join(map(str, newer))}) will be moved to {runs.SET_ASIDE}/ in the run "
                "folder (not deleted), and the curve after step "
                f"{step} will be replaced by the new training."
            )
            if not self.confirm("Resume from an older checkpoint", text):
                return
            runs.set_aside_after(self.run_dir, step)
        self.show_run(run_launcher.resume_run(self.run_dir))

    def confirm(self, title: str, text: str) -> bool:
        answer = QMessageBox.question(self, title, text)
        return answer == QMessageBox.StandardButton.Yes

    def new_run(self) -> None:
        project = self.state.project
        if project is None:
            QMessageBox.information(
                self, "No project", "Open a project first, or use New fine-tune (Ctrl+N)."
            )
            return
        name = f"run-{time.strftime('%Y%m%d-%H%M%S')}"
        self._start_from_dialog(self.state.config, project.runs_dir, name, "New run")

    def rerun(self) -> None:
        if self.run_dir is None:
            return
        try:
            cfg = RunConfig.load(self.run_dir / "run.yaml")
        except (StudioError, OSError) as e:
            self.tell("Cannot re-run", f"{self.run_dir / 'run.yaml'}: {e}")
            return
        name, n = f"{self.run_dir.name}-rerun", 1
        while (self.run_dir.parent / name).exists():
            n += 1
            name = f"{self.run_dir.name}-rerun{n}"
        self._start_from_dialog(cfg, self.run_dir.parent, name, "Re-run with edited settings")

    def _start_from_dialog(self, cfg: RunConfig, runs_dir: Path, name: str, title: str) -> None:
        dialog = RunSettingsDialog(cfg, runs_dir, name, title, self)
        self.settings_dialog = dialog  # tests fill it in
        accepted = dialog.exec()
        self.settings_dialog = None
        if accepted and dialog.cfg is not None:
            self.start_run(dialog.cfg, dialog.run_dir())

    def start_run(self, cfg: RunConfig, run_dir: Path) -> None:
        project = self.state.project
        try:
            if project is not None and Path(run_dir).parent == project.runs_dir:
                project.remember(cfg)
            run = run_launcher.launch_run(cfg, run_dir)
        except (StudioError, OSError) as e:
            self.tell("Cannot start the run", str(e))
            return
        self.show_run(run)
        self.history.refresh()

    def tell(self, title: str, text: str) -> None:
        """A message the user must see (a box; tests replace it)."""
        QMessageBox.warning(self, title, text)

    def _update_buttons(self) -> None:
        running = self.is_running()
        s = self.run_state
        self.stop_button.setEnabled(running)
        if not running:
            self.stop_button.setText("Stop")
        self.new_button.setEnabled(not running)
        shown = self.run_dir is not None and not running and self.worker is None
        self.rerun_button.setEnabled(shown and (self.run_dir / "run.yaml").is_file())
        self.checkpoint_box.clear()
        can_resume = shown and s is not None and s.status in ("stopped", "failed")
        if can_resume:
            for i, step in enumerate(reversed(s.checkpoints)):
                self.checkpoint_box.addItem(f"step {step}" + (" (latest)" if i == 0 else ""), step)
        self.resume_button.setEnabled(can_resume and bool(s.checkpoints))
        self.checkpoint_box.setEnabled(self.checkpoint_box.count() > 1)
        self.checkpoint_box.setVisible(self.checkpoint_box.count() > 0)

    # --- project ------------------------------------------------------------------------------

    def _project_changed(self, project) -> None:
        self.history.set_runs_dir(project.runs_dir if project is not None else None)
        if project is None or self.is_running():
            return
        folders = runs.run_folders(project.runs_dir)
        going = [f for f in folders if runs.process_alive(f) is not None]
        if going:
            self.open_run_folder(max(going, key=runs.last_touched))
        elif folders:
            self.open_run_folder(max(folders, key=runs.last_touched))

    def shutdown(self, stop_run: bool = False) -> None:
        """Stop the timer and the worker. With stop_run, stop the run gracefully first (the
        worker kills it after its timeout); otherwise the training process keeps going."""
        if stop_run and self.is_running():
            worker = self.worker
            worker.request_stop()
            while worker.isRunning():
                worker.wait(50)
                QCoreApplication.processEvents()
            QCoreApplication.processEvents()  # delivers `ended` (queued from the worker)
        self._end_worker(detach=True)
        self.after_run.shutdown()
        self.timer.stop()
