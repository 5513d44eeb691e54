"""The Chat page's quality check: what loading a run in 8 or 4 bits costs, measured on request.

Its button sits next to a model picker's Quantize box. A click measures the run's validation
perplexity unquantized, in 8 and in 4 bits (studio.core.quant_cost, on a worker thread
through the workers bridge) and the figures then stand under the choice and in the Quantize
box's tooltip. Nothing here imports torch; the worker does.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QComboBox, QLabel, QProgressBar, QPushButton, QSizePolicy

from studio.gui import theme, workers

QUANT_TIP = (
    "Load the base model in 8 or 4 bits (bitsandbytes) to save memory. 8-bit usually costs "
    "little quality, 4-bit (NF4) more; Compare quality measures it on this run's validation "
    "data."
)
NEEDS_RUN = (
    "Choose a run's adapter first: the comparison is measured on the validation data the run "
    "held out."
)
READY = (
    "Measure this run's validation perplexity with the base unquantized, in 8 and in 4 bits "
    "(each loaded in turn, one at a time). Lower is better."
)
STAGES = ("unquantized", "in 8 bits", "in 4 bits")
"""How each of perplexity_by_quant's three loads is named while it runs."""


def in_run(folder: str) -> bool:
    """True for a run folder, its adapter/ or one of its checkpoints (run.yaml is near)."""
    if not folder:
        return False
    p = Path(folder)
    return any((d / "run.yaml").is_file() for d in (p, p.parent, p.parent.parent))


def measure(adapter: str, model: str, progress=None):
    # On the worker thread: torch and the models load here, never on the GUI thread.
    from studio.core.quant_cost import perplexity_by_quant

    return perplexity_by_quant(adapter, model=model, progress=progress)


class QualityCheck(QObject):
    """The Compare quality button, its progress bar and its result line for one picker."""

    busy_changed = Signal(bool)

    def __init__(self, quant_box: QComboBox, parent=None):
        super().__init__(parent)
        self.quant_box = quant_box
        quant_box.setToolTip(QUANT_TIP)
        self.button = QPushButton("Compare quality…")
        self.button.clicked.connect(self._clicked)
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(120)
        self.progress.hide()
        self.label = QLabel("")
        # One line, never wrapped: a wrapped label in the picker's group box gets the height
        # of one line and loses the rest. The details are in its tooltip; the width it asks
        # for is ignored so a long message never widens the window.
        self.label.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.label.hide()
        self.task = None
        self.stopping = False
        self.key = ("", "")
        """(adapter, model) the button would measure now."""
        self.measuring = self.key
        """(adapter, model) being measured now (the choice may change meanwhile)."""
        self.blocked = False
        self.results: dict[tuple[str, str], tuple[str, str, str]] = {}
        """(adapter, model) -> (result line, its details, the Quantize box's lines), so
        switching back to a measured choice shows its figures again."""
        self._update()

    @property
    def busy(self) -> bool:
        return self.task is not None

    def set_choice(self, adapter: str, model: str) -> None:
        """The picker's adapter or base model changed: show that pair's figures, if measured."""
        key = (adapter, model)
        if key == self.key:
            return
        self.key = key
        if not self.busy:
            self._show_result()
        self._update()

    def set_blocked(self, blocked: bool) -> None:
        """The page is loading a model: one heavy load at a time."""
        self.blocked = blocked
        self._update()

    def _update(self) -> None:
        ok = in_run(self.key[0])
        self.button.setText("Cancel" if self.busy else "Compare quality…")
        self.button.setEnabled(self.busy or (ok and not self.blocked))
        self.button.setToolTip("Stop measuring" if self.busy else READY if ok else NEEDS_RUN)

    def _clicked(self) -> None:
        if self.busy:
            self.task.cancel()  # ends at the next example; `finished` then tidies up
            self.stopping = True
            self._say("Stopping…")
            return
        adapter, model = self.key
        self.measuring = self.key
        self.stopping = False
        self.progress.setRange(0, 0)  # busy until the first example is measured
        self.progress.show()
        self._say(f"Loading the model {STAGES[0]}…")
        self.task = workers.run_task(
            self,
            measure,
            adapter,
            model,
            on_done=self._done,
            on_error=self._failed,
            on_progress=self._progressed,
        )
        self.task.finished.connect(self._finished, Qt.ConnectionType.QueuedConnection)
        self._update()
        self.busy_changed.emit(True)

    def _progressed(self, done: int, total: int) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        if done >= total:
            return
        # progress counts examples over the three loads: which load, and how far into it.
        per = max(1, total // len(STAGES))
        stage, into = min(done // per, len(STAGES) - 1), done % per
        if into == 0:
            self._say(f"Loading the model {STAGES[stage]}…")
        else:
            self._say(f"Measuring {STAGES[stage]}… ({into} of {per} examples)")

    def _done(self, results) -> None:
        from studio.core.quant_cost import describe, megabytes, relative

        first = results[0]
        what = "training" if first.note else "validation"
        line = f"Quality cost: {describe(results)}"
        details = (
            f"Perplexity on {first.examples} {what} examples ({first.tokens} answer tokens) "
            "with the base model loaded unquantized, in 8 and in 4 bits; lower is better. "
            "Memory is the weights' footprint."
        )
        if first.note:
            line += " (on training records: no validation data)"
            details += f"\n\nNote: {first.note}."
        tips = [
            f"{r.label}: perplexity {r.perplexity:.4g}"
            + ("" if r is first else f" ({relative(r.perplexity, first.perplexity)})")
            + f", weights {megabytes(r.memory_mb)}"
            for r in results
        ]
        self.results[self.measuring] = (line, details, "\n".join(tips))
        self._show_result()

    def _failed(self, error) -> None:
        self.results.pop(self.measuring, None)
        self.progress.hide()
        self._say(f"Could not measure: {error}", error=True)

    def _finished(self) -> None:
        self.task = None
        if self.stopping or self.measuring != self.key:
            self._show_result()  # the choice changed meanwhile: show what fits it now
        self._update()
        self.busy_changed.emit(False)

    def _show_result(self) -> None:
        self.progress.hide()
        line, details, tips = self.results.get(self.key, ("", "", ""))
        self._say(line, details)
        self.quant_box.setToolTip(
            QUANT_TIP + (f"\n\nMeasured on this run:\n{tips}" if tips else "")
        )

    def _say(self, text: str, details: str = "", error: bool = False) -> None:
        color = theme.error_color() if error else theme.muted_color()
        self.label.setStyleSheet(f"color: {color.name()}")
        self.label.setText(text)
        self.label.setToolTip(f"{text}\n\n{details}" if details else text)
        self.label.setVisible(bool(text))

    def shutdown(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task.wait()
