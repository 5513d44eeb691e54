"""Start the app: `studio` / `studio gui`. `--smoke` exits after the first paint.

The first-paint time is measured from the moment the operating system created the process
(psutil's create_time), so it includes the interpreter start and every import.
"""

from __future__ import annotations

import sys
import time

from PySide6.QtCore import QEvent, QObject, QTimer


def seconds_since_process_start() -> float:
    import psutil

    return time.time() - psutil.Process().create_time()


class _FirstPaint(QObject):
    def __init__(self, on_paint):
        super().__init__()
        self.on_paint = on_paint
        self.seen = False

    def eventFilter(self, obj, event) -> bool:
        if event.type() == QEvent.Type.Paint and not self.seen:
            self.seen = True
            self.on_paint()
        return False


def open_initial_project(window, project: str | None) -> None:
    """The project given on the command line, else the last one used, else the demo.

    A data file given instead of a project (`studio data.jsonl`, or opened from a file
    manager) is imported on the Data page of the project that would open otherwise."""
    from pathlib import Path

    from studio.gui import settings

    if project and Path(project).is_file():
        open_initial_project(window, None)
        window.pages["Data"].import_file(str(Path(project).resolve()))
        window.show_page("Data")
        return
    if project:
        window.open_project(project)
        return
    recent = [p for p in settings.recent_projects() if (Path(p) / "project.yaml").is_file()]
    if recent:
        window.open_project(recent[0])
    else:
        window.open_demo()


def set_desktop_identity(app) -> None:
    """The name that ties the windows to the menu entry (Wayland and taskbars group by it)
    and the icon, drawn from the SVG at every size."""
    from PySide6.QtGui import QIcon

    from studio import desktop

    app.setDesktopFileName(desktop.APP_ID)
    if desktop.icon_svg().is_file():
        app.setWindowIcon(QIcon(str(desktop.icon_svg())))


def main(argv: list[str] | None = None, *, smoke: bool = False, project: str | None = None) -> int:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication
    from PySide6.QtWidgets import QApplication

    from studio.gui import theme, workers

    QGuiApplication.setHighDpiScaleFactorRoundingPolicy(
        Qt.HighDpiScaleFactorRoundingPolicy.PassThrough
    )
    app = QApplication.instance() or QApplication(sys.argv[:1] + list(argv or []))
    app.setApplicationName("Studio")
    app.setOrganizationName("Studio")
    set_desktop_identity(app)
    theme.apply_scheme(app)
    workers.collect_garbage_in_gui_thread()
    workers.collect_garbage_in_gui_thread()

    from studio.gui.main_window import MainWindow

    window = MainWindow(probe=not smoke)
    result = {"painted": None}
    if smoke:

        def painted():
            result["painted"] = seconds_since_process_start()
            QTimer.singleShot(0, app.quit)

        watcher = _FirstPaint(painted)
        window.installEventFilter(watcher)
        QTimer.singleShot(15000, app.quit)  # never hang a CI job
    window.show()
    if not smoke:
        # After the first paint: the window shows at once, the project fills in a moment later.
        QTimer.singleShot(0, lambda: open_initial_project(window, project))
    code = app.exec()
    if smoke:
        window.shutdown()
        if result["painted"] is None:
            print("first paint: never happened", file=sys.stderr)
            return 1
        print(f"first paint: {result['painted']:.3f} s")
        return 0
    return code
