"""The Data page: import a file (dialog or drag and drop), check every record, and see the
exact training text. Importing and tokenising run on worker threads; the window never
freezes, even on a 200,000-record file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QTextCharFormat, QTextCursor
from PySide6.QtWidgets import (
    QAbstractItemView,
    QComboBox,
    QFileDialog,
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QProgressBar,
    QPushButton,
    QSplitter,
    QTableView,
    QTabWidget,
    QTextEdit,
    QVBoxLayout,
    QWidget,
)

from studio.core.config import FORMATS
from studio.gui import settings, theme
from studio.gui.data_models import ProblemTableModel, RecordTableModel
from studio.gui.histogram import LengthHistogram
from studio.gui.pair_view import PairView
from studio.gui.workers import run_task

TABULAR = (".csv", ".tsv", ".tab", ".parquet", ".pq")
ROLES = ("instruction", "input", "output", "system", "text")
FILE_FILTER = "Data files (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)"


class NeedsColumns(Exception):
    """A table whose columns could not be matched to the parts of a record: ask the user."""

    def __init__(self, message: str, columns: list[str]):
        super().__init__(message)
        self.columns = columns


def load_file(path: str, fmt: str, columns: dict | None, progress=None):
    """Worker: import a data file (studio.core.data.formats)."""
    from studio.core.data.formats import load_dataset
    from studio.core.errors import DataError

    try:
        return load_dataset(path, format=fmt, columns=columns, progress=progress)
    except DataError as e:
        header = _table_header(path)
        if header:  # the user can say which column is which, then import again
            raise NeedsColumns(e.message, header) from None
        raise


def _table_header(path: str) -> list[str] | None:
    if Path(path).suffix.lower() not in TABULAR:
        return None
    from studio.core.data.readers import open_source
    from studio.core.errors import DataError

    try:
        source = open_source(path)
        # Only a table with rows can be helped by saying which column is which.
        return source.columns if next(source.rows, None) is not None else None
    except DataError:
        return None


@dataclass
class Tokenized:
    tokenizer: object
    template: object
    lengths: list[int]
    model: str


def tokenize_records(
    records, model_path: str, template: str, seq_len: int, train_on: str, trust: bool, progress=None
):
    """Worker: token length of every record, in chunks so progress (and cancel) flow."""
    from studio.core.data.examples import build_examples
    from studio.core.data.templates import resolve_template
    from studio.core.models import load_tokenizer

    tokenizer = load_tokenizer(model_path, trust_remote_code=trust)
    # Plain text (continued pre-training) needs no chat template, as in training.
    chat = resolve_template(tokenizer, template) if any(not r.is_text for r in records) else None
    lengths: list[int] = []
    chunk = 2000
    pairs = bool(records) and records[0].is_pair
    for start in range(0, len(records), chunk):
        part = records[start : start + chunk]
        if pairs:  # a pair's length is its longer side: seq_len bounds each side
            from studio.core.data.pairs import build_pair_examples, pair_lengths

            lengths += pair_lengths(build_pair_examples(part, tokenizer, chat, seq_len)[1])
            continue
        _, stats = build_examples(part, tokenizer, chat, seq_len, train_on, "truncate")
        lengths += stats.lengths
        if progress is not None:
            progress(min(start + chunk, len(records)), len(records))
    return Tokenized(tokenizer, chat, lengths, model_path)


def render_record(record, tokenizer, template, train_on: str):
    """Worker: the record's training text as runs of (text, carries loss)."""
    from studio.core.data.examples import record_segments, render_marked, tokenize_segments

    example = tokenize_segments(
        tokenizer, record_segments(record, template, tokenizer.eos_token or ""), train_on
    )
    return record, render_marked(example, tokenizer), len(example)


class DataPage(QWidget):
    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self.setAcceptDrops(True)
        self._load_task = self._tok_task = self._render_task = None
        self.tokenized: Tokenized | None = None
        self.path = ""

        layout = QVBoxLayout(self)
        heading = QLabel("Data")
        heading.setFont(theme.title_font())
        layout.addWidget(heading)

        bar = QHBoxLayout()
        self.import_button = QPushButton("Import file…")
        self.import_button.clicked.connect(self.browse)
        self.path_label = QLabel(
            "Drop a JSONL, JSON, CSV, Parquet or TXT file here, or choose one."
        )
        self.format_combo = QComboBox()
        self.format_combo.addItems(FORMATS)
        self.format_combo.setToolTip(
            "Detected automatically; choose another to read the file differently"
        )
        self.reimport_button = QPushButton("Re-import")
        self.reimport_button.setEnabled(False)
        self.reimport_button.clicked.connect(self.reimport)
        bar.addWidget(self.import_button)
        bar.addWidget(self.path_label, 1)
        bar.addWidget(QLabel("Format"))
        bar.addWidget(self.format_combo)
        bar.addWidget(self.reimport_button)
        # Make new rows with a model, or find repeated ones: each in its own dialog.
        self.generate_button = QPushButton("Generate…")
        self.generate_button.setToolTip("Make new rows with a model: answers, rewordings, pairs")
        self.generate_button.clicked.connect(self.open_generate)
        self.dedupe_button = QPushButton("Find duplicates…")
        self.dedupe_button.setToolTip(
            "Find repeated rows, filter by length or language, save a cleaned copy"
        )
        self.dedupe_button.clicked.connect(self.open_dedupe)
        bar.addWidget(self.generate_button)
        bar.addWidget(self.dedupe_button)
        layout.addLayout(bar)

        self.columns_box = QGroupBox("Columns (which column plays which part)")
        cl = QHBoxLayout(self.columns_box)
        self.column_combos: dict[str, QComboBox] = {}
        for role in ROLES:
            combo = QComboBox()
            combo.setMinimumWidth(110)
            self.column_combos[role] = combo
            cl.addWidget(QLabel(role.capitalize()))
            cl.addWidget(combo, 1)
        self.columns_box.hide()
        layout.addWidget(self.columns_box)

        self.progress = QProgressBar()
        self.progress.setMaximumHeight(14)
        self.progress.hide()
        layout.addWidget(self.progress)
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        layout.addWidget(self.summary)

        split = QSplitter(Qt.Orientation.Horizontal)
        self.tabs = QTabWidget()
        self.records_model = RecordTableModel(self)
        self.records_view = self._table(self.records_model)
        self.problems_model = ProblemTableModel(self)
        self.problems_view = self._table(self.problems_model)
        self.problems_view.horizontalHeader().setSectionResizeMode(
            2, QHeaderView.ResizeMode.Stretch
        )
        self.tabs.addTab(self.records_view, "Records")
        self.tabs.addTab(self.problems_view, "Skipped")
        self.records_view.selectionModel().currentRowChanged.connect(self._record_selected)
        self.problems_view.selectionModel().currentRowChanged.connect(self._problem_selected)
        self.tabs.currentChanged.connect(self._tab_changed)
        split.addWidget(self.tabs)

        right = QSplitter(Qt.Orientation.Vertical)
        preview_box = QGroupBox("Selected record")
        pl = QVBoxLayout(preview_box)
        self.legend = QLabel("")
        self.legend.setWordWrap(True)
        self.preview = QTextEdit()
        self.preview.setReadOnly(True)
        self.preview.setFont(theme.mono_font())
        self.preview.setPlaceholderText("Select a record to see the text the model trains on.")
        self.pair_view = PairView()  # a preference pair's two answers, side by side
        self.pair_view.hide()
        pl.addWidget(self.legend)
        pl.addWidget(self.preview, 1)
        pl.addWidget(self.pair_view, 1)
        hist_box = QGroupBox("Token lengths")
        hl = QVBoxLayout(hist_box)
        self.histogram = LengthHistogram()
        hl.addWidget(self.histogram)
        right.addWidget(preview_box)
        right.addWidget(hist_box)
        right.setSizes([320, 240])
        split.addWidget(right)
        split.setSizes([560, 440])
        layout.addWidget(split, 1)

        state.model_changed.connect(lambda _info: self.tokenize())
        state.config_changed.connect(self._config_changed)
        state.project_changed.connect(self._project_changed)
        state.dataset_changed.connect(self._dataset_changed)
        self._shown = None  # the Dataset on show

    def _table(self, model) -> QTableView:
        view = QTableView()
        view.setModel(model)
        view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        view.verticalHeader().setVisible(False)
        view.verticalHeader().setDefaultSectionSize(22)
        view.setWordWrap(False)
        view.horizontalHeader().setStretchLastSection(True)
        view.setAlternatingRowColors(True)
        return view

    def open_generate(self):
        from studio.gui.generate_view import open_generate

        return open_generate(self)

    def open_dedupe(self):
        from studio.gui.dedupe_view import open_dedupe

        return open_dedupe(self)

    # --- importing ------------------------------------------------------------------

    def browse(self) -> None:
        start = str(settings.get("data/last_dir", str(Path.home())))
        path, _ = QFileDialog.getOpenFileName(self, "Import a data file", start, FILE_FILTER)
        if path:
            self.import_file(path)

    def dragEnterEvent(self, event) -> None:
        if any(u.isLocalFile() for u in event.mimeData().urls()):
            event.acceptProposedAction()

    def dropEvent(self, event) -> None:
        files = [u.toLocalFile() for u in event.mimeData().urls() if u.isLocalFile()]
        if files:
            event.acceptProposedAction()
            self.import_file(files[0])

    def import_file(self, path: str, fmt: str = "auto", columns: dict | None = None) -> None:
        """Start importing path on a worker thread (a running import is cancelled)."""
        if self._load_task is not None:
            self._load_task.cancel()
        self.path = str(path)
        settings.put("data/last_dir", str(Path(path).parent))
        self.path_label.setText(Path(path).name)
        self.path_label.setToolTip(str(path))
        self.format_combo.setCurrentText(fmt)
        self.summary.setText(f"Importing {Path(path).name}…")
        self.summary.setStyleSheet("")
        self.progress.setRange(0, 1000)
        self.progress.setValue(0)
        self.progress.show()
        self.import_button.setEnabled(True)
        self._load_task = run_task(
            self, load_file, self.path, fmt, columns,
            on_done=self._loaded, on_error=self._load_failed, on_progress=self._load_progress,
        )  # fmt: skip

    def reimport(self) -> None:
        columns = None
        if self.columns_box.isVisible():
            columns = {
                r: c.currentText() for r, c in self.column_combos.items() if c.currentIndex() > 0
            }
            columns.update(
                {
                    r: ""
                    for r, c in self.column_combos.items()
                    if c.currentIndex() == 0 and c.count() > 1
                }
            )
        self.import_file(self.path, self.format_combo.currentText(), columns or None)

    def _load_progress(self, done, total) -> None:
        if total:
            self.progress.setValue(int(1000 * done / total))

    def _loaded(self, dataset) -> None:
        self._load_task = None
        self.progress.hide()
        self.reimport_button.setEnabled(True)
        self.show_dataset(dataset)
        self.state.set_dataset(dataset)
        self.tokenize()

    def _load_failed(self, error) -> None:
        self._load_task = None
        self.progress.hide()
        self.reimport_button.setEnabled(bool(self.path))
        text = str(error)
        if isinstance(error, NeedsColumns):
            self._fill_columns(error.columns, {})
            text = (
                f"{Path(self.path).name}: choose below which column holds each part of a "
                f"record, then press Re-import. ({error})"
            )
        self.summary.setText(text)
        self.summary.setStyleSheet(f"color: {theme.error_color().name()}")

    def _dataset_changed(self, ds) -> None:
        """Show a dataset chosen elsewhere (the wizard) unless it is the one on show."""
        if ds is None or ds is self._shown:
            return
        if self._load_task is not None:
            self._load_task.cancel()
            self._load_task = None
            self.progress.hide()
        self.path = ds.path
        self.path_label.setText(Path(ds.path).name)
        self.path_label.setToolTip(ds.path)
        self.reimport_button.setEnabled(True)
        self.show_dataset(ds)
        self.tokenize()

    def clear(self, message: str = "", error: bool = False) -> None:
        """Back to no data (another project), with a message to say why."""
        if self._load_task is not None:
            self._load_task.cancel()
            self._load_task = None
        self._shown = None
        self.tokenized = None
        self.path = ""
        self.path_label.setText("")
        self.progress.hide()
        self.reimport_button.setEnabled(False)
        self.records_model.set_records([])
        self.problems_model.set_problems([])
        self.tabs.setTabText(0, "Records")
        self.tabs.setTabText(1, "Skipped")
        self.columns_box.hide()
        self.preview.clear()
        self.histogram.caption.setText("")
        self.summary.setText(message)
        self.summary.setStyleSheet(f"color: {theme.error_color().name()}" if error else "")

    def show_dataset(self, ds) -> None:
        self._shown = ds
        self.format_combo.setCurrentText(ds.format)
        self.records_model.set_records(ds.records)
        self.problems_model.set_problems(ds.problems)
        self._size_columns()
        self.problems_view.resizeColumnToContents(0)
        self.tabs.setTabText(0, f"Records ({ds.kept:,})")
        self.tabs.setTabText(1, f"Skipped ({ds.skipped:,})")
        text = f"<b>{Path(ds.path).name}</b> · format <b>{ds.format}</b> · {ds.kept:,} records kept"
        if ds.skipped:
            color = theme.error_color().name()
            text += f" · <span style='color:{color}'><b>{ds.skipped:,} skipped</b></span> (see the Skipped tab)"
        else:
            text += " · nothing skipped"
        self.summary.setText(text)
        self.summary.setStyleSheet("")
        self._show_columns(ds)
        self.preview.clear()
        if ds.records:
            self.records_view.selectRow(0)

    def _size_columns(self) -> None:
        view, header = self.records_view, self.records_view.horizontalHeader()
        view.resizeColumnToContents(0)
        widths = (60, 400) if self.records_model.text_mode else (50, 120, 220)
        for col, width in enumerate(widths, start=1):
            header.resizeSection(col, width)

    def _show_columns(self, ds) -> None:
        tabular = Path(ds.path).suffix.lower() in TABULAR and ds.available_columns
        self.columns_box.setVisible(bool(tabular))
        if tabular:
            self._fill_columns(ds.available_columns, ds.columns or {})

    def _fill_columns(self, columns: list, mapping: dict) -> None:
        self.columns_box.show()
        for role, combo in self.column_combos.items():
            combo.clear()
            combo.addItem("(none)")
            combo.addItems([str(c) for c in columns])
            if role in mapping:
                combo.setCurrentText(mapping[role])

    # --- tokenising and previews -----------------------------------------------------

    def tokenize(self) -> None:
        """Token lengths for the histogram, once both a dataset and a model are chosen."""
        ds, info = self.state.dataset, self.state.model_info
        if ds is None or info is None:
            return
        if self._tok_task is not None:
            self._tok_task.cancel()
        cfg = self.state.config
        self.tokenized = None
        self._tok_key = (info.path, cfg.data.template, cfg.data.train_on)
        self.histogram.caption.setText(f"Counting tokens with the {info.name} tokenizer…")
        self.progress.setRange(0, max(1, len(ds.records)))
        self.progress.show()
        self._tok_task = run_task(
            self, tokenize_records, ds.records, info.path, cfg.data.template, cfg.train.seq_len,
            cfg.data.train_on, cfg.model.trust_remote_code,
            on_done=self._tokenized, on_error=self._tokenize_failed, on_progress=self._tok_progress,
        )  # fmt: skip

    def _tok_progress(self, done, total) -> None:
        self.progress.setMaximum(max(1, total))
        self.progress.setValue(done)

    def _tokenized(self, result: Tokenized) -> None:
        self._tok_task = None
        self.progress.hide()
        self.tokenized = result
        self.histogram.show_lengths(result.lengths, self.state.config.train.seq_len)
        index = self.records_view.currentIndex()
        if index.isValid() and self.tabs.currentIndex() == 0:
            self._record_selected(index)

    def _tokenize_failed(self, error) -> None:
        self._tok_task = None
        self.progress.hide()
        self.histogram.caption.setText(f"Could not tokenise with this model: {error}")

    def _config_changed(self, cfg) -> None:
        info = self.state.model_info
        if info is None or self.state.dataset is None:
            return
        # A new template or loss setting counts again (also after a failed count, which the
        # right template may fix); a new sequence length only redraws.
        if (info.path, cfg.data.template, cfg.data.train_on) != getattr(self, "_tok_key", None):
            self.tokenize()
        elif self.tokenized is not None:
            self.histogram.show_lengths(self.tokenized.lengths, cfg.train.seq_len)

    def _project_changed(self, project) -> None:
        if project is None or not project.dataset:
            self.clear("No data yet: import a file (or drop one here).")
        elif not Path(project.dataset).is_file():
            self.clear(
                f"This project's data file is missing: {project.dataset}. Import it again "
                "(or the file it was moved to).",
                error=True,
            )
        else:
            data = project.config().data
            self.import_file(project.dataset, data.format, data.columns)

    def _record_selected(self, current, _previous=None) -> None:
        if not current.isValid():
            return
        record = self.records_model.records[current.row()]
        self.pair_view.setVisible(record.is_pair)
        self.preview.setVisible(not record.is_pair)
        if record.is_pair:
            self.pair_view.show_pair(record)
            self.legend.setText(
                f"Line {record.line} · a preference pair: the model learns to prefer the "
                "answer on the left to the one on the right."
            )
            return
        if self.tokenized is None:
            self._show_plain(record)
            return
        if self._render_task is not None:
            self._render_task.cancel()
        t = self.tokenized
        self._render_task = run_task(
            self, render_record, record, t.tokenizer, t.template, self.state.config.data.train_on,
            on_done=self._rendered, on_error=self._render_failed,
        )  # fmt: skip

    def _show_plain(self, record) -> None:
        self.legend.setText(
            "Choose a model to see the exact training text, with the part the model learns from highlighted."
        )
        if record.is_text:
            self.preview.setPlainText(record.text)
        else:
            self.preview.setPlainText(
                "\n\n".join(f"[{m['role']}]\n{m['content']}" for m in record.messages)
            )

    def _rendered(self, result) -> None:
        self._render_task = None
        record, runs, n_tokens = result
        index = self.records_view.currentIndex()
        current = self.records_model.records[index.row()] if index.isValid() else None
        if self.tabs.currentIndex() != 0 or current is not record:
            return  # a stale result: the user has moved on
        self.preview.clear()
        cursor = self.preview.textCursor()
        plain, trained = QTextCharFormat(), QTextCharFormat()
        trained.setBackground(theme.trained_background())
        for text, carries_loss in runs:
            cursor.insertText(text, trained if carries_loss else plain)
        self.preview.moveCursor(QTextCursor.MoveOperation.Start)
        bg = theme.trained_background().name()
        self.legend.setText(
            f"Line {record.line} · {n_tokens:,} tokens · "
            f"<span style='background:{bg}'>&nbsp;highlighted&nbsp;</span> = the tokens the model learns from (loss)"
        )

    def _render_failed(self, error) -> None:
        self._render_task = None
        self.legend.setText(f"Could not render this record: {error}")

    def _tab_changed(self, tab: int) -> None:
        view = self.records_view if tab == 0 else self.problems_view
        index = view.currentIndex()
        if index.isValid():
            (self._record_selected if tab == 0 else self._problem_selected)(index)

    def _problem_selected(self, current, _previous=None) -> None:
        if not current.isValid():
            return
        if self._render_task is not None:
            self._render_task.cancel()
            self._render_task = None
        p = self.problems_model.problems[current.row()]
        self.pair_view.hide()
        self.preview.show()
        self.legend.setText(f"<b>Line {p.line} was skipped:</b> {p.message}")
        self.preview.setPlainText(p.raw or "(the raw line is not available)")
