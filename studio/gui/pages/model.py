"""The Model page: choose a local folder, a hub id or a cached model; show its facts and
the memory estimate for the current settings. Reading metadata runs off the GUI thread.
"""

from __future__ import annotations

import threading

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QComboBox,
    QFileDialog,
    QFormLayout,
    QGroupBox,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QProgressBar,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from studio.core import hub, model_info
from studio.gui import settings, theme
from studio.gui.memory_view import MemoryView
from studio.gui.workers import run_task


def _read_info(source: str, allow_network: bool):
    return model_info.read_model_info(source, allow_network=allow_network)


def _download(source: str, allow_pickle: bool, trust_remote_code: bool, cancel, progress):
    """The whole model into the Hugging Face cache (weights too); progress("download", p)."""
    return hub.ensure_model(
        source,
        allow_pickle=allow_pickle,
        trust_remote_code=trust_remote_code,
        on_progress=lambda p: progress("download", p),
        cancel=cancel,
    )


class ModelPage(QWidget):
    loaded = Signal(object)
    """Emitted with the ModelInfo when a model's details have been read."""

    def __init__(self, state, parent=None):
        super().__init__(parent)
        self.state = state
        self._task = None
        layout = QVBoxLayout(self)
        heading = QLabel("Model")
        heading.setFont(theme.title_font())
        layout.addWidget(heading)

        choose = QGroupBox("Choose a model")
        cl = QFormLayout(choose)
        row = QHBoxLayout()
        self.source = QLineEdit()
        self.source.setPlaceholderText(
            "A model folder, or a Hugging Face hub id such as Qwen/Qwen2.5-0.5B-Instruct"
        )
        self.source.returnPressed.connect(self.load)
        browse = QPushButton("Folder…")
        browse.clicked.connect(self.browse)
        self.load_button = QPushButton("Show details")
        self.load_button.clicked.connect(self.load)
        self.fetch_button = QPushButton("Fetch from hub")
        self.fetch_button.setToolTip(
            "Download the config and tokenizer files of a hub id (needs the internet)"
        )
        self.fetch_button.clicked.connect(lambda: self.load(allow_network=True))
        self.download_button = QPushButton("Download")
        self.download_button.setToolTip(
            "Download a hub model whole (weights too) into the Hugging Face cache, showing "
            "its progress; a cancelled download keeps the files fetched whole"
        )
        self.download_button.clicked.connect(self.download)
        for w in (self.source, browse, self.load_button, self.fetch_button, self.download_button):
            row.addWidget(w, 1 if w is self.source else 0)
        cl.addRow("Folder or hub id", row)
        download_row = QHBoxLayout()
        self.download_bar = QProgressBar()
        self.download_bar.setRange(0, 1000)  # per mille: bytes overflow the bar's int
        self.download_label = QLabel("")
        self.download_label.setWordWrap(True)
        self.download_cancel = QPushButton("Cancel")
        self.download_cancel.clicked.connect(self.cancel_download)
        download_row.addWidget(self.download_bar, 1)
        download_row.addWidget(self.download_label, 2)
        download_row.addWidget(self.download_cancel)
        for w in (self.download_bar, self.download_label, self.download_cancel):
            w.hide()
        cl.addRow(download_row)
        self.cache = QComboBox()
        self.cache.addItem("Looking in the Hugging Face cache…")
        self.cache.setEnabled(False)
        self.cache.activated.connect(self._cache_chosen)
        cl.addRow("Already downloaded", self.cache)
        layout.addWidget(choose)

        self.busy = QProgressBar()
        self.busy.setRange(0, 0)
        self.busy.setMaximumHeight(8)
        self.busy.setTextVisible(False)
        self.busy.hide()
        layout.addWidget(self.busy)
        self.error = QLabel("")
        self.error.setWordWrap(True)
        self.error.setStyleSheet(f"color: {theme.error_color().name()}")
        self.error.hide()
        layout.addWidget(self.error)

        facts = QGroupBox("About this model")
        fl = QFormLayout(facts)
        self.fields: dict[str, QLabel] = {}
        for key in (
            "Architecture",
            "Parameters",
            "Context length",
            "Chat template",
            "LoRA targets",
            "Notes",
        ):
            label = QLabel("—")
            label.setWordWrap(True)
            label.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
            self.fields[key] = label
            fl.addRow(key, label)
        layout.addWidget(facts)

        mem = QGroupBox("Memory needed to train")
        ml = QVBoxLayout(mem)
        self.memory = MemoryView()
        ml.addWidget(self.memory)
        layout.addWidget(mem)
        layout.addStretch(1)

        state.config_changed.connect(self.update_estimate)
        state.device_changed.connect(self.update_estimate)
        state.project_changed.connect(self._project_changed)
        state.model_changed.connect(self._model_changed)
        self._shown = None  # the ModelInfo on show
        self._download_task = None
        self._previous_job = ""
        self._download_stop: threading.Event | None = None
        self._download_source = ""
        run_task(
            self,
            model_info.list_cached_models,
            on_done=self._cache_listed,
            on_error=self._cache_failed,
        )
        last = state.config.model.path or settings.get("model/last", "")
        if last:
            self.source.setText(str(last))

    # --- choosing -------------------------------------------------------------------

    def browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Choose a model folder (with config.json)")
        if folder:
            self.source.setText(folder)
            self.load()

    def _cache_listed(self, models) -> None:
        self.cache.clear()
        if not models:
            self.cache.addItem("No models in the local Hugging Face cache")
            self.cache.setEnabled(False)
            return
        self.cache.addItem("Choose a downloaded model…", None)
        for m in models:
            self.cache.addItem(f"{m.repo_id}  ({model_info.human_bytes(m.size_bytes)})", m.repo_id)
        self.cache.setEnabled(True)

    def _cache_failed(self, _error) -> None:
        self._cache_listed([])

    def _cache_chosen(self, index: int) -> None:
        repo = self.cache.itemData(index)
        if repo:
            self.source.setText(repo)
            self.load()

    def _project_changed(self, project) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
            self.busy.hide()
            self.load_button.setEnabled(True)
        if project is not None and project.model:
            self.source.setText(project.model)
            self.load()
        else:  # nothing of the previous project's model stays on show
            self.source.setText("")
            self.clear()

    def _model_changed(self, info) -> None:
        """Show a model chosen elsewhere (the wizard) unless it is the one on show."""
        if info is not None and info is not self._shown:
            self.source.setText(info.source)
            self.show_info(info)

    def clear(self) -> None:
        self._shown = None
        self.error.hide()
        for label in self.fields.values():
            label.setText("—")
        self.memory.clear()

    def load(self, allow_network: bool = False) -> None:
        source = self.source.text().strip()
        if not source:
            self._show_error("Choose a model folder or type a hub id first.")
            return
        if self._task is not None:
            self._task.cancel()
        self.error.hide()
        self.busy.show()
        self.load_button.setEnabled(False)
        self._task = run_task(
            self, _read_info, source, allow_network, on_done=self._loaded, on_error=self._failed
        )

    def _loaded(self, info) -> None:
        self._task = None
        self.busy.hide()
        self.load_button.setEnabled(True)
        settings.put("model/last", info.source)
        self.show_info(info)
        self.state.set_model(info)
        self.loaded.emit(info)

    def _failed(self, error) -> None:
        self._task = None
        self.busy.hide()
        self.load_button.setEnabled(True)
        self._show_error(str(error))

    def _show_error(self, text: str) -> None:
        self.error.setText(text)
        self.error.show()

    # --- downloading ----------------------------------------------------------------

    def download(self) -> None:
        """Download the hub id's files the loader needs, with the bytes shown and Cancel."""
        source = self.source.text().strip()
        if not hub.is_hub_id(source):
            self._show_error(
                "Download takes a Hugging Face hub id such as Qwen/Qwen2.5-0.5B-Instruct; "
                "a model folder is on this computer already."
            )
            return
        self.error.hide()
        model = self.state.config.model
        self._download_stop = threading.Event()
        self._download_source = source
        self._download_task = run_task(
            self,
            _download,
            source,
            model.allow_pickle,
            model.trust_remote_code,
            self._download_stop,
            on_done=self._downloaded,
            on_error=self._download_failed,
            on_progress=self._download_progress,
        )
        self.download_bar.setValue(0)
        self.download_label.setText(f"Looking up {source} on the hub…")
        for w in (self.download_bar, self.download_label, self.download_cancel):
            w.show()
        self.download_button.setEnabled(False)
        self._previous_job = self.state.job  # a training run may be going: it is said again after
        self.state.set_job(f"Downloading {source}")

    def _download_progress(self, _kind, p) -> None:
        if self._download_task is None:  # a late report of a cancelled download
            return
        self.download_bar.setValue(int(1000 * p.fraction))
        self.download_bar.setFormat(f"{100 * p.fraction:.0f}%")
        where = f"{p.file}: " if p.file else ""
        self.download_label.setText(f"{where}{hub.bytes_text(p.done, p.total)}")

    def cancel_download(self) -> None:
        """Stop within one chunk; the files fetched whole stay in the cache."""
        if self._download_task is None:
            return
        self._download_stop.set()
        self._download_task.cancel()  # ends quietly: no _downloaded, no _download_failed
        self._download_ended()
        self.download_label.setText(
            "Download cancelled. The files fetched whole stay in the cache; Download fetches "
            "the rest."
        )

    def _download_ended(self) -> None:
        self._download_task = None
        self.state.set_job(self._previous_job)
        self.download_bar.hide()
        self.download_cancel.hide()
        self.download_button.setEnabled(True)

    def _downloaded(self, folder) -> None:
        self._download_ended()
        self.download_label.setText(f"Downloaded to {folder}")
        run_task(
            self,
            model_info.list_cached_models,
            on_done=self._cache_listed,
            on_error=self._cache_failed,
        )
        if self.source.text().strip() == self._download_source:
            self.load()  # its details, from the cache now (unless another model was chosen)

    def _download_failed(self, error) -> None:
        self._download_ended()
        self.download_label.hide()
        self._show_error(str(error))

    # --- showing --------------------------------------------------------------------

    def show_info(self, info) -> None:
        self._shown = info
        f = self.fields
        f["Architecture"].setText(
            f"{info.architecture or '?'} ({info.model_type or 'unknown type'})"
        )
        f["Parameters"].setText(
            f"{info.num_params / 1e6:,.1f} M ({info.num_layers} layers, hidden size {info.hidden_size})"
        )
        f["Context length"].setText(
            f"{info.context_length:,} tokens" if info.context_length else "not stated"
        )
        f["Chat template"].setText(
            "yes, from the tokenizer"
            if info.chat_template
            else "no: conversations need a built-in one (the wizard picks ChatML)"
        )
        f["LoRA targets"].setText(", ".join(info.target_modules) or "none found")
        f["Notes"].setText("\n".join(info.notes) or "—")
        self.update_estimate()

    def update_estimate(self, *_args) -> None:
        info = self.state.model_info
        if info is None:
            return
        self.memory.show_estimate(info, self.state.config, self.state)
