"""Linux desktop integration: the freedesktop menu entry and the hicolor icons.

The shipped entry is `resources/desktop/studio.desktop` (Exec=studio). Installing writes a
copy whose Exec names this install's own `studio` script (or `python -m studio`), plus the
icons, under the user's data dir ($XDG_DATA_HOME, else ~/.local/share):

    applications/studio.desktop
    icons/hicolor/scalable/apps/studio.svg
    icons/hicolor/SIZExSIZE/apps/studio.png    (16, 32, 48, 64, 128, 256)

Uninstalling removes exactly those files. No Qt here: the CLI installs without a display.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from studio.core import paths

APP_ID = "studio"
"""The .desktop file's basename, the icon's name and QGuiApplication's desktop file name."""
ICON_SIZES = (16, 32, 48, 64, 128, 256)


def desktop_file() -> Path:
    """The shipped entry (Exec=studio)."""
    return paths.resources_dir() / "desktop" / f"{APP_ID}.desktop"


def icon_svg() -> Path:
    return paths.resources_dir() / "icons" / "hicolor" / "scalable" / "apps" / f"{APP_ID}.svg"


def icon_png(size: int) -> Path:
    return paths.resources_dir() / "icons" / "hicolor" / f"{size}x{size}" / "apps" / f"{APP_ID}.png"


def data_home() -> Path:
    """$XDG_DATA_HOME when set to an absolute path (the spec says to ignore others), else
    ~/.local/share."""
    xdg = os.environ.get("XDG_DATA_HOME", "")
    return Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "share"


def installed_files(home: Path | None = None) -> dict[Path, Path]:
    """Where each file goes (target -> shipped source), the .desktop file first."""
    home = home or data_home()
    icons = home / "icons" / "hicolor"
    files = {home / "applications" / f"{APP_ID}.desktop": desktop_file()}
    files[icons / "scalable" / "apps" / f"{APP_ID}.svg"] = icon_svg()
    for size in ICON_SIZES:
        files[icons / f"{size}x{size}" / "apps" / f"{APP_ID}.png"] = icon_png(size)
    return files


def _quote(arg: str) -> str:
    """An Exec argument, quoted as the Desktop Entry spec asks when it needs quoting."""
    if arg and not any(c in arg for c in " \t\n\"'\\><~|&;$*?#()`%"):
        return arg
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in arg)
    return '"' + escaped.replace("%", "%%") + '"'


def exec_command() -> list[str]:
    """This install's `studio` script when there is one beside the interpreter (a venv or a
    pip install), else the interpreter running `-m studio` (a source checkout)."""
    script = Path(sys.executable).parent / "studio"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "studio"]


def entry_text(command: list[str] | None = None) -> str:
    """The shipped entry with Exec (and TryExec) pointing at `command`."""
    command = command or exec_command()
    lines = []
    for line in desktop_file().read_text(encoding="utf-8").splitlines():
        if line.startswith("Exec="):
            line = "Exec=" + " ".join(_quote(a) for a in command) + " %f"
        elif line.startswith("TryExec="):
            line = "TryExec=" + command[0]
        lines.append(line)
    return "\n".join(lines) + "\n"


def install(home: Path | None = None, command: list[str] | None = None) -> list[Path]:
    """Write the menu entry and the icons; returns the files written."""
    files = installed_files(home)
    missing = [str(src) for src in files.values() if not src.is_file()]
    if missing:
        from studio.core.errors import StudioError

        raise StudioError(f"this install lacks its desktop files: {', '.join(missing)}")
    written = []
    for target, source in files.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.suffix == ".desktop":
            target.write_text(entry_text(command), encoding="utf-8")
        else:
            shutil.copyfile(source, target)
        written.append(target)
    _refresh(home or data_home())
    return written


def uninstall(home: Path | None = None) -> list[Path]:
    """Remove exactly the files `install` writes; returns those that were there."""
    removed = []
    for target in installed_files(home):
        if target.is_file():
            target.unlink()
            removed.append(target)
    _refresh(home or data_home())
    return removed


def _refresh(home: Path) -> None:
    """Let menus and file managers see the change now (best effort: the tools are optional
    and desktops also notice on their own)."""
    tools = (
        ["update-desktop-database", "-q", str(home / "applications")],
        ["gtk-update-icon-cache", "-q", "-t", "-f", str(home / "icons" / "hicolor")],
    )
    for cmd in tools:
        if shutil.which(cmd[0]) and Path(cmd[-1]).is_dir():
            subprocess.run(cmd, capture_output=True, timeout=30, check=False)
