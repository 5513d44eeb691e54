"""Persistent app settings: QSettings in an INI file under the platformdirs config dir.

Window geometry, recent projects and the last choices made in forms live here. With
STUDIO_HOME set (tests), nothing touches the real home.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QSettings

from studio.core import paths

MAX_RECENT = 10


def settings() -> QSettings:
    file = paths.settings_file()
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


def get(key: str, default=None):
    return settings().value(key, default)


def put(key: str, value) -> None:
    s = settings()
    s.setValue(key, value)
    s.sync()
