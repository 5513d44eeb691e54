"""Settings are written off the GUI thread (QSettings.sync fdatasyncs) yet read back at once."""

import threading

from studio.gui import settings


def test_put_does_not_wait_for_the_disk_and_reads_back_at_once(monkeypatch):
    release = threading.Event()
    real_write = settings._write

    def slow_write(*args):
        release.wait(10)  # a disk that takes its time
        real_write(*args)

    monkeypatch.setattr(settings, "_write", slow_write)
    settings.put("data/last_dir", "/somewhere")  # returns although the write is held up
    assert settings.get("data/last_dir") == "/somewhere"
    assert settings.settings().value("data/last_dir") is None  # not on disk yet
    release.set()
    settings.flush()
    assert settings.settings().value("data/last_dir") == "/somewhere"
    assert settings.get("data/last_dir") == "/somewhere"
