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


def alpaca(i: int) -> dict:
    return {"instruction": f"Say the number {i}.", "input": "", "output": f"The number is {i}."}
