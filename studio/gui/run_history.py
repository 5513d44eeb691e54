"""Run history: every run of the project (and run folders opened from disk, such as CLI runs)
with its status, key settings and final losses. Select two or more to overlay their loss
curves. Folders are read on a worker thread."""

from __future__ import annotations

import time
from pathlib import Path

from PySide6.QtCore import QItemSelectionModel, Qt, Signal
from PySide6.QtGui import QColor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QFileDialog,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QMessageBox,
    QPushButton,
    QSplitter,
    QTableWidget,
    QTableWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.core import runs
from studio.core.errors import StudioError
from studio.gui import theme, workers

COLUMNS = ("Name", "Status", "Started", "Steps", "Settings", "Train loss", "Eval loss")


def _loss(value) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "—"


def _status_text(state: runs.RunState) -> str:
    if state.status == "failed" and state.kind:
        words = {"oom": "out of memory", "nan": "NaN loss", "input": "bad input"}
        return f"failed ({words.get(state.kind, state.kind)})"
    return state.status


def load_curves(generation: int, folders: list[Path]) -> tuple[int, list[runs.Curves]]:
    return generation, [runs.read_curves(f) for f in folders]


class RunHistory(QWidget):
    open_requested = Signal(object)
    """A run folder (Path) to show on the monitor."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.runs_dir: Path | None = None
        self.extra: list[Path] = []
        self.rows: list[tuple[runs.RunState, str]] = []
        self._list_task = None
        self._curves_task = None
        self._generation = 0
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels(COLUMNS)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().hide()
        header = self.table.horizontalHeader()
        header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(4, QHeaderView.ResizeMode.Stretch)
        self.table.itemSelectionChanged.connect(self._selection_changed)
        self.table.doubleClicked.connect(lambda _index: self.open_selected())
        self.open_button = QPushButton("Open")
        self.open_button.setToolTip("Show this run's curves, log and progress on the monitor")
        self.open_button.clicked.connect(self.open_selected)
        self.add_button = QPushButton("Open a run folder…")
        self.add_button.setToolTip("A run made with `studio train` anywhere on disk")
        self.add_button.clicked.connect(self.browse)
        self.refresh_button = QPushButton("Refresh")
        self.refresh_button.clicked.connect(self.refresh)
        self.hint = QLabel("Select two or more runs (Ctrl or Shift + click) to compare them.")
        self.hint.setStyleSheet(f"color: {theme.muted_color().name()}")
        row = QHBoxLayout()
        row.addWidget(self.hint, 1)
        for b in (self.refresh_button, self.add_button, self.open_button):
            row.addWidget(b)
        self.compare = None  # a plots.ComparePlot, made on first use (pyqtgraph loads slowly)
        self.split = QSplitter(Qt.Orientation.Vertical)
        self.split.addWidget(self.table)
        self.split.addWidget(QLabel())
        self.split.setSizes([220, 380])
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addLayout(row)
        layout.addWidget(self.split, 1)
        self._selection_changed()

    # --- listing ----------------------------------------------------------------------------

    def set_runs_dir(self, runs_dir: Path | None) -> None:
        self.runs_dir = Path(runs_dir) if runs_dir else None
        self.extra = []
        self.refresh()

    def add_folder(self, folder: Path) -> None:
        folder = Path(folder)
        if folder not in self.extra and (self.runs_dir is None or folder.parent != self.runs_dir):
            self.extra.append(folder)
        self.refresh()

    def refresh(self) -> None:
        if self.runs_dir is None and not self.extra:
            self._fill([])
            return
        if self._list_task is not None:
            self._list_task.cancel()
        self._list_task = workers.run_task(
            self,
            runs.list_runs,
            self.runs_dir,
            list(self.extra),
            on_done=self._listed,
            on_error=self._list_failed,
        )

    def _listed(self, rows) -> None:
        self._list_task = None
        self._fill(rows)

    def _list_failed(self, error) -> None:
        self._list_task = None
        self.hint.setText(f"Cannot list the runs: {error}")

    def _fill(self, rows) -> None:
        selected = {r.folder for r in self.selected_states()}
        self.rows = rows
        self.table.blockSignals(True)
        self.table.clearSelection()
        self.table.setRowCount(len(rows))
        colors = {"failed": theme.error_color(), "completed": theme.ok_color()}
        for i, (state, summary) in enumerate(rows):
            started = time.strftime("%Y-%m-%d %H:%M", time.localtime(state.started or 0))
            steps = f"{state.step} / {state.total_steps}" if state.total_steps else str(state.step)
            cells = (
                state.name,
                _status_text(state),
                started if state.started else "—",
                steps,
                summary,
                _loss(state.final_loss),
                _loss(state.eval_loss),
            )
            for j, text in enumerate(cells):
                item = QTableWidgetItem(text)
                if j == 1 and state.status in colors:
                    item.setForeground(QColor(colors[state.status]))
                if j == 0:
                    item.setToolTip(str(state.folder))
                if j >= 5:
                    item.setTextAlignment(
                        Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter
                    )
                self.table.setItem(i, j, item)
            if state.folder in selected:
                self._select_row(i)
        self.table.blockSignals(False)
        self._selection_changed()

    # --- selection and comparison ------------------------------------------------------------------

    def selected_states(self) -> list[runs.RunState]:
        rows = sorted({i.row() for i in self.table.selectionModel().selectedRows()})
        return [self.rows[r][0] for r in rows if r < len(self.rows)]

    def select(self, names: list[str]) -> None:
        """Select the runs with these folder names (as a user would with Ctrl + click)."""
        self.table.blockSignals(True)
        self.table.clearSelection()
        for i, (state, _) in enumerate(self.rows):
            if state.name in names:
                self._select_row(i)
        self.table.blockSignals(False)
        self._selection_changed()

    def _select_row(self, row: int) -> None:
        """Add a row to the selection (selectRow would replace it)."""
        flags = QItemSelectionModel.SelectionFlag
        index = self.table.model().index(row, 0)
        self.table.selectionModel().select(index, flags.Select | flags.Rows)

    def _selection_changed(self) -> None:
        chosen = self.selected_states()
        self.open_button.setEnabled(len(chosen) == 1)
        self._generation += 1
        if not chosen:
            if self.compare is not None:
                self.compare.show_curves([])
            return
        if self._curves_task is not None:
            self._curves_task.cancel()
        self._curves_task = workers.run_task(
            self,
            load_curves,
            self._generation,
            [s.folder for s in chosen],
            on_done=self._curves_loaded,
            on_error=self._list_failed,
        )

    def _curves_loaded(self, result) -> None:
        generation, curves = result
        if generation != self._generation:
            return
        self._curves_task = None
        if self.compare is None:
            from studio.gui.plots import ComparePlot

            self.compare = ComparePlot()
            self.split.replaceWidget(1, self.compare)
        self.compare.show_curves(curves)

    def open_selected(self) -> None:
        chosen = self.selected_states()
        if len(chosen) == 1:
            self.open_requested.emit(chosen[0].folder)

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a run folder")
        if not folder:
            return
        try:
            from studio.core.project import open_run

            open_run(folder)
        except StudioError as e:
            QMessageBox.warning(self, "Not a run folder", e.message)
            return
        self.add_folder(Path(folder))
        self.open_requested.emit(Path(folder))
