"""The main window: a sidebar of pages, a status bar (device, running job), shortcuts, and
persistence of geometry and recent projects. Pages are registrable: `add_page(name, widget)`.
"""

from __future__ import annotations

from PySide6.QtCore import QSize, QTimer
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (
    QFileDialog,
    QHBoxLayout,
    QInputDialog,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QMainWindow,
    QMessageBox,
    QStackedWidget,
    QWidget,
)

from studio.core.errors import StudioError
from studio.core.model_info import human_bytes
from studio.gui import settings, theme, workers
from studio.gui.pages.data import DataPage
from studio.gui.pages.home import HomePage
from studio.gui.pages.model import ModelPage
from studio.gui.pages.train import TrainPage
from studio.gui.state import AppState, probe_device

PAGE_ORDER = ("Home", "Data", "Model", "Train", "Chat", "Export", "Evaluate", "Settings")


def warm_up() -> tuple[tuple, object]:
    """Worker, after the first paint: import what later pages need, then probe the device.

    The plotting stack (pyqtgraph, numpy) takes 0.6 s to import; done on first opening the
    Train page, that froze the window for over a second. torch comes with the device probe.
    Returns (the device, a GpuHint when an NVIDIA GPU sits idle under a CPU-only torch).
    """
    import studio.gui.plots  # noqa: F401
    from studio.core.system import gpu_without_cuda

    return probe_device(), gpu_without_cuda()


class MainWindow(QMainWindow):
    def __init__(self, *, probe: bool = True, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Studio")
        self.state = AppState(self)
        self.pages: dict[str, QWidget] = {}
        self.wizard = None

        central = QWidget()
        row = QHBoxLayout(central)
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(0)
        self.sidebar = QListWidget()
        self.sidebar.setFixedWidth(150)
        self.sidebar.setIconSize(QSize(1, 1))
        self.sidebar.setStyleSheet(
            "QListWidget { border: none; padding-top: 8px; outline: 0; } QListWidget::item { padding: 10px 16px; }"
        )
        self.stack = QStackedWidget()
        self.stack.setContentsMargins(12, 12, 12, 12)
        row.addWidget(self.sidebar)
        row.addWidget(self.stack, 1)
        self.setCentralWidget(central)
        self.sidebar.currentRowChanged.connect(self._page_selected)

        self.home = HomePage(self.state)
        self.add_page("Home", self.home)
        self.add_page("Data", DataPage(self.state))
        self.add_page("Model", ModelPage(self.state))
        self.add_page("Train", TrainPage(self.state))
        self.pages["Train"].run_ended.connect(self._run_ended)
        from studio.gui.pages.chat import ChatPage  # no torch: it loads models on workers

        self.add_page("Chat", ChatPage(self.state))
        self.pages["Train"].chat_requested.connect(self.chat_with_run)
        from studio.gui.pages.export import ExportPage  # no torch: exports run as a child

        self.add_page("Export", ExportPage(self.state))
        from studio.gui.pages.evaluate import EvaluatePage  # no torch: it runs as a child

        self.add_page("Evaluate", EvaluatePage(self.state))
        self.pages["Train"].after_run.evaluate_requested.connect(self.evaluate_run)
        from studio.gui.pages.settings import SettingsPage  # no torch: it reads on a worker

        self.add_page("Settings", SettingsPage(self.state))
        self.pages["Settings"].model_chosen.connect(self.use_model)
        self.home.new_run_requested.connect(self.new_fine_tune)
        self.home.open_requested.connect(self.open_project_dialog)
        self.home.demo_requested.connect(self.open_demo)
        self.home.new_project_requested.connect(self.new_project_dialog)
        self.home.recent_chosen.connect(self.open_project)

        self.device_label = QLabel("Device: detecting…")
        self.job_label = QLabel("No job running")
        self.gpu_label = QLabel("")
        self.gpu_label.setStyleSheet(f"color: {theme.error_color().name()}")
        self.gpu_label.hide()
        self.statusBar().addWidget(self.job_label, 1)
        self.statusBar().addPermanentWidget(self.gpu_label)
        self.statusBar().addPermanentWidget(self.device_label)
        self.state.gpu_hint_changed.connect(self._gpu_hint_changed)
        self.state.job_changed.connect(
            lambda text: self.job_label.setText(text or "No job running")
        )
        self.state.device_changed.connect(self._device_changed)
        self._make_actions()
        self.sidebar.setCurrentRow(0)
        self._restore()
        if probe:  # after the first paint: importing torch takes a while
            QTimer.singleShot(300, self._start_probe)

    # --- pages ------------------------------------------------------------------------

    def add_page(self, name: str, widget: QWidget) -> None:
        """Add (or replace) a page; later work registers the full Train/Chat/Export pages."""
        if name in self.pages:
            old = self.pages[name]
            index = self.stack.indexOf(old)
            self.stack.removeWidget(old)
            self.stack.insertWidget(index, widget)
            old.deleteLater()
        else:
            self.stack.addWidget(widget)
            self.sidebar.addItem(QListWidgetItem(name))
        self.pages[name] = widget

    def show_page(self, name: str) -> None:
        self.sidebar.setCurrentRow(list(self.pages).index(name))

    def current_page(self) -> str:
        return list(self.pages)[self.sidebar.currentRow()]

    def _page_selected(self, row: int) -> None:
        if row >= 0:
            self.stack.setCurrentWidget(list(self.pages.values())[row])

    def _make_actions(self) -> None:
        menu = self.menuBar().addMenu("&File")
        for text, keys, slot in (
            ("&New fine-tune…", QKeySequence.StandardKey.New, self.new_fine_tune),
            ("&Open project…", QKeySequence.StandardKey.Open, self.open_project_dialog),
            ("New &project…", "Ctrl+Shift+N", self.new_project_dialog),
            ("Open the &demo project", "Ctrl+D", self.open_demo),
            (
                "&Import data…",
                "Ctrl+I",
                lambda: (self.show_page("Data"), self.pages["Data"].browse()),
            ),
            ("&Quit", QKeySequence.StandardKey.Quit, self.close),
        ):
            action = QAction(text, self)
            action.setShortcut(QKeySequence(keys))
            action.triggered.connect(slot)
            menu.addAction(action)
            self.addAction(action)
        go = self.menuBar().addMenu("&Go")
        for i, name in enumerate(PAGE_ORDER, start=1):
            action = QAction(name, self)
            action.setShortcut(QKeySequence(f"Ctrl+{i}"))
            action.triggered.connect(lambda _=False, n=name: self.show_page(n))
            go.addAction(action)
            self.addAction(action)

    # --- projects -------------------------------------------------------------------

    def open_project(self, folder: str) -> None:
        from studio.core.project import open_project

        try:
            project = open_project(folder)
        except StudioError as e:
            QMessageBox.warning(self, "Cannot open project", e.message)
            return
        self._set_project(project)

    def _set_project(self, project) -> None:
        settings.add_recent_project(project.folder)
        self.state.set_project(project)
        self.setWindowTitle(f"{project.name} — Studio")

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a project folder")
        if folder:
            self.open_project(folder)

    def new_project_dialog(self) -> None:
        from studio.core.project import create_project

        name, ok = QInputDialog.getText(self, "New project", "Project name:")
        if not ok:
            return
        try:
            self._set_project(create_project(name))
        except StudioError as e:
            QMessageBox.warning(self, "Cannot create project", e.message)

    def open_demo(self) -> None:
        from studio.core.project import demo_project

        try:
            self._set_project(demo_project())
        except StudioError as e:
            QMessageBox.warning(self, "Demo not available", e.message)

    def new_fine_tune(self) -> None:
        from studio.gui.wizard import NewRunWizard

        if self.wizard is not None:
            self.wizard.raise_()
            return
        self.wizard = NewRunWizard(self.state, self, running=self.pages["Train"].running_name)
        self.wizard.run_started.connect(self._run_started)
        self.wizard.finished.connect(self._wizard_closed)
        self.wizard.show()

    def _wizard_closed(self, _result) -> None:
        self.wizard.deleteLater()
        self.wizard = None

    def _run_started(self, run) -> None:
        if self.state.project is not None:
            settings.add_recent_project(self.state.project.folder)
            self.setWindowTitle(f"{self.state.project.name} — Studio")
        self.pages["Train"].show_run(run)
        self.state.set_job(f"Training {run.run_dir.name}")
        self.show_page("Train")
        self.home.refresh()

    def chat_with_run(self, run_dir) -> None:
        """The Train page's "Chat with it": the run's model beside its base, on the Chat page."""
        self.pages["Chat"].open_run(run_dir)
        self.show_page("Chat")

    def use_model(self, repo_id: str) -> None:
        """Settings' "Use this model": the Model page reads it (from the cache) for the project."""
        page = self.pages["Model"]
        page.source.setText(repo_id)
        page.load()
        self.show_page("Model")

    def evaluate_run(self, run_dir) -> None:
        """The Train page's "Evaluate": the run on the Evaluate page, its last report shown."""
        self.pages["Evaluate"].open_run(run_dir)
        self.show_page("Evaluate")

    # --- device -----------------------------------------------------------------------

    def _start_probe(self) -> None:
        workers.run_task(self, warm_up, on_done=self._probed, on_error=self._probe_failed)

    def _probed(self, result) -> None:
        device, hint = result
        self.state.set_device(*device)
        self.state.set_gpu_hint(hint)

    def _gpu_hint_changed(self, hint) -> None:
        self.gpu_label.setVisible(hint is not None)
        if hint is not None:
            self.gpu_label.setText(f"⚠ {hint.short}")
            self.gpu_label.setToolTip(f"{hint.text}\n{hint.command}")

    def _probe_failed(self, error) -> None:
        self.state.set_device(f"unknown ({error})", None, False)

    def _device_changed(self) -> None:
        s = self.state
        memory = (
            f" · {human_bytes(s.device_total)}" + ("" if s.on_gpu else " RAM")
            if s.device_total
            else ""
        )
        self.device_label.setText(f"Device: {s.device_name}{memory}")

    # --- persistence --------------------------------------------------------------------

    def _restore(self) -> None:
        geometry = settings.get("window/geometry")
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            self.resize(1200, 780)
        page = settings.get("window/page", "Home")
        if page in self.pages:
            self.show_page(page)

    def closeEvent(self, event) -> None:
        stop_run = False
        if self.pages["Train"].is_running():
            choice = self.ask_about_running_run()
            if choice == "cancel":
                event.ignore()
                return
            stop_run = choice == "stop"
        self.pages["Train"].shutdown(stop_run=stop_run)
        settings.put("window/geometry", self.saveGeometry())
        settings.put("window/page", self.current_page())
        settings.flush()
        if self.wizard is not None:
            self.wizard.close()
        self.shutdown()
        super().closeEvent(event)

    def ask_about_running_run(self) -> str:
        """Returns "stop", "leave" (it keeps training; reopening re-attaches) or "cancel"."""
        box = QMessageBox(self)
        box.setWindowTitle("A run is training")
        box.setText(
            "A training run is still going. Stop it (it saves a checkpoint first) or leave it running?"
        )
        stop = box.addButton("Stop the run", QMessageBox.ButtonRole.DestructiveRole)
        leave = box.addButton("Leave it running", QMessageBox.ButtonRole.AcceptRole)
        box.addButton(QMessageBox.StandardButton.Cancel)
        box.exec()
        clicked = box.clickedButton()
        return "stop" if clicked is stop else "leave" if clicked is leave else "cancel"

    def _run_ended(self, state) -> None:
        from studio.gui.notify import notify_run_ended

        notify_run_ended(self, state)

    def shutdown(self) -> None:
        """Stop timers and wait for worker threads (a training child process keeps running)."""
        self.pages["Train"].shutdown()
        workers.wait_all()
