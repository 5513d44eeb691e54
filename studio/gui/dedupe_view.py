"""The Data page's clean-up dialog: find repeated rows (exact and near copies), drop rows by
length or language, and save a cleaned copy as a new file (the original is never touched),
which the Data page then imports.

Finding runs the core's clean-up (studio.core.data.clean, a dry run: nothing is written) on a
worker thread through the workers bridge, with its stages and an ETA. The clusters stand in a
tree: each one's lines, whether they are exact or near copies and how alike, the line kept
(the first) and the ones dropped; untick a cluster to keep all of its rows. Saving writes the
rows kept with the core's write_clean (byte for byte from a JSONL file).
"""

from __future__ import annotations

import dataclasses
from html import escape
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QSpinBox,
    QSplitter,
    QTextEdit,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from studio.gui import theme
from studio.gui.export_job import eta_text
from studio.gui.generate_job import data_folder, free_path
from studio.gui.workers import Cancelled, run_task

STAGES = {
    "loading": "Reading the file",
    "filtering": "Checking lengths and languages",
    "normalising": "Comparing the texts",
    "hashing": "Looking for near copies",
    "comparing": "Checking the near copies",
    "writing": "Writing the cleaned copy",
}
LANGUAGE_NAMES = {
    "en": "English", "fr": "French", "de": "German", "es": "Spanish", "it": "Italian",
    "pt": "Portuguese", "nl": "Dutch", "ru": "Russian", "uk": "Ukrainian", "el": "Greek",
    "ar": "Arabic", "he": "Hebrew", "hi": "Hindi", "th": "Thai", "ko": "Korean",
    "ja": "Japanese", "zh": "Chinese",
}  # fmt: skip
DATA_FILTER = "Data (*.jsonl *.json *.csv *.tsv *.parquet *.txt);;All files (*)"
LINE = Qt.ItemDataRole.UserRole


# --- on worker threads -------------------------------------------------------------------------


def find_copies(opts, dataset=None, progress=None):
    """Worker: (dataset, CleanReport) of a dry run of the core's clean-up (nothing written).
    `dataset` is the file already imported on the Data page, or None to read it here."""
    from studio.core.data.clean import clean_events
    from studio.core.data.formats import load_dataset
    from studio.core.errors import DataError
    from studio.core.events import Done, Failed, Progress

    if dataset is None:
        dataset = load_dataset(opts.input, opts.format, opts.columns)
    events = clean_events(dataclasses.replace(opts, dry_run=True))
    try:
        while True:
            try:
                ev = next(events)
            except StopIteration as stop:
                return dataset, stop.value
            if isinstance(ev, Progress) and progress is not None:
                progress(ev, None)  # raises Cancelled once the dialog cancels
            elif isinstance(ev, Failed):
                raise DataError(ev.message)
            elif isinstance(ev, Done) and ev.status != "completed":
                raise Cancelled()
    finally:
        events.close()


def save_copy(dataset, keep_lines: list[int], path: str) -> str:
    """Worker: the rows kept, as a new file (the core refuses to write over the source)."""
    from studio.core.data.clean import write_clean

    return str(write_clean(dataset, keep_lines, path))


def diff_html(kept: str, other: str, color: str) -> str:
    """`other` as HTML with the words that differ from `kept` on a coloured background."""
    import difflib

    a, b = kept.split(" "), other.split(" ")
    out = []
    for op, _i1, _i2, j1, j2 in difflib.SequenceMatcher(None, a, b, autojunk=False).get_opcodes():
        words = escape(" ".join(b[j1:j2]))
        if words:
            out.append(
                words if op == "equal" else f'<span style="background:{color}">{words}</span>'
            )
    return " ".join(out)


def record_text(record) -> str:
    from studio.core.data.dedupe import record_text as text

    return text(record)


# --- the dialog ----------------------------------------------------------------------------------


class DedupeDialog(QDialog):
    saved = Signal(str)
    """A cleaned copy was written (its path): the Data page imports it."""
    found = Signal()
    """A search ended (found, failed or cancelled)."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Find duplicates and clean up")
        self.state = state
        self.task = None
        self.dataset = None
        self.report = None
        self.by_line: dict[int, object] = {}
        self.filtered: dict[int, str] = {}
        self._seen = None
        split = QSplitter(Qt.Orientation.Horizontal)
        split.addWidget(self._settings_column())
        split.addWidget(self._result_column())
        split.setStretchFactor(0, 2)
        split.setStretchFactor(1, 3)
        split.setChildrenCollapsible(False)
        layout = QVBoxLayout(self)
        layout.addWidget(split, 1)
        self.resize(1200, 720)
        self.refill()

    def _settings_column(self) -> QWidget:
        self.file_edit = QLineEdit()
        self.file_edit.setPlaceholderText("The data file to clean up")
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        file_row = QHBoxLayout()
        file_row.addWidget(self.file_edit, 1)
        file_row.addWidget(browse)
        copies = QGroupBox("Repeated rows")
        self.near_box = QCheckBox("Also rows that are almost the same (a few words differ)")
        self.near_box.setChecked(True)
        self.similar = QSpinBox()
        self.similar.setRange(50, 100)
        self.similar.setValue(80)
        self.similar.setSuffix(" % alike")
        self.similar.setToolTip("Share of word triples two rows have in common (Jaccard)")
        self.near_box.toggled.connect(self.similar.setEnabled)
        cf = QFormLayout(copies)
        cf.addRow(self.near_box)
        cf.addRow("Almost the same from:", self.similar)
        cf.addRow(QLabel("Of each group of copies the first row is kept."))
        filters = QGroupBox("Filters (optional)")
        self.min_chars = self._limit("no minimum")
        self.max_chars = self._limit("no maximum")
        self.language = QComboBox()
        self.language.addItem("Any language", "")
        for code, name in LANGUAGE_NAMES.items():
            self.language.addItem(f"{name} ({code})", code)
        ff = QFormLayout(filters)
        ff.addRow("Drop answers shorter than:", self.min_chars)
        ff.addRow("Drop answers longer than:", self.max_chars)
        ff.addRow("Keep only rows in:", self.language)
        self.find_button = QPushButton("Find duplicates")
        self.find_button.setDefault(True)
        self.find_button.clicked.connect(self.find)
        self.cancel_button = QPushButton("Cancel")
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.cancel_button)
        buttons.addWidget(self.find_button)
        self.form = QWidget()
        inner = QVBoxLayout(self.form)
        inner.setContentsMargins(0, 0, 0, 0)
        inner.addWidget(QLabel("File:"))
        inner.addLayout(file_row)
        inner.addWidget(copies)
        inner.addWidget(filters)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(0, 0, 8, 0)
        layout.addWidget(self.form)
        layout.addLayout(buttons)
        layout.addStretch(1)
        return column

    def _limit(self, none: str) -> QSpinBox:
        box = QSpinBox()
        box.setRange(0, 10_000_000)
        box.setSuffix(" characters")
        box.setSpecialValueText(none)  # 0: the filter is off
        return box

    def _result_column(self) -> QWidget:
        self.stage_label = QLabel("Choose what to look for, then Find duplicates.")
        self.stage_label.setWordWrap(True)
        self.progress = QProgressBar()
        self.progress.hide()
        self.summary = QLabel("")
        self.summary.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(["Rows", "Copies", "Alike", "Text"])
        self.tree.setAlternatingRowColors(True)
        self.tree.currentItemChanged.connect(lambda *_: self._show_current())
        self.tree.itemChanged.connect(lambda *_: self._count())
        self.detail = QTextEdit()
        self.detail.setReadOnly(True)
        self.detail.setPlaceholderText("Select a group to read its rows one under the other.")
        split = QSplitter(Qt.Orientation.Vertical)
        split.addWidget(self.tree)
        split.addWidget(self.detail)
        split.setSizes([380, 200])
        self.save_button = QPushButton("Save cleaned copy")
        self.save_button.setEnabled(False)
        self.save_button.setToolTip("Write the rows kept to a new file and import it")
        self.save_button.clicked.connect(self.save)
        save_row = QHBoxLayout()
        self.keep_label = QLabel("")
        self.keep_label.setWordWrap(True)
        save_row.addWidget(self.keep_label, 1)
        save_row.addWidget(self.save_button)
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(8, 0, 0, 0)
        layout.addWidget(self.stage_label)
        layout.addWidget(self.progress)
        layout.addWidget(self.summary)
        layout.addWidget(split, 1)
        layout.addLayout(save_row)
        return column

    # --- the form ---------------------------------------------------------------------------

    def refill(self) -> None:
        """The Data page's file, when it is another than the last one seen."""
        ds = self.state.dataset
        if ds is not None and ds is not self._seen:
            self.file_edit.setText(ds.path)
        self._seen = ds

    def _browse(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Data file to clean up", "", DATA_FILTER)
        if path:
            self.file_edit.setText(path)

    def options(self):
        from studio.core.data.clean import CleanOptions
        from studio.core.data.dedupe import DedupeOptions
        from studio.core.data.filters import FilterOptions

        path = self.file_edit.text().strip()
        ds = self._imported(path)
        code = self.language.currentData()
        return CleanOptions(
            input=path,
            format=ds.format if ds is not None else "auto",
            columns=ds.columns if ds is not None else None,
            dedupe=DedupeOptions(
                threshold=self.similar.value() / 100, exact_only=not self.near_box.isChecked()
            ),
            filters=FilterOptions(
                min_chars=self.min_chars.value(),
                max_chars=self.max_chars.value(),
                languages=(code,) if code else (),
            ),
        )

    def _imported(self, path: str):
        """The Data page's dataset when it is this file (no need to read it again)."""
        ds = self.state.dataset
        same = ds is not None and path and Path(ds.path).resolve() == Path(path).resolve()
        return ds if same else None

    # --- finding ------------------------------------------------------------------------------

    def find(self) -> None:
        if self.task is not None:
            return
        try:
            opts = self.options()
        except ValueError as e:  # a minimum above the maximum...
            theme.show_status(self.summary, str(e), "error")
            return
        if not opts.input:
            theme.show_status(self.summary, "Choose the file to clean up.", "error")
            return
        self._busy(True)
        self.stage_label.setText("Starting…")
        self.task = run_task(
            self, find_copies, opts, self._imported(opts.input),
            on_done=self._found, on_error=self._failed, on_progress=self._progressed,
        )  # fmt: skip

    def _busy(self, on: bool) -> None:
        self.form.setEnabled(not on)
        self.find_button.setEnabled(not on)
        self.cancel_button.setEnabled(on)
        self.save_button.setEnabled(not on and self.report is not None)
        self.progress.setVisible(on)
        if on:
            self.progress.setRange(0, 0)
            self.summary.clear()

    def _progressed(self, ev, _total) -> None:
        words = STAGES.get(ev.stage, ev.stage.capitalize())
        text = f"{words}: {ev.done:,} of {ev.total:,}" if ev.total > 1 else f"{words}…"
        eta = eta_text(ev.eta_s)
        self.stage_label.setText(f"{text} · {eta}" if eta else text)
        self.progress.setRange(0, max(1, ev.total))
        self.progress.setValue(min(ev.done, ev.total))

    def _found(self, result) -> None:
        self.task = None
        self.dataset, self.report = result
        self.by_line = {r.line: r for r in self.dataset.records}
        self.filtered = dict(self.report.filtered)  # line -> why (pairs in the report)
        self._busy(False)
        self.stage_label.setText(f"Done in {self.report.seconds:.1f} s.")
        self._fill_tree()
        self.found.emit()

    def _failed(self, error) -> None:
        self.task = None
        self._busy(False)
        self.stage_label.setText("Failed.")
        theme.show_status(self.summary, str(error), "error")
        self.found.emit()

    def cancel(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None
            self._busy(False)
            self.stage_label.setText("Cancelled.")
            self.found.emit()

    # --- the result -----------------------------------------------------------------------------

    def _fill_tree(self) -> None:
        r = self.report
        self.tree.blockSignals(True)
        self.tree.clear()
        for n, cluster in enumerate(r.clusters, 1):
            self.tree.addTopLevelItem(self._cluster_item(n, cluster))
        if self.filtered:
            group = QTreeWidgetItem([f"Filtered out: {len(self.filtered):,}", "", "", ""])
            for line, why in sorted(self.filtered.items()):
                child = QTreeWidgetItem([f"Line {line}", "dropped", "", why])
                child.setData(0, LINE, line)
                group.addChild(child)
            self.tree.addTopLevelItem(group)
        self.tree.blockSignals(False)
        for col, width in enumerate((210, 90, 60)):
            self.tree.setColumnWidth(col, width)
        exact = sum(c.kind == "exact" for c in r.clusters)
        self.summary.setText(
            f"<b>{r.records:,}</b> rows in {Path(r.path).name}: <b>{len(r.clusters):,}</b> groups "
            f"of copies ({exact:,} exact, {len(r.clusters) - exact:,} near) and "
            f"<b>{len(self.filtered):,}</b> {'row' if len(self.filtered) == 1 else 'rows'} "
            "filtered out." + ("" if r.clusters or self.filtered else " Nothing to clean up.")
        )
        self._count()
        if self.tree.topLevelItemCount():
            self.tree.setCurrentItem(self.tree.topLevelItem(0))

    def _cluster_item(self, n: int, cluster) -> QTreeWidgetItem:
        lines = ", ".join(str(x) for x in cluster.lines[:6])
        more = f", … ({len(cluster.lines)} rows)" if len(cluster.lines) > 6 else ""
        alike = f"{cluster.similarity:.0%}" if cluster.kind == "near" else "100%"
        first = self._text(cluster.keep)
        item = QTreeWidgetItem([f"{n}. lines {lines}{more}", cluster.kind, alike, first])
        item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
        item.setCheckState(0, Qt.CheckState.Checked)
        item.setToolTip(0, "Ticked: keep the first row and drop its copies")
        item.setData(0, LINE, cluster)
        for line in cluster.lines:
            kept = line == cluster.keep
            child = QTreeWidgetItem(
                [f"Line {line}", "kept" if kept else "dropped", "", self._text(line)]
            )
            child.setData(0, LINE, line)
            if not kept:
                child.setForeground(1, theme.error_color())
            item.addChild(child)
        return item

    def _text(self, line: int, width: int = 140) -> str:
        record = self.by_line.get(line)
        text = " ".join(record_text(record).split()) if record is not None else ""
        return text if len(text) <= width else text[: width - 1] + "…"

    def dropped_lines(self) -> set[int]:
        """The lines the cleaned copy leaves out: filtered rows and the copies of every
        ticked group."""
        out = set(self.filtered)
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            cluster = item.data(0, LINE)
            if hasattr(cluster, "drop") and item.checkState(0) == Qt.CheckState.Checked:
                out.update(cluster.drop)
        return out

    def _count(self) -> None:
        if self.report is None:
            return
        drop = self.dropped_lines()
        kept = sum(1 for line in self.by_line if line not in drop)
        self.keep_label.setText(
            f"The cleaned copy keeps {kept:,} of {len(self.by_line):,} rows "
            f"({len(drop):,} dropped); {Path(self.report.path).name} itself is not changed."
        )
        self.save_button.setEnabled(self.task is None)

    def _show_current(self) -> None:
        """The selected group's rows one under the other, the words where a near copy
        differs from the row kept highlighted (or the one filtered row)."""
        item = self.tree.currentItem()
        if item is None:
            self.detail.clear()
            return
        cluster = (item.parent() or item).data(0, LINE)
        if hasattr(cluster, "lines"):
            lines, keep = cluster.lines, cluster.keep
        else:
            line = item.data(0, LINE)
            lines, keep = ([line] if isinstance(line, int) else []), None
        texts = {n: record_text(self.by_line[n]) if n in self.by_line else "" for n in lines}
        mark = theme.trained_background().name()
        parts = []
        for n in lines:
            head = f"line {n}" + (" (kept)" if n == keep else "")
            body = (
                escape(texts[n])
                if n == keep or keep is None
                else diff_html(texts[keep], texts[n], mark)
            )
            parts.append(f"<p><b>{head}</b><br>{body.replace(chr(10), '<br>')}</p>")
        self.detail.setHtml("".join(parts))

    # --- saving -------------------------------------------------------------------------------

    def save(self) -> None:
        if self.report is None or self.task is not None:
            return
        drop = self.dropped_lines()
        keep = [r.line for r in self.dataset.records if r.line not in drop]
        stem = f"{Path(self.report.path).stem}.clean"
        path = free_path(data_folder(self.state.project), stem)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._busy(True)
        self.stage_label.setText(STAGES["writing"] + "…")
        self.task = run_task(
            self, save_copy, self.dataset, keep, str(path),
            on_done=self._saved, on_error=self._failed,
        )  # fmt: skip

    def _saved(self, path: str) -> None:
        self.task = None
        self._busy(False)
        self.stage_label.setText("Saved.")
        theme.show_status(self.summary, f"Saved the cleaned copy to {path}; importing it.", "ok")
        self.saved.emit(path)

    def closeEvent(self, event) -> None:
        self.cancel()
        super().closeEvent(event)


def open_dedupe(page) -> DedupeDialog:
    """The Data page's "Find duplicates…": one dialog per page; a saved copy is imported."""
    dialog = getattr(page, "dedupe_dialog", None)
    if dialog is None:
        dialog = page.dedupe_dialog = DedupeDialog(page.state, page)
        dialog.saved.connect(page.import_file)
    dialog.refill()
    dialog.show()
    dialog.raise_()
    return dialog
