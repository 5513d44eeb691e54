"""A preference pair on the Data page: the prompt above, the two answers side by side
(the chosen one on the left, marked better; the rejected one on the right)."""

from __future__ import annotations

from PySide6.QtWidgets import QFrame, QHBoxLayout, QLabel, QTextEdit, QVBoxLayout, QWidget

from studio.gui import theme


def _text_box(placeholder: str) -> QTextEdit:
    box = QTextEdit()
    box.setReadOnly(True)
    box.setPlaceholderText(placeholder)
    return box


def _side(title: str, color, box: QTextEdit) -> QFrame:
    frame = QFrame()
    frame.setObjectName("side")
    frame.setStyleSheet(f"QFrame#side {{ border: 2px solid {color.name()}; border-radius: 4px; }}")
    header = QLabel(title)
    header.setStyleSheet(f"color: {color.name()}; font-weight: bold")
    layout = QVBoxLayout(frame)
    layout.setContentsMargins(6, 4, 6, 6)
    layout.addWidget(header)
    layout.addWidget(box, 1)
    return frame


class PairView(QWidget):
    """The prompt's turns, then the better and the worse answer next to each other."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.prompt = _text_box("The prompt")
        self.prompt.setMaximumHeight(72)
        self.chosen = _text_box("The better answer")
        self.rejected = _text_box("The worse answer")
        sides = QHBoxLayout()
        sides.addWidget(_side("✓ Better (chosen)", theme.ok_color(), self.chosen), 1)
        sides.addWidget(_side("✗ Worse (rejected)", theme.error_color(), self.rejected), 1)
        prompt_label = QLabel("Prompt")
        prompt_label.setStyleSheet("font-weight: bold")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(prompt_label)
        layout.addWidget(self.prompt)
        layout.addLayout(sides, 1)

    def show_pair(self, record) -> None:
        turns = record.messages or []
        if len(turns) == 1 and turns[0].get("role") == "user":
            self.prompt.setPlainText(turns[0].get("content", ""))
        else:  # a system prompt or earlier turns: each with its role
            self.prompt.setPlainText(
                "\n\n".join(f"[{m.get('role')}]\n{m.get('content', '')}" for m in turns)
            )
        self.chosen.setPlainText(record.chosen or "")
        self.rejected.setPlainText(record.rejected or "")
