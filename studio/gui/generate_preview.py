"""The Generate dialog's live preview: rows as the model writes them, each one accepted,
rejected or edited in place before the result is saved.

A row's texts (the prompt, the answer, a pair's two answers...) stand one under the other;
Edit makes them editable, Apply keeps the change in the row (the generation's own output
file is never touched: only what is saved to the project carries the edits).
"""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QScrollArea,
    QSplitter,
    QVBoxLayout,
    QWidget,
)

from studio.gui import theme
from studio.gui.generate_job import (
    ACCEPTED,
    PENDING,
    REJECTED,
    PreviewRow,
    get_field,
    set_field,
    summary,
    text_fields,
)

MARKS = {PENDING: "•", ACCEPTED: "✓", REJECTED: "✗"}


class RowPreview(QWidget):
    """The rows list (newest at the bottom), the selected row's texts, Accept/Reject/Edit."""

    changed = Signal()
    """A row came, or was accepted, rejected or edited: the counts may have changed."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.rows: dict[int, PreviewRow] = {}
        self.list = QListWidget()
        self.list.setAlternatingRowColors(True)
        self.list.currentItemChanged.connect(lambda *_: self._show_current())
        self.fields_box = QWidget()
        box_layout = QVBoxLayout(self.fields_box)
        self.fields_form = QFormLayout()
        box_layout.addLayout(self.fields_form)
        box_layout.addStretch(1)  # the texts stay together at the top
        self.fields_form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.ExpandingFieldsGrow)
        self.editors: list[tuple[tuple, QPlainTextEdit]] = []
        self.shown: PreviewRow | None = None
        """The row whose texts are in the editors (edits are applied to it)."""
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setWidget(self.fields_box)
        self.heading = QLabel("Rows appear here as the model writes them.")
        self.heading.setWordWrap(True)
        self.accept_button = QPushButton("✓ Accept")
        self.reject_button = QPushButton("✗ Reject")
        self.edit_button = QPushButton("Edit")
        self.edit_button.setCheckable(True)
        self.pick_buttons = [QPushButton(f"{'AB'[i]} is better") for i in range(2)]
        for i, b in enumerate(self.pick_buttons):
            b.setToolTip(f"Keep this pair with answer {'AB'[i]} as the better one")
            b.clicked.connect(lambda _=False, i=i: self.pick(i))
        self.accept_button.clicked.connect(lambda: self.mark(ACCEPTED))
        self.reject_button.clicked.connect(lambda: self.mark(REJECTED))
        self.edit_button.toggled.connect(self._edit_toggled)
        buttons = QHBoxLayout()
        for b in (*self.pick_buttons, self.accept_button, self.reject_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        buttons.addWidget(self.edit_button)
        detail = QWidget()
        dl = QVBoxLayout(detail)
        dl.setContentsMargins(0, 0, 0, 0)
        dl.addWidget(self.heading)
        dl.addWidget(scroll, 1)
        dl.addLayout(buttons)
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.list)
        split.addWidget(detail)
        split.setSizes([260, 240])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(split)
        self._enable_buttons()

    # --- rows -------------------------------------------------------------------------------

    def clear(self) -> None:
        self.rows.clear()
        self.list.clear()
        self._show_current()

    def add_row(self, index: int, record: dict) -> bool:
        """A row of the output file; a row already shown keeps its marks and edits (a
        continued generation reads the file again). True when the row is new."""
        if index in self.rows or not isinstance(record, dict):
            return False
        row = PreviewRow(index, record)
        self.rows[index] = row
        item = QListWidgetItem()
        item.setData(Qt.ItemDataRole.UserRole, index)
        self._paint(item, row)
        position = sum(1 for i in self.rows if i < index)  # keep the file's order
        self.list.insertItem(position, item)
        if self.list.currentItem() is None:
            self.list.setCurrentItem(item)
        self.changed.emit()
        return True

    def current(self) -> PreviewRow | None:
        item = self.list.currentItem()
        return self.rows.get(item.data(Qt.ItemDataRole.UserRole)) if item is not None else None

    def _item(self, index: int) -> QListWidgetItem | None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == index:
                return self.list.item(i)
        return None

    def select(self, index: int) -> None:
        for i in range(self.list.count()):
            if self.list.item(i).data(Qt.ItemDataRole.UserRole) == index:
                self.list.setCurrentRow(i)
                return

    def counts(self) -> dict[str, int]:
        """Rows by status, and "unpicked": candidates with no better answer chosen yet."""
        out = {PENDING: 0, ACCEPTED: 0, REJECTED: 0, "unpicked": 0}
        for row in self.rows.values():
            if row.candidate and row.picked is None and row.status != REJECTED:
                out["unpicked"] += 1
            else:
                out[row.status] += 1
        return out

    def pick(self, which: int) -> None:
        """A candidate pair: answer `which` is the better one; the row is accepted."""
        row = self.current()
        if row is None or not row.candidate:
            return
        row.picked = which
        row.status = PENDING  # mark() below makes it accepted
        self.mark(ACCEPTED)

    def mark(self, status: str) -> None:
        """Accept or reject the selected row (again: back to unreviewed), then go to the next."""
        row = self.current()
        if row is None:
            return
        self.edit_button.setChecked(False)
        row.status = PENDING if row.status == status else status
        if row.candidate and row.picked is None and row.status == ACCEPTED:
            row.status = PENDING  # a pair is accepted by picking its better answer
            return
        self._paint(self.list.currentItem(), row)
        self._show_current()
        self.changed.emit()
        if row.status != PENDING and self.list.currentRow() < self.list.count() - 1:
            self.list.setCurrentRow(self.list.currentRow() + 1)

    def _paint(self, item: QListWidgetItem, row: PreviewRow) -> None:
        edited = " (edited)" if row.edited else ""
        picked = f" [{'AB'[row.picked]} better]" if row.picked is not None else ""
        text = f"{MARKS[row.status]}  {row.index + 1}.{picked} {summary(row.record)}{edited}"
        item.setText(text)
        colors = {ACCEPTED: theme.ok_color(), REJECTED: theme.error_color()}
        item.setForeground(colors.get(row.status, self.palette().text().color()))
        font = item.font()
        font.setStrikeOut(row.status == REJECTED)
        item.setFont(font)

    # --- the selected row ---------------------------------------------------------------------

    def _show_current(self) -> None:
        if self.edit_button.isChecked():
            self.edit_button.setChecked(False)  # leaving a row applies its edits
        while self.fields_form.rowCount():
            self.fields_form.removeRow(0)
        self.editors = []
        row = self.shown = self.current()
        self._enable_buttons()
        if row is None:
            self.heading.setText("Rows appear here as the model writes them.")
            return
        words = {PENDING: "not reviewed yet", ACCEPTED: "accepted", REJECTED: "rejected"}
        state = words[row.status]
        if row.candidate and row.picked is None and row.status != REJECTED:
            state = "two answers: pick the better one (A or B) to keep it as a pair"
        elif row.picked is not None:
            state += f" · answer {'AB'[row.picked]} is the better one"
        self.heading.setText(f"<b>Row {row.index + 1}</b> · {state}")
        for path, label in text_fields(row.record):
            box = QPlainTextEdit(get_field(row.record, path))
            box.setReadOnly(True)
            lines = max(2, min(8, box.toPlainText().count("\n") + 2))
            box.setFixedHeight(box.fontMetrics().lineSpacing() * lines + 12)
            self.fields_form.addRow(QLabel(label + ":"), box)
            self.editors.append((path, box))

    def _enable_buttons(self) -> None:
        row = self.current()
        on = row is not None
        for b in (self.accept_button, self.reject_button, self.edit_button):
            b.setEnabled(on)
        candidate = on and row.candidate
        for b in self.pick_buttons:
            b.setVisible(candidate)
        self.accept_button.setVisible(not candidate)

    def _edit_toggled(self, on: bool) -> None:
        """Edit: the texts become editable; pressed again (Apply), the row takes them."""
        self.edit_button.setText("Apply edit" if on else "Edit")
        for _path, box in self.editors:
            box.setReadOnly(not on)
        if on and self.editors:
            self.editors[0][1].setFocus()
        if not on:
            self._apply_edits()

    def _apply_edits(self) -> None:
        row = self.shown
        if row is None:
            return
        changed = False
        for path, box in self.editors:
            text = box.toPlainText()
            if text != get_field(row.record, path):
                set_field(row.record, path, text)
                changed = True
        if changed:
            row.edited = True
            self._paint(self._item(row.index), row)
            self.changed.emit()
