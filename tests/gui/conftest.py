"""GUI test fixtures: offscreen Qt, a private STUDIO_HOME, and no thread left running."""

import os

import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True)
def studio_home(tmp_path, monkeypatch):
    """Settings and projects go to a temporary folder, never the real home."""
    home = tmp_path / "studio-home"
    monkeypatch.setenv("STUDIO_HOME", str(home))
    yield home
    from studio.gui import settings, workers

    settings.flush()  # no write of this test's settings may land in the next test's home

    assert workers.wait_all(60000), "a worker thread did not finish"
    assert workers.live_tasks() == []
    workers.automatic_garbage_collection()  # the tests after this one may have no event loop


@pytest.fixture(autouse=True)
def no_modal_dialogs(monkeypatch):
    """A modal dialog nobody answers waits forever offscreen (a whole CI run lost to one):
    here it fails the test at once, saying what it asked. A test that expects one patches it."""
    from PySide6.QtWidgets import QFileDialog, QInputDialog, QMessageBox

    def refuse(what):
        def modal(*args, **kwargs):
            said = [a.text() if isinstance(a, QMessageBox) else a for a in args]
            said = [a for a in said if isinstance(a, str)]
            raise AssertionError(f"a modal {what} opened in a test: {said}")

        return modal

    monkeypatch.setattr(QMessageBox, "exec", refuse("message box"))
    for name in ("warning", "information", "critical", "question"):
        monkeypatch.setattr(QMessageBox, name, staticmethod(refuse(f"QMessageBox.{name}")))
    for name in ("getOpenFileName", "getSaveFileName", "getExistingDirectory"):
        monkeypatch.setattr(QFileDialog, name, staticmethod(refuse(f"QFileDialog.{name}")))
    monkeypatch.setattr(QInputDialog, "getText", staticmethod(refuse("QInputDialog.getText")))


@pytest.fixture
def window(qtbot):
    from studio.gui.main_window import MainWindow

    w = MainWindow(probe=False)
    qtbot.addWidget(w)
    w.show()
    qtbot.waitExposed(w)
    yield w
    w.close()
    assert not w.pages["Train"].timer.isActive()


@pytest.fixture
def write_jsonl(tmp_path):
    import json

    def write(name, rows):
        path = tmp_path / name
        lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path

    return write


def dead_process() -> dict:
    """A pid file's record of a process that has ended, with its creation time, so that a
    process given the same pid later (or one a sandbox's /proc shows under it) does not count
    as the run still going."""
    import subprocess
    import sys
    import time

    created = time.time()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    return {"pid": dead.pid, "create_time": created}


def alpaca(i: int) -> dict:
    return {"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."}
