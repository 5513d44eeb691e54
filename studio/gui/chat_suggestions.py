"""Two helpers of the Chat page: prompts to try from the project's data, and a hint when a
tuned model never ends its answers.

Suggestions come from the data the model was trained on (a run's held-out prompts when the
chat was opened on a run): the first thing to ask a fine-tuned model is something like what
it was taught. They are read on a worker (a data file can be large); clicking one fills the
input box. The hint appears when a tuned model hits the token limit on most of its answers,
the sign of a run too short or a chat template that differs from training's.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QHBoxLayout, QLabel, QPushButton, QWidget

from studio.core import after_run
from studio.gui import theme, workers

SUGGESTIONS = 4


class SuggestionBar(QWidget):
    chosen = Signal(str)
    """The text of the suggestion clicked."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prompts: list[str] = []
        self.source = None  # what the prompts were read from (a data file or a run folder)
        self.task = None
        self.buttons: list[QPushButton] = []
        self.row = QHBoxLayout(self)
        self.row.setContentsMargins(0, 0, 0, 0)
        label = QLabel("Try a question from the data:")
        label.setStyleSheet(f"color: {theme.muted_color().name()}")
        self.row.addWidget(label)
        self.row.addStretch(1)
        self.hide()

    def load_from_data(self, path: str) -> None:
        """Prompts from a training data file (the project's)."""
        self._load(path, after_run.suggested_prompts, path, SUGGESTIONS)

    def load_from_run(self, run_dir) -> None:
        """Prompts a run held out from training (or took from its data when it held none)."""
        self._load(str(run_dir), after_run.run_prompts, run_dir, SUGGESTIONS)

    def _load(self, source: str, fn, *args) -> None:
        if not source or source == self.source:
            return
        self.source = source
        if self.task is not None:
            self.task.cancel()
        self.task = workers.run_task(self, fn, *args, on_done=self._loaded, on_error=self._failed)

    def _loaded(self, prompts: list[str]) -> None:
        self.task = None
        self.set_prompts(prompts)

    def _failed(self, _error) -> None:
        self.task = None  # no suggestions (a data file that moved, say): nothing to offer
        self.set_prompts([])

    def set_prompts(self, prompts: list[str]) -> None:
        for b in self.buttons:
            self.row.removeWidget(b)
            b.deleteLater()
        self.prompts, self.buttons = list(prompts), []
        for i, text in enumerate(self.prompts):
            shown = text if len(text) <= 60 else text[:57] + "…"
            button = QPushButton(shown.replace("&", "&&"))  # "&" would mark a shortcut
            button.setToolTip(f"Put this in the message box: {text}")
            button.setFlat(False)
            button.clicked.connect(lambda _=False, t=text: self.chosen.emit(t))
            self.row.insertWidget(1 + i, button)
            self.buttons.append(button)
        self.setVisible(bool(self.prompts))


class EndOfTurnHint(QLabel):
    """One line, shown when a tuned model hits the token limit on most of its answers."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWordWrap(True)
        self.setStyleSheet(f"color: {theme.error_color().name()}")
        self.counts: dict[str, list[int]] = {}  # adapter -> [answers cut at the limit, answers]
        self.hide()

    def record(self, model, stats: dict) -> None:
        """Count one finished answer of `model` (a ChatModel); base models are not judged."""
        if not getattr(model, "adapter_path", "") or stats["finish_reason"] == "cancelled":
            return
        cut, total = self.counts.setdefault(model.adapter_path, [0, 0])
        cut += stats["finish_reason"] == "length"
        total += 1
        self.counts[model.adapter_path] = [cut, total]
        if total >= 2 and cut * 2 > total:
            self.say(f"{model.name} hit the token limit in {cut} of {total} answers")

    def from_comparison(self, name: str, comparison) -> None:
        """What the run's after-run check found, before any chat."""
        if comparison is not None and comparison.samples and not comparison.learned_to_stop():
            n = len(comparison.samples)
            self.say(f"{name} ended only {comparison.tuned_stops} of {n} test answers itself")

    def say(self, what: str) -> None:
        self.setText(
            f"{what} instead of ending its turn: train longer (more epochs or steps), or check "
            "that the chat template is the one it was trained with."
        )
        self.show()

    def reset(self) -> None:
        self.counts.clear()
        self.hide()
