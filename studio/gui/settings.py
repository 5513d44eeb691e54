"""Persistent app settings: QSettings in an INI file under the platformdirs config dir.

Window geometry, recent projects and the last choices made in forms live here. With
STUDIO_HOME set (tests), nothing touches the real home.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PySide6.QtCore import QSettings

from studio.core import paths

MAX_RECENT = 10


def settings(file: Path | None = None) -> QSettings:
    file = file or paths.settings_file()
    file.parent.mkdir(parents=True, exist_ok=True)
    return QSettings(str(file), QSettings.Format.IniFormat)


def recent_projects() -> list[str]:
    value = settings().value("recent/projects", [])
    if isinstance(value, str):
        value = [value] if value else []
    return [p for p in value if (Path(p) / "project.yaml").exists() or (Path(p) / "runs").is_dir()]


def add_recent_project(folder: str | Path) -> None:
    folder = str(folder)
    items = [folder] + [p for p in recent_projects() if p != folder]
    s = settings()
    s.setValue("recent/projects", items[:MAX_RECENT])
    s.sync()


# Writing goes through one background thread: QSettings.sync() calls fdatasync, which on a
# busy disk (a big file just written, say) blocked the window for half a second. Values not
# yet written are served from `_pending`, so a read right after a write sees it.
_pending: dict[tuple[str, str], object] = {}
_lock = threading.Lock()
_writer: ThreadPoolExecutor | None = None


def get(key: str, default=None):
    slot = (str(paths.settings_file()), key)
    with _lock:
        if slot in _pending:
            return _pending[slot]
    return settings().value(key, default)


def put(key: str, value) -> None:
    global _writer
    file = paths.settings_file()  # the file as of now, whatever STUDIO_HOME becomes later
    with _lock:
        _pending[(str(file), key)] = value
        if _writer is None:
            _writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="studio-settings")
        _writer.submit(_write, file, key, value)


def _write(file: Path, key: str, value) -> None:
    s = settings(file)
    s.setValue(key, value)
    s.sync()
    with _lock:
        if _pending.get((str(file), key)) is value:
            del _pending[(str(file), key)]


def flush() -> None:
    """Wait until every value put so far is on disk (the window calls it when closing)."""
    global _writer
    with _lock:
        writer, _writer = _writer, None
    if writer is not None:
        writer.shutdown(wait=True)
