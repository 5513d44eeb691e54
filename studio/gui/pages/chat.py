"""The Chat page: talk to a base model or a run's adapter, or compare two side by side.

Pick a base model and (optionally) a run's final adapter or one of its checkpoints; loading
and generation run on worker threads (studio.gui.chat_worker through the workers bridge) and
the text streams in through queued signals. Stop ends the answer within a token and keeps
what was written. Compare answers each prompt with model A, then model B, each pane keeping
its own conversation. This page only draws; it never imports torch.
"""

from __future__ import annotations

import threading
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QGuiApplication, QKeySequence, QShortcut, QTextCursor
from PySide6.QtWidgets import (
    QCheckBox,
    QDoubleSpinBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from studio.gui import chat_worker, theme, workers
from studio.gui.chat_suggestions import EndOfTurnHint, SuggestionBar
from studio.gui.model_picker import ModelPicker


class ChatPane(QWidget):
    """One conversation: the transcript, a Copy button and the speed of the last answer."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.title = QLabel("")
        self.title.setStyleSheet("font-weight: bold")
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the last answer")
        self.transcript = QTextEdit()
        self.transcript.setReadOnly(True)
        self.transcript.setPlaceholderText("The conversation appears here.")
        self.stats = QLabel("")
        self.stats.setStyleSheet(f"color: {theme.muted_color().name()}")
        head = QHBoxLayout()
        head.addWidget(self.title, 1)
        head.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(head)
        layout.addWidget(self.transcript, 1)
        layout.addWidget(self.stats)

    def render(self, messages: list[dict]) -> None:
        self.transcript.clear()
        for m in messages:
            self._header(m["role"])
            self._insert(m["content"])

    def begin_answer(self) -> None:
        self._header("assistant")

    def append(self, text: str) -> None:
        self._insert(text)
        bar = self.transcript.verticalScrollBar()
        bar.setValue(bar.maximum())

    def _header(self, role: str) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        gap = "<br>" if not self.transcript.document().isEmpty() else ""
        cursor.insertHtml(f"{gap}<b>{'You' if role == 'user' else 'Assistant'}</b><br>")

    def _insert(self, text: str) -> None:
        cursor = self.transcript.textCursor()
        cursor.movePosition(QTextCursor.MoveOperation.End)
        cursor.insertText(text)  # plain text: a model's answer is never interpreted as HTML


class ChatPage(QWidget):
    model_loaded = Signal(int)
    answer_finished = Signal(int, dict)
    """(slot, stats) when an answer ends (completed, limit reached or stopped)."""
    generation_finished = Signal()

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.models: dict[int, object] = {}
        self.loading: dict[int, object] = {}
        self.load_cancels: dict[int, threading.Event] = {}
        self.histories: dict[int, list[dict]] = {0: [], 1: []}
        self.task = None
        self.cancel = None
        self.pending_send = False
        self.pending_text = ""
        self._build()
        state.project_changed.connect(lambda _p: self.refresh_runs())
        state.project_changed.connect(self._suggest_from_project)
        state.config_changed.connect(self._config_changed)
        self._config_changed(state.config)
        self._suggest_from_project(state.project)
        self.refresh_runs()
        self._update_buttons()

    def _build(self) -> None:
        heading = QLabel("Chat")
        heading.setFont(theme.title_font())
        self.compare_box = QCheckBox("Compare two models side by side")
        self.compare_box.toggled.connect(self._compare_toggled)
        top = QHBoxLayout()
        top.addWidget(heading)
        top.addStretch(1)
        top.addWidget(self.compare_box)
        self.pickers = [ModelPicker(0), ModelPicker(1)]
        for p in self.pickers:
            p.load_requested.connect(self.load)
            p.cancel_requested.connect(self.cancel_load)
            p.quality.busy_changed.connect(self._quality_busy)
        self.pickers[1].hide()
        self.system_edit = QLineEdit()
        self.system_edit.setPlaceholderText("System prompt (optional)")
        self.temperature = _spin(
            QDoubleSpinBox(), 0, 2, 0.7, 0.1, "0 always picks the most likely token"
        )
        self.top_p = _spin(
            QDoubleSpinBox(),
            0.01,
            1,
            0.9,
            0.05,
            "sample from the tokens making up this much probability",
        )
        self.top_k = _spin(
            QSpinBox(), 0, 1000, 50, 5, "sample from the k most likely tokens (0: all)"
        )
        self.max_tokens = _spin(QSpinBox(), 1, 32768, 256, 32, "longest answer, in tokens")
        self.repetition = _spin(
            QDoubleSpinBox(), 0.5, 3, 1.0, 0.05, "above 1 discourages repeating"
        )
        self.seed = _spin(QSpinBox(), -1, 2**31 - 1, -1, 1, "fix it to get the same answer again")
        self.seed.setSpecialValueText("random")
        settings = QFormLayout()
        settings.addRow("System", self.system_edit)
        knobs = QHBoxLayout()
        for label, w in (
            ("Temperature", self.temperature),
            ("Top-p", self.top_p),
            ("Top-k", self.top_k),
            ("Max new tokens", self.max_tokens),
            ("Repetition penalty", self.repetition),
            ("Seed", self.seed),
        ):
            knobs.addWidget(QLabel(label))
            knobs.addWidget(w)
        knobs.addStretch(1)
        settings.addRow("Sampling", knobs)
        self.panes = [ChatPane(), ChatPane()]
        for slot, pane in enumerate(self.panes):
            pane.copy_button.clicked.connect(lambda _=False, s=slot: self.copy_answer(s))
        self.panes[1].hide()
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self.panes[0])
        split.addWidget(self.panes[1])
        self.input = QPlainTextEdit()
        self.input.setPlaceholderText("Type a message; Ctrl+Enter sends")
        self.input.setMaximumHeight(90)
        QShortcut(QKeySequence("Ctrl+Return"), self.input, activated=self.send)
        self.send_button = QPushButton("Send")
        self.send_button.clicked.connect(self.send)
        self.stop_button = QPushButton("Stop")
        self.stop_button.clicked.connect(self.stop)
        self.regenerate_button = QPushButton("Regenerate")
        self.regenerate_button.clicked.connect(self.regenerate)
        self.reset_button = QPushButton("New chat")
        self.reset_button.clicked.connect(self.reset)
        buttons = QVBoxLayout()
        for b in (self.send_button, self.stop_button, self.regenerate_button, self.reset_button):
            buttons.addWidget(b)
        bottom = QHBoxLayout()
        bottom.addWidget(self.input, 1)
        bottom.addLayout(buttons)
        self.suggestions = SuggestionBar()
        self.suggestions.chosen.connect(self._use_suggestion)
        self.hint = EndOfTurnHint()
        layout = QVBoxLayout(self)
        layout.addLayout(top)
        layout.addWidget(self.pickers[0])
        layout.addWidget(self.pickers[1])
        layout.addLayout(settings)
        layout.addWidget(split, 1)
        layout.addWidget(self.hint)
        layout.addWidget(self.suggestions)
        layout.addLayout(bottom)

    # --- models ---------------------------------------------------------------------------

    def slots(self) -> list[int]:
        return [0, 1] if self.compare_box.isChecked() else [0]

    def refresh_runs(self) -> None:
        project = self.state.project
        adapters = chat_worker.run_adapters(project.runs_dir if project is not None else None)
        for p in self.pickers:
            p.set_adapters(adapters)

    def _config_changed(self, cfg) -> None:
        for p in self.pickers:
            if not p.model_edit.text() and cfg.model.path:
                p.model_edit.setText(cfg.model.path)

    def load(self, slot: int) -> bool:
        """Start loading the slot's chosen model; False when that cannot start now."""
        if self.loading or self.is_generating():
            return False
        if self.checking():  # a message sent meanwhile loads when the check ends
            self.pickers[slot].show_status("Waiting for the quality check to finish…")
            return False
        choice = self.pickers[slot].choice()
        if not choice.model and not choice.adapter:
            self.pickers[slot].show_status(
                "Choose a base model (or a run's adapter) first.", error=True
            )
            return False
        old = self.models.pop(slot, None)
        if old is not None:
            old.close()
        self.pickers[slot].show_loading(0, 3)
        self.load_cancels[slot] = threading.Event()
        self.loading[slot] = workers.run_task(
            self,
            chat_worker.load_model,
            choice,
            self.models.get(1 - slot) if self.compare_box.isChecked() else None,
            cancel=self.load_cancels[slot],
            on_done=lambda model, s=slot: self._loaded(s, model),
            on_error=lambda e, s=slot: self._load_failed(s, e),
            on_progress=lambda done, total, s=slot: self._load_progress(s, done, total),
        )
        self._update_buttons()
        return True

    def _load_progress(self, slot: int, done, total) -> None:
        if slot in self.loading:  # not a late report of a download cancelled meanwhile
            self.pickers[slot].show_loading(done, total)

    def cancel_load(self, slot: int) -> None:
        """Stop a hub download (within one chunk); the files fetched whole stay cached."""
        task = self.loading.pop(slot, None)
        if task is None:
            return
        self.load_cancels.pop(slot).set()
        task.cancel()  # ends quietly: neither _loaded nor _load_failed is called
        self._give_back_message()
        self.pickers[slot].show_status(
            "Download cancelled. The files fetched whole stay in the cache; Load fetches the rest."
        )
        self._update_buttons()

    def checking(self) -> bool:
        return any(p.quality.busy for p in self.pickers)

    def _quality_busy(self, busy: bool) -> None:
        missing = [s for s in self.slots() if s not in self.models]
        if not busy and self.pending_send and not self.loading and missing:
            if not self.load(missing[0]):
                self._give_back_message()
        self._update_buttons()

    def _loaded(self, slot: int, model) -> None:
        self.loading.pop(slot, None)
        self.load_cancels.pop(slot, None)
        self.models[slot] = model
        self.panes[slot].title.setText(model.name)
        where = f"{model.device}" + (f", {model.quant}" if model.quant != "none" else "")
        other = self.models.get(1 - slot)
        shared = " · one copy of the base weights for both sides" if (
            other is not None and other.shared is model.shared
        ) else ""  # fmt: skip
        self.pickers[slot].show_status(
            f"Ready: {model.name} ({where}, template {model.template.name}){shared}"
        )
        self.model_loaded.emit(slot)
        self._update_buttons()
        if self.pending_send and not self.loading:
            missing = [s for s in self.slots() if s not in self.models]
            if missing:
                if not self.load(missing[0]):
                    self._give_back_message()
                    self._update_buttons()
                return
            self.pending_send = False
            self._start(regenerate=False)

    def _load_failed(self, slot: int, error) -> None:
        self.loading.pop(slot, None)
        self.load_cancels.pop(slot, None)
        self._give_back_message()
        self.pickers[slot].show_status(f"Could not load: {error}", error=True)
        self._update_buttons()

    def _give_back_message(self) -> None:
        """A message waiting for a model that did not load goes back into the input box."""
        if not self.pending_send:
            return
        self.pending_send = False
        for s in self.slots():
            if self.histories[s] and self.histories[s][-1]["role"] == "user":
                self.histories[s].pop()
                self.panes[s].render(self.histories[s])
        self.input.setPlainText(self.pending_text)

    # --- conversation ---------------------------------------------------------------------

    def is_generating(self) -> bool:
        return self.task is not None

    def send(self) -> None:
        text = self.input.toPlainText().strip()
        if not text or self.is_generating() or self.pending_send:
            return
        missing = [s for s in self.slots() if s not in self.models]
        for slot in missing:
            choice = self.pickers[slot].choice()
            if not choice.model and not choice.adapter:
                self.pickers[slot].show_status(
                    "Choose a base model (or a run's adapter) first.", error=True
                )
                return
        for slot in self.slots():
            self.histories[slot].append({"role": "user", "content": text})
            self.panes[slot].render(self.histories[slot])
        self.input.clear()
        if missing:  # load first, then answer (see _loaded)
            self.pending_send = True
            self.pending_text = text
            # One at a time: the second may then share the first's base model weights.
            self.load(missing[0])
            return
        self._start(regenerate=False)

    def regenerate(self) -> None:
        """Answer the last message again (a new sample unless the seed is fixed)."""
        if self.is_generating() or not all(self.histories[s] for s in self.slots()):
            return
        for slot in self.slots():
            if self.histories[slot][-1]["role"] == "assistant":
                self.histories[slot].pop()
            self.panes[slot].render(self.histories[slot])
        self._start(regenerate=True)

    def _start(self, regenerate: bool) -> None:
        from studio.core.errors import StudioError
        from studio.core.generation import CancelToken, GenerationSettings

        try:
            settings = GenerationSettings(
                temperature=self.temperature.value(),
                top_p=self.top_p.value(),
                top_k=self.top_k.value(),
                max_new_tokens=self.max_tokens.value(),
                repetition_penalty=self.repetition.value(),
                seed=None if self.seed.value() < 0 else self.seed.value(),
            )
        except StudioError as e:
            self.panes[0].stats.setText(e.message)
            return
        system = self.system_edit.text().strip()
        head = [{"role": "system", "content": system}] if system else []
        jobs = [
            chat_worker.Job(s, self.models[s], head + list(self.histories[s]), settings)
            for s in self.slots()
        ]
        for slot in self.slots():
            self.panes[slot].begin_answer()
            self.panes[slot].stats.setText("Generating…")
        self.cancel = CancelToken()
        self.task = workers.run_task(
            self,
            chat_worker.generate_answers,
            jobs,
            self.cancel,
            on_done=self._generation_done,
            on_error=self._generation_failed,
            on_progress=self._progress,
        )
        self._update_buttons()

    def _progress(self, slot: int, item) -> None:
        kind, value = item
        if kind == "text":
            self.panes[slot].append(value)
            return
        self.histories[slot].append({"role": "assistant", "content": value["text"]})
        self.panes[slot].stats.setText(chat_worker.describe(value))
        self.hint.record(self.models.get(slot), value)
        self.answer_finished.emit(slot, value)

    def _generation_done(self, _result) -> None:
        self.task = self.cancel = None
        self._update_buttons()
        self.generation_finished.emit()

    def _generation_failed(self, error) -> None:
        self.task = self.cancel = None
        for slot in self.slots():
            if self.panes[slot].stats.text() == "Generating…":
                self.panes[slot].stats.setText(f"Failed: {error}")
        self._update_buttons()
        self.generation_finished.emit()

    def stop(self) -> None:
        """End the answer now; what was written stays in the conversation."""
        if self.cancel is not None:
            self.cancel.cancel()

    def reset(self) -> None:
        if self.is_generating():
            return
        for slot in (0, 1):
            self.histories[slot] = []
            self.panes[slot].render([])
            self.panes[slot].stats.setText("")
        self._update_buttons()

    def copy_answer(self, slot: int = 0) -> None:
        answers = [m["content"] for m in self.histories[slot] if m["role"] == "assistant"]
        if answers:
            QGuiApplication.clipboard().setText(answers[-1])

    def _compare_toggled(self, on: bool) -> None:
        self.pickers[1].setVisible(on)
        self.panes[1].setVisible(on)
        if on:  # the second side carries on from the same conversation as the first
            self.histories[1] = [dict(m) for m in self.histories[0]]
            self.panes[1].render(self.histories[1])
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.is_generating()
        self.send_button.setEnabled(not busy and not self.pending_send)
        self.stop_button.setEnabled(busy)
        self.regenerate_button.setEnabled(
            not busy
            and all(self.models.get(s) for s in self.slots())
            and all(self.histories[s] for s in self.slots())
        )
        self.reset_button.setEnabled(not busy)
        self.compare_box.setEnabled(not busy and not self.pending_send and not self.loading)
        # One load at a time: the second then shares the first's base model, and closing a
        # model never waits on the other side's load.
        # A quality check loads models too: it waits for a load and holds Load back, so
        # only one model is ever being loaded (and only one check runs).
        checking = self.checking()
        for p in self.pickers:
            p.load_button.setEnabled(not busy and not self.loading and not checking)
            p.quality.set_blocked(bool(self.loading) or (checking and not p.quality.busy))

    # --- a run opened from the Train page, and suggestions ---------------------------------

    def open_run(self, run_dir) -> None:
        """A new chat with the run's model (A) beside its base model (B)."""
        from studio.core.after_run import load_comparison

        run_dir = Path(run_dir)
        base = chat_worker.run_base_model(str(run_dir))
        if not self.is_generating() and not self.loading:
            for slot in (0, 1):  # other choices now: the next message loads these
                old = self.models.pop(slot, None)
                if old is not None:
                    old.close()
            self.reset()
        self.refresh_runs()
        for slot, adapter in ((0, str(run_dir / "adapter")), (1, "")):
            picker = self.pickers[slot]
            picker.model_edit.setText(base)
            if adapter:
                picker.set_adapter(adapter)
            else:
                picker.adapter_box.setCurrentIndex(0)  # None: the base model alone
            picker.show_status("Loads when you send a message")
        self.compare_box.setChecked(True)
        if not self.models:  # named now; loading later puts the loaded models' names here
            names = (f"{run_dir.name} (fine-tuned)", "Base model")
            for pane, who in zip(self.panes, names, strict=True):
                pane.title.setText(who)
                pane.transcript.setPlaceholderText(
                    "Ask something like the training data, or pick a suggestion below."
                )
        self.hint.reset()
        self.hint.from_comparison(run_dir.name, load_comparison(run_dir))
        self.suggestions.load_from_run(run_dir)

    def _suggest_from_project(self, project) -> None:
        path = project.dataset if project is not None else ""
        if path:
            self.suggestions.load_from_data(path)

    def _use_suggestion(self, text: str) -> None:
        self.input.setPlainText(text)
        self.input.setFocus()

    def showEvent(self, event) -> None:
        self.refresh_runs()  # runs may have finished since the page was last shown
        super().showEvent(event)

    def shutdown(self) -> None:
        """Stop an answer being written and wait for the worker threads."""
        self.stop()
        for p in self.pickers:
            p.quality.shutdown()
        for task in [self.task, *self.loading.values()]:
            if task is not None:
                task.wait()


def _spin(box, low, high, value, step, tip):
    box.setRange(low, high)
    box.setSingleStep(step)
    box.setValue(value)
    box.setToolTip(tip)
    if isinstance(box, QDoubleSpinBox):
        box.setDecimals(2)
    return box
