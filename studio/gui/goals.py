"""What a fine-tune is for, in plain words: the wizard's three goals and the teacher picker.

A goal chooses `train.mode` (and, for distillation, `distill.teacher`): teach it answers
(SFT), teach it preferences (DPO by default; ORPO and SimPO under Advanced), or make a small
model imitate a big one (distillation). It also says, before any training, when a data file
does not fit it: preference pairs for SFT, or questions with answers for DPO.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from PySide6.QtCore import Signal
from PySide6.QtWidgets import QButtonGroup, QLabel, QRadioButton, QVBoxLayout, QWidget

from studio.core.config import PAIR_MODES, RunConfig
from studio.gui import theme
from studio.gui.model_picker import ModelPicker
from studio.gui.workers import run_task


@dataclass(frozen=True)
class Goal:
    key: str
    title: str
    summary: str
    modes: tuple[str, ...]
    """The training modes that serve it; the first is its default."""


ANSWERS = Goal(
    "answers",
    "Teach it answers",
    "Questions with the answers you want: it learns to answer like them.",
    ("sft",),
)
PREFERENCES = Goal(
    "preferences",
    "Teach it preferences",
    "Pairs of a better and a worse answer to the same prompt: it learns to prefer the "
    "better kind (DPO; ORPO and SimPO under Advanced).",
    PAIR_MODES,
)
DISTILL = Goal(
    "distill",
    "Make a small model imitate a big one",
    "A big teacher model shows how it answers your prompts; the model you pick next (the "
    "student) learns to answer like it.",
    ("distill",),
)
GOALS = {g.key: g for g in (ANSWERS, PREFERENCES, DISTILL)}


def goal_for_mode(mode: str) -> Goal:
    return next((g for g in GOALS.values() if mode in g.modes), ANSWERS)


def holds_pairs(dataset) -> bool:
    """True for a file of preference pairs (its format, or its records)."""
    return dataset.format == "pairs" or any(r.is_pair for r in dataset.records[:100])


def misfit(goal: Goal, dataset) -> str:
    """Why this data does not suit the goal, in plain words; "" when it does."""
    pairs = holds_pairs(dataset)
    if goal is PREFERENCES and not pairs:
        return (
            "This file holds questions with answers, not pairs of a better and a worse answer. "
            "Teaching preferences needs records with a prompt, a chosen and a rejected answer "
            '({"prompt": …, "chosen": …, "rejected": …}). Choose “Teach it answers” above, or '
            "a file of pairs."
        )
    if goal is not PREFERENCES and pairs:
        what = "answers" if goal is ANSWERS else "a small model to imitate a big one"
        return (
            "This file holds preference pairs (a better and a worse answer to each prompt); "
            f"they do not teach {what}. Choose “Teach it preferences” above, or a file of "
            "questions with answers."
        )
    return ""


def with_goal(cfg: RunConfig, goal: Goal, teacher: str = "", teacher_quant: str = "") -> RunConfig:
    """cfg set for the goal: its mode (an ORPO or SimPO chosen before is kept) and, for
    distillation, the teacher (raises ConfigError when there is none)."""
    mode = cfg.train.mode if cfg.train.mode in goal.modes else goal.modes[0]
    distill = dataclasses.replace(
        cfg.distill,
        teacher=teacher if goal is DISTILL else "",
        teacher_quant=teacher_quant or cfg.distill.teacher_quant,
    )
    return dataclasses.replace(
        cfg, train=dataclasses.replace(cfg.train, mode=mode), distill=distill
    )


class GoalChooser(QWidget):
    """The three goals as radio buttons, each with a line of plain words under it."""

    changed = Signal(object)
    """The Goal chosen."""

    def __init__(self, parent=None):
        super().__init__(parent)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(2)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        for goal in GOALS.values():
            button = QRadioButton(goal.title)
            button.setStyleSheet("font-weight: bold")
            explain = QLabel(goal.summary)
            explain.setWordWrap(True)
            explain.setContentsMargins(24, 0, 0, 4)
            explain.setStyleSheet(f"color: {theme.muted_color().name()}")
            self.group.addButton(button)
            self.buttons[goal.key] = button
            layout.addWidget(button)
            layout.addWidget(explain)
            button.toggled.connect(lambda on, g=goal: on and self.changed.emit(g))
        self.buttons[ANSWERS.key].setChecked(True)

    def goal(self) -> Goal:
        return next(GOALS[k] for k, b in self.buttons.items() if b.isChecked())

    def set_goal(self, goal: Goal) -> None:
        self.buttons[goal.key].setChecked(True)


class TeacherPicker(ModelPicker):
    """The teacher of a distillation: a model folder or hub id and its quantization, read
    (config only, no weights) on a worker to say what it is."""

    checked = Signal()
    """The teacher was read (or failed to be): isComplete may have changed."""

    def __init__(self, parent=None):
        super().__init__(0, parent, title="Teacher: the big model to imitate")
        self.model_only()
        self.model_edit.setPlaceholderText("A model folder or hub id, bigger than the student")
        self.quant_box.setToolTip(
            "Load the teacher in 8 or 4 bits to save memory (it is only read, never trained)."
        )
        self.model_edit.editingFinished.connect(self.check)
        self.info = None
        self.student = None  # the student's ModelInfo, to compare with
        self._task = None

    def source(self) -> str:
        return self.model_edit.text().strip()

    def is_ready(self) -> bool:
        return self.info is not None and self.info.source == self.source()

    def _browse_model(self) -> None:
        super()._browse_model()
        self.check()

    def check(self) -> None:
        from studio.core import model_info

        source = self.source()
        if not source or self.is_ready():
            return
        self.info = None
        self.checked.emit()
        self.show_status("Reading the teacher's config (no weights are loaded)…")
        if self._task is not None:
            self._task.cancel()
        self._task = run_task(
            self, model_info.read_model_info, source, on_done=self._read, on_error=self._failed
        )

    def _read(self, info) -> None:
        self._task = None
        if info.source != self.source():
            return  # the text changed meanwhile; its own check follows
        self.info = info
        self.describe()
        self.checked.emit()

    def _failed(self, error) -> None:
        self._task = None
        self.show_status(str(error), error=True)
        self.checked.emit()

    def describe(self) -> None:
        """What the teacher is, and a word when it does not look like a teacher."""
        info, student = self.info, self.student
        if info is None:
            return
        text = f"{info.architecture}: {info.num_params / 1e6:,.1f} M parameters."
        if student is not None and info.vocab_size != student.vocab_size:
            text += (
                f" Its vocabulary ({info.vocab_size:,}) differs from the student's "
                f"({student.vocab_size:,}): both must use the same tokenizer."
            )
        if student is not None and info.num_params <= student.num_params:
            text += " It is not bigger than the student; a teacher usually is."
        self.show_status(text)
