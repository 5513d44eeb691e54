"""The Train page's finished state: the base's and the tuned model's answers side by side.

Right after a run ends, a few held-out prompts are answered by the base model and by the
tuned one (studio.core.after_run, on a worker through the workers bridge; short greedy
answers), so a person sees at once whether fine-tuning changed anything, and above all
whether the model learned to end its answers. "Chat with it" opens the Chat page on the run
with the base beside it. A run opened later shows what was measured then (RUN/samples.json).
"""

from __future__ import annotations

from html import escape
from pathlib import Path

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QFrame,
    QHBoxLayout,
    QLabel,
    QProgressBar,
    QPushButton,
    QTextBrowser,
    QVBoxLayout,
)

from studio.core import after_run
from studio.gui import theme, workers

PROMPTS = 4
"""Prompts answered after a run: enough to see a pattern, few enough to read at a glance."""
SHOWN_CHARS = 160
"""Longer answers are cut here on screen (RUN/samples.json keeps them whole)."""


class AfterRunView(QFrame):
    chat_requested = Signal(object)
    """The run folder, when "Chat with it" is clicked."""
    compared = Signal(object)
    """An after_run.Comparison, once the answers are in."""
    evaluate_requested = Signal(object)
    """The run folder, when "Evaluate" is clicked (the Evaluate page takes it from there)."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setFrameShape(QFrame.Shape.StyledPanel)
        self.run_dir: Path | None = None
        self.comparison: after_run.Comparison | None = None
        self.task = None
        self.cancel = None
        title = QLabel("Before and after fine-tuning")
        title.setStyleSheet("font-weight: bold; font-size: 12pt")
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(160)
        self.progress.setTextVisible(False)
        self.progress.hide()
        self.compare_button = QPushButton("Compare with the base model")
        self.compare_button.setToolTip(
            "Answer a few prompts from the data with the base and the tuned model"
        )
        self.compare_button.clicked.connect(self.start)
        self.chat_button = QPushButton("Chat with it")
        self.chat_button.setToolTip("Open the Chat page on this run, with the base model beside it")
        self.chat_button.clicked.connect(lambda: self.chat_requested.emit(self.run_dir))
        self.evaluate_button = QPushButton("Evaluate")
        self.evaluate_button.setToolTip(
            "Measure the base and the tuned model: loss, answers against the data's, a report"
        )
        self.evaluate_button.clicked.connect(lambda: self.evaluate_requested.emit(self.run_dir))
        head = QHBoxLayout()
        head.addWidget(title)
        head.addSpacing(12)
        head.addWidget(self.progress)
        head.addStretch(1)
        head.addWidget(self.compare_button)
        head.addWidget(self.chat_button)
        head.addWidget(self.evaluate_button)
        # One rich-text table: it wraps, scrolls and copies like a document, where a grid of
        # word-wrapped labels in a scroll area gets squeezed instead of scrolling.
        self.table = QTextBrowser()
        self.table.setFrameShape(QFrame.Shape.NoFrame)
        self.table.setOpenLinks(False)
        layout = QVBoxLayout(self)
        layout.addLayout(head)
        layout.addWidget(self.summary)
        layout.addWidget(self.table, 1)

    # --- showing a run -----------------------------------------------------------------------

    def show_run(self, run_dir: Path, status: str, live: bool) -> None:
        """A run that ended: its saved comparison, else a fresh one when it ended just now
        (live), else a button to make one. Hidden for runs with no adapter to compare."""
        self.reset()
        adapter = Path(run_dir) / "adapter" / "adapter_config.json"
        if status not in ("completed", "stopped") or not adapter.is_file():
            self.hide()
            return
        self.run_dir = Path(run_dir)
        self.show()
        saved = after_run.load_comparison(run_dir)
        samples = Path(run_dir) / after_run.SAMPLES_FILE
        if saved is not None and samples.stat().st_mtime >= adapter.stat().st_mtime:
            self._show(saved)
        elif live:
            self.start()
        else:
            self.summary.setText(
                "Compare with the base model to see what the fine-tune changed, or chat with it."
            )
            self.compare_button.show()

    def start(self) -> None:
        """Answer held-out prompts with the base and the tuned model, in the background."""
        from studio.core.generation import CancelToken

        if self.run_dir is None or self.task is not None:
            return
        self.compare_button.hide()
        self.table.clear()
        self.summary.setText(
            f"Answering {PROMPTS} prompts the run did not train on, with the base model and "
            "with the tuned one…"
        )
        self.progress.setRange(0, 0)
        self.progress.show()
        self.cancel = CancelToken()
        self.task = workers.run_task(
            self,
            after_run.compare_with_base,
            self.run_dir,
            PROMPTS,
            cancel=self.cancel,
            on_done=self._done,
            on_error=self._failed,
            on_progress=self._progress,
        )

    def _progress(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)

    def _done(self, comparison) -> None:
        self.task = self.cancel = None
        self.progress.hide()
        self._show(comparison)
        self.compared.emit(comparison)

    def _failed(self, error) -> None:
        self.task = self.cancel = None
        self.progress.hide()
        first = str(error).splitlines()[0] if str(error) else type(error).__name__
        theme.show_status(self.summary, f"Could not compare with the base model: {first}", "error")
        self.compare_button.show()

    def _show(self, comparison: after_run.Comparison) -> None:
        self.comparison = comparison
        where = {"validation": "held out from training", "training": "from the training data"}
        theme.show_status(
            self.summary,
            f"{comparison.summary()} Prompts {where.get(comparison.source, 'from the data')}; "
            "greedy answers.",
            "ok" if comparison.learned_to_stop() else "error",
        )
        self.compare_button.setVisible(False)
        self.table.setHtml(answers_html(comparison))

    def reset(self) -> None:
        """Forget the run shown; an answer being written stops within a token."""
        if self.cancel is not None:
            self.cancel.cancel()
        if self.task is not None:
            self.task.cancel()
        self.task = self.cancel = None
        self.run_dir, self.comparison = None, None
        self.progress.hide()
        self.summary.clear()
        self.table.clear()

    def shutdown(self) -> None:
        task = self.task
        self.reset()
        if task is not None:
            task.wait()


def answers_html(comparison: after_run.Comparison) -> str:
    """The prompts and both models' answers as a table (every text escaped: never markup)."""
    muted, ok, bad = (
        c.name() for c in (theme.muted_color(), theme.ok_color(), theme.error_color())
    )

    def answer(text: str, stopped: bool) -> str:
        if len(text) > SHOWN_CHARS:  # a base model's ramble: the start says enough
            text = text[: SHOWN_CHARS - 10].rsplit(" ", 1)[0] + " …"
        mark = (
            f'<span style="color:{ok}">✓ ended its turn</span>'
            if stopped
            else f'<span style="color:{bad}">✗ still going at the '
            f"{comparison.max_new_tokens}-token limit</span>"
        )
        return f"{escape(text) or '(nothing)'}<br><small>{mark}</small>"

    head = "".join(
        f'<th align="left" width="{w}%" style="color:{muted}">{t}</th>'
        for t, w in (("Prompt", 26), ("Base model", 44), ("Tuned model", 30))
    )
    rows = "".join(
        "<tr>"
        f"<td><b>{escape(s.prompt)}</b><br>"
        f'<span style="color:{muted}">In the data: {escape(s.reference)}</span></td>'
        f"<td>{answer(s.base, s.base_stopped)}</td>"
        f"<td>{answer(s.tuned, s.tuned_stopped)}</td>"
        "</tr>"
        for s in comparison.samples
    )
    return f'<table width="100%" cellspacing="0" cellpadding="5"><tr>{head}</tr>{rows}</table>'
