"""Two parts of the Export page: the list of types (each with its expected size and what it
does to the answers), and the result panel: what a finished export wrote (from its
export.json), whether it was checked, and how to run it, with Open folder, Copy and Create in
Ollama."""

from __future__ import annotations

import shutil
from pathlib import Path

from PySide6.QtCore import QProcess, Qt, QUrl, Signal
from PySide6.QtGui import QColor, QDesktopServices, QGuiApplication, QTextOption
from PySide6.QtWidgets import (
    QGroupBox,
    QHBoxLayout,
    QHeaderView,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
)

from studio.core.export.pipeline import human
from studio.gui import export_job, theme


def warning_color() -> QColor:
    return QColor("#e3b341") if theme.is_dark() else QColor("#9a6700")


def fit_rows(tree: QTreeWidget, rows: int) -> None:
    """A fixed height for `rows` rows and the header: the layout does not jump as lists change."""
    row = tree.fontMetrics().height() + 5
    tree.setFixedHeight(tree.header().sizeHint().height() + rows * row + 2 * tree.frameWidth() + 2)


def copy_text(text: str) -> None:
    if text:
        QGuiApplication.clipboard().setText(text)


class TypeList(QTreeWidget):
    """One row per type of the chosen target (export_job.TypeRow); unusable ones greyed out."""

    def __init__(self, rows: int, parent=None):
        super().__init__(parent)
        self.setHeaderLabels(["Type", "File size", "Answers"])
        self.setRootIsDecorated(False)
        self.setUniformRowHeights(True)
        self.headerItem().setToolTip(1, "About this size: the file the type writes")
        header = self.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.ResizeToContents)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(True)
        # Tall enough for the longest list, so switching targets does not make the form jump.
        fit_rows(self, rows)

    def fill(self, rows: list[export_job.TypeRow], preferred: str) -> None:
        """List rows and select `preferred` (else the first usable row), without signals."""
        self.blockSignals(True)
        self.clear()
        chosen = None
        for row in rows:
            item = QTreeWidgetItem([row.label, human(row.size) if row.size else "—", row.note])
            item.setData(0, Qt.ItemDataRole.UserRole, row.key)
            item.setData(1, Qt.ItemDataRole.UserRole, row.size)
            item.setToolTip(2, row.note)
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            if not row.enabled:
                item.setFlags(Qt.ItemFlag.NoItemFlags)  # greyed out, not selectable
            self.addTopLevelItem(item)
            if row.enabled and (chosen is None or row.key == preferred):
                chosen = item
        if chosen is not None:
            self.setCurrentItem(chosen)
        self.blockSignals(False)

    def items(self) -> dict[str, QTreeWidgetItem]:
        found = (self.topLevelItem(i) for i in range(self.topLevelItemCount()))
        return {it.data(0, Qt.ItemDataRole.UserRole): it for it in found}

    def key(self) -> str:
        item = self.currentItem()
        return item.data(0, Qt.ItemDataRole.UserRole) if item is not None else ""

    def set_key(self, key: str) -> None:
        item = self.items().get(key)
        if item is None:
            raise ValueError(f"{key!r} is not one of the listed types")
        self.setCurrentItem(item)

    def sizes(self) -> dict[str, int | None]:
        """The expected size of each listed type, in bytes (None: unknown)."""
        return {key: it.data(1, Qt.ItemDataRole.UserRole) for key, it in self.items().items()}


class ExportResult(QGroupBox):
    log_text = Signal(str)
    """What `ollama create` prints, for the page's log."""

    def __init__(self, parent=None):
        super().__init__("Result", parent)
        self.report: dict = {}
        self.folder = ""
        self.ollama: QProcess | None = None
        self.verify_label = QLabel("")
        self.verify_label.setWordWrap(True)
        self.notes_label = QLabel("")  # e.g. "trained against the 4bit base": worth reading
        self.notes_label.setWordWrap(True)
        self.files_list = QTreeWidget()
        self.files_list.setHeaderLabels(["File", "Size"])
        self.files_list.setRootIsDecorated(False)
        header = self.files_list.header()
        header.setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        header.setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        header.setStretchLastSection(False)
        fit_rows(self.files_list, 5)  # a GGUF is one or two files, a merged folder six
        self.total_label = QLabel("")
        self.total_label.setWordWrap(True)
        self.open_button = QPushButton("Open folder")
        self.open_button.setEnabled(False)
        self.open_button.clicked.connect(self.open_folder)
        self.ollama_button = QPushButton("Create in Ollama")
        self.ollama_button.setToolTip("Runs `ollama create` with the Modelfile")
        self.ollama_button.clicked.connect(self.create_in_ollama)
        self.ollama_button.hide()
        buttons = QHBoxLayout()
        buttons.addWidget(self.total_label, 1)
        buttons.addWidget(self.ollama_button)
        buttons.addWidget(self.open_button)
        self.commands_view = QPlainTextEdit()
        self.commands_view.setReadOnly(True)
        self.commands_view.setFont(theme.mono_font())
        self.commands_view.setWordWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
        self.commands_view.setFixedHeight(self.commands_view.fontMetrics().lineSpacing() * 8 + 12)
        self.copy_button = QPushButton("Copy")
        self.copy_button.setToolTip("Copy the commands")
        self.copy_button.clicked.connect(lambda: copy_text(self.commands_view.toPlainText()))
        commands_head = QHBoxLayout()
        commands_head.addWidget(QLabel("Use it:"), 1)
        commands_head.addWidget(self.copy_button)
        layout = QVBoxLayout(self)
        layout.addWidget(self.verify_label)
        layout.addWidget(self.notes_label)
        layout.addWidget(self.files_list)
        layout.addLayout(buttons)
        layout.addLayout(commands_head)
        layout.addWidget(self.commands_view)
        self.show_report({}, "")

    def show_report(self, report: dict, folder: str) -> None:
        """Fill in a finished export ({} and "" clear the panel and hide it)."""
        self.report, self.folder = report, folder
        self.files_list.clear()
        files = report.get("files") or []
        for f in files:
            item = QTreeWidgetItem([str(f.get("name")), human(int(f.get("bytes") or 0))])
            item.setToolTip(0, f"sha256 {f.get('sha256', '')}")
            item.setTextAlignment(1, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            self.files_list.addTopLevelItem(item)
        total = sum(int(f.get("bytes") or 0) for f in files)
        count = f"{len(files)} file" + ("" if len(files) == 1 else "s")
        self.total_label.setText(f"{count}, {human(total)}" if files else "")
        self._show_verification(report.get("verification"))
        notes = report.get("notes") or []
        self.notes_label.setText("\n".join(f"Note: {n[0].upper()}{n[1:]}." for n in notes))
        self.notes_label.setVisible(bool(notes))
        self.commands_view.setPlainText("\n".join(export_job.report_commands(report)))
        self.open_button.setEnabled(bool(folder) and Path(folder).is_dir())
        self.ollama_button.setVisible(
            bool(report.get("ollama_name"))
            and shutil.which("ollama") is not None
            and (Path(folder) / "Modelfile").is_file()
        )
        self.ollama_button.setEnabled(self.ollama is None)
        self.setVisible(bool(report))

    def file_rows(self) -> list[tuple[str, str]]:
        """(name, size as shown) of each listed file."""
        items = (
            self.files_list.topLevelItem(i) for i in range(self.files_list.topLevelItemCount())
        )
        return [(it.text(0), it.text(1)) for it in items]

    def _show_verification(self, verification: dict | None) -> None:
        if not verification:
            self.verify_label.hide()
            return
        status = verification.get("status")
        where = "onnxruntime" if self.report.get("target") == "onnx" else "llama.cpp"
        detail = verification.get("summary") or verification.get("reason") or ""
        if status == "passed":
            text, color = f"✓ Checked in {where}: passed. {detail}", theme.ok_color()
        elif status == "failed":
            text, color = f"⚠ Checked in {where}: it does not match. {detail}", warning_color()
        else:
            text, color = f"Not checked: {detail}", theme.muted_color()
        self.verify_label.setStyleSheet(f"color: {color.name()}")
        self.verify_label.setText(text.strip())
        self.verify_label.show()

    def open_folder(self) -> None:
        if self.folder:
            QDesktopServices.openUrl(QUrl.fromLocalFile(self.folder))

    def create_in_ollama(self) -> None:
        """`ollama create NAME -f Modelfile` as a child; what it prints goes to the log."""
        if self.ollama is not None or not self.folder:
            return
        name = str(self.report.get("ollama_name"))
        modelfile = str(Path(self.folder) / "Modelfile")
        proc = QProcess(self)
        proc.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        proc.readyReadStandardOutput.connect(
            lambda: self.log_text.emit(
                bytes(proc.readAllStandardOutput()).decode("utf-8", "replace")
            )
        )
        proc.finished.connect(lambda code, _status: self._ollama_done(name, code))
        proc.errorOccurred.connect(
            lambda e: e == QProcess.ProcessError.FailedToStart and self._ollama_done(name, -1)
        )
        self.ollama = proc
        self.ollama_button.setEnabled(False)
        self.log_text.emit(f"$ ollama create {name} -f {modelfile}\n")
        proc.start("ollama", ["create", name, "-f", modelfile])

    def _ollama_done(self, name: str, code: int) -> None:
        if self.ollama is None:
            return
        self.ollama.deleteLater()
        self.ollama = None
        self.ollama_button.setEnabled(True)
        self.log_text.emit(
            f"created the Ollama model {name}: ollama run {name}\n"
            if code == 0
            else f"ollama create failed (exit code {code}); see above\n"
        )
