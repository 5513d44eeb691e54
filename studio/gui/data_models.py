"""Lazy Qt table models for the Data page: rows are formatted only when Qt asks for them,
so a 200,000-record file scrolls as smoothly as a 20-record one.
"""

from __future__ import annotations

from PySide6.QtCore import QAbstractTableModel, QModelIndex, Qt

PREVIEW_CHARS = 160


def _clip(text: str | None) -> str:
    if not text:
        return ""
    text = text.replace("\r", "").replace("\n", " ⏎ ")
    return text if len(text) <= PREVIEW_CHARS else text[: PREVIEW_CHARS - 1] + "…"


def _first(messages, role: str) -> str:
    for m in messages or ():
        if m.get("role") == role:
            return m.get("content", "")
    return ""


def _last(messages, role: str) -> str:
    return next(
        (m.get("content", "") for m in reversed(messages or ()) if m.get("role") == role), ""
    )


class RecordTableModel(QAbstractTableModel):
    CHAT_HEADERS = ("Line", "Turns", "System", "User", "Assistant")
    TEXT_HEADERS = ("Line", "Characters", "Text")
    PAIR_HEADERS = ("Line", "Turns", "Prompt", "Better answer", "Worse answer")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.records: list = []
        self.text_mode = False
        self.pair_mode = False
        """Preference pairs: the prompt (its last user turn), the chosen and rejected answers."""

    def set_records(self, records: list) -> None:
        self.beginResetModel()
        self.records = records
        self.text_mode = bool(records) and records[0].is_text
        self.pair_mode = bool(records) and records[0].is_pair
        self.endResetModel()

    @property
    def headers(self) -> tuple[str, ...]:
        if self.pair_mode:
            return self.PAIR_HEADERS
        return self.TEXT_HEADERS if self.text_mode else self.CHAT_HEADERS

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.records)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return len(self.headers)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.headers[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role not in (
            Qt.ItemDataRole.DisplayRole,
            Qt.ItemDataRole.TextAlignmentRole,
        ):
            return None
        col = index.column()
        if role == Qt.ItemDataRole.TextAlignmentRole:
            return (
                int(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
                if col <= 1
                else None
            )
        r = self.records[index.row()]
        if col == 0:
            return str(r.line)
        if self.text_mode:
            return f"{len(r.text):,}" if col == 1 else _clip(r.text)
        if col == 1:
            return str(len(r.messages))
        if self.pair_mode:
            return _clip((_last(r.messages, "user"), r.chosen, r.rejected)[col - 2])
        return _clip(_first(r.messages, ("system", "user", "assistant")[col - 2]))


class ProblemTableModel(QAbstractTableModel):
    HEADERS = ("Line", "Field", "Reason")

    def __init__(self, parent=None):
        super().__init__(parent)
        self.problems: list = []

    def set_problems(self, problems: list) -> None:
        self.beginResetModel()
        self.problems = problems
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return 0 if parent.isValid() else len(self.problems)

    def columnCount(self, parent=QModelIndex()) -> int:  # noqa: B008
        return len(self.HEADERS)

    def headerData(self, section, orientation, role=Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            return self.HEADERS[section]
        return None

    def data(self, index, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or role not in (
            Qt.ItemDataRole.DisplayRole,
            Qt.ItemDataRole.ToolTipRole,
        ):
            return None
        p = self.problems[index.row()]
        if role == Qt.ItemDataRole.ToolTipRole:
            return f"Line {p.line}: {p.message}"
        return (str(p.line), p.field or "", p.message)[index.column()]
