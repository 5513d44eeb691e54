"""Where Studio keeps its files.

Everything lives under the platformdirs user data / config dirs, unless the environment
variable STUDIO_HOME is set: then data goes to STUDIO_HOME/data and config to
STUDIO_HOME/config. Tests set STUDIO_HOME so they never write to the real home.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

APP_NAME = "studio"


def _home_override() -> Path | None:
    home = os.environ.get("STUDIO_HOME")
    return Path(home).expanduser() if home else None


def data_dir() -> Path:
    """The user data dir (projects live here by default)."""
    home = _home_override()
    if home is not None:
        return home / "data"
    import platformdirs

    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def config_dir() -> Path:
    """The user config dir (settings, recent projects)."""
    home = _home_override()
    if home is not None:
        return home / "config"
    import platformdirs

    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False))


def projects_dir() -> Path:
    """Default parent folder of new projects."""
    return data_dir() / "projects"


def settings_file() -> Path:
    """The INI file the app's QSettings read and write."""
    return config_dir() / "studio.ini"


def repo_root() -> Path:
    """The folder holding the `studio` package (the repository root in a source checkout;
    in a PyInstaller bundle the folder it unpacked, where packaging/studio.spec puts
    `resources/`)."""
    if getattr(sys, "frozen", False) and hasattr(sys, "_MEIPASS"):
        return Path(sys._MEIPASS)
    return Path(__file__).resolve().parents[2]


def resources_dir() -> Path:
    """The bundled resources: the demo, the desktop entry and the icons."""
    return repo_root() / "resources"


def demo_dir() -> Path:
    """The bundled demo: `data.jsonl` and `model/` (may be missing in a partial checkout)."""
    return resources_dir() / "demo"


def demo_available() -> bool:
    d = demo_dir()
    return (d / "data.jsonl").is_file() and (d / "model" / "config.json").is_file()
