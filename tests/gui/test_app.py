"""Start-up: no torch before the window shows, the smoke first paint, pages, shortcuts and
persistence."""

import os
import re
import subprocess
import sys

from PySide6.QtCore import Qt

from studio.core import paths
from studio.core.project import create_project

NO_TORCH = """
import sys
import studio.gui
from PySide6.QtWidgets import QApplication
from studio.gui.main_window import MainWindow
app = QApplication([])
w = MainWindow(probe=False)
w.show()
app.processEvents()
before = [m for m in ('torch', 'transformers') if m in sys.modules]
from studio.gui import workers
workers.wait_all()
w.close()
print(before, 'pyqtgraph' in sys.modules)
"""


def _env(studio_home):
    return dict(os.environ, STUDIO_HOME=str(studio_home), QT_QPA_PLATFORM="offscreen")


def test_gui_and_main_window_do_not_import_torch(studio_home):
    out = subprocess.run(
        [sys.executable, "-c", NO_TORCH],
        capture_output=True,
        text=True,
        env=_env(studio_home),
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].strip() == "[] False"  # no torch, and no pyqtgraph either


WARM_UP = """
import sys
from PySide6.QtWidgets import QApplication
from studio.gui.main_window import MainWindow
app = QApplication([])
w = MainWindow(probe=True)
w.show()
while "detecting" in w.device_label.text():
    app.processEvents()
print("plots" if "studio.gui.plots" in sys.modules else "no plots", "train" if w.pages["Train"].isVisible() else "")
from studio.gui import workers
workers.wait_all()
w.close()
"""


def test_plotting_stack_is_imported_in_the_background_before_the_train_page_opens(studio_home):
    # Importing pyqtgraph on first opening the Train page froze the window for 0.6-1.2 s.
    out = subprocess.run(
        [sys.executable, "-c", WARM_UP], capture_output=True, text=True,
        env=_env(studio_home), timeout=120,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[0].strip() == "plots"


def test_smoke_prints_first_paint_under_budget(studio_home):
    times = []
    for _ in range(2):  # one retry: the CI machine is shared
        out = subprocess.run(
            [sys.executable, "-m", "studio", "gui", "--smoke"],
            capture_output=True,
            text=True,
            env=_env(studio_home),
            timeout=120,
        )
        assert out.returncode == 0, out.stderr
        match = re.search(r"first paint: (\d+\.\d+) s", out.stdout)
        assert match, out.stdout
        times.append(float(match.group(1)))
        if times[-1] < 1.5:
            break
    assert 0 < min(times) < 1.5, times


def test_every_page_opens(window, qtbot):
    assert list(window.pages) == [
        "Home",
        "Data",
        "Model",
        "Train",
        "Chat",
        "Export",
        "Evaluate",
        "Settings",
    ]
    for name, page in window.pages.items():
        window.show_page(name)
        qtbot.wait(10)
        assert window.stack.currentWidget() is page and page.isVisible()
        assert window.current_page() == name


def test_shortcuts_switch_pages(window, qtbot):
    for i, name in enumerate(
        ["Home", "Data", "Model", "Train", "Chat", "Export", "Evaluate", "Settings"], start=1
    ):
        qtbot.keyClick(window, getattr(Qt.Key, f"Key_{i}"), Qt.KeyboardModifier.ControlModifier)
        assert window.current_page() == name
    qtbot.keyClick(window, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.wizard is not None and window.wizard.isVisible()
    window.wizard.reject()


def test_add_page_registers_and_replaces(window):
    from PySide6.QtWidgets import QLabel

    extra = QLabel("extra")
    window.add_page("Extra", extra)
    window.show_page("Extra")
    assert window.stack.currentWidget() is extra and window.sidebar.count() == 9
    chat = QLabel("real chat page")
    window.add_page("Chat", chat)
    assert window.pages["Chat"] is chat and window.sidebar.count() == 9
    window.show_page("Chat")
    assert window.stack.currentWidget() is chat


def test_geometry_page_and_recent_projects_persist(qtbot, studio_home, tmp_path):
    from studio.gui import settings
    from studio.gui.main_window import MainWindow

    project = create_project("Persisted", tmp_path)
    w = MainWindow(probe=False)
    qtbot.addWidget(w)
    w.show()
    w.resize(760, 580)
    w.open_project(str(project.folder))
    w.show_page("Model")
    size = (w.width(), w.height())
    assert "Persisted" in w.windowTitle()
    w.close()
    assert paths.settings_file().is_file() and paths.settings_file().is_relative_to(studio_home)
    assert settings.recent_projects() == [str(project.folder)]
    w2 = MainWindow(probe=False)
    qtbot.addWidget(w2)
    assert w2.height() == size[1]  # the width is clamped to the 800-pixel offscreen screen
    assert w2.current_page() == "Model"
    assert w2.home.recent.item(0).text() == str(project.folder)
    w2.close()


def test_device_probe_fills_the_status_bar(qtbot):
    from studio.gui.main_window import MainWindow

    w = MainWindow(probe=True)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitUntil(lambda: "detecting" not in w.device_label.text(), timeout=60000)
    assert re.search(r"Device: (CPU|.+) · \d", w.device_label.text())
    assert w.state.device_total and w.state.device_total > 0
    w.close()


def test_home_opens_projects_and_lists_cli_runs(window, qtbot, tmp_path, monkeypatch):
    from studio.core.config import RunConfig

    project = create_project("With runs", tmp_path)
    run = project.runs_dir / "from-cli"
    run.mkdir()
    RunConfig(output=str(run)).save(run / "run.yaml")
    (run / "events.jsonl").write_text(
        '{"type": "start", "total_steps": 5}\n{"type": "step", "step": 2, "loss": 2.5}\n'
    )
    window.home.recent_chosen.emit(str(project.folder))
    assert window.state.project.folder == project.folder
    runs = window.home.runs
    qtbot.waitUntil(lambda: runs.rowCount() == 1, timeout=10000)  # listed off the GUI thread
    assert [runs.item(0, c).text() for c in range(4)] == ["from-cli", "running", "2/5", "2.5000"]
    warnings = []
    monkeypatch.setattr(
        "studio.gui.main_window.QMessageBox.warning", lambda *a: warnings.append(a[2])
    )
    window.open_project(str(tmp_path / "nothing"))
    assert warnings and "not a Studio project" in warnings[0]
