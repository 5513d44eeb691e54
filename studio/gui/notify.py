"""Tell the user a run ended when the window is not in front: a system tray message where
there is a tray, else the taskbar alert; always a status bar message."""

from __future__ import annotations

from PySide6.QtWidgets import QApplication, QMainWindow, QStyle, QSystemTrayIcon

from studio.core.runs import RunState

_tray: QSystemTrayIcon | None = None


def run_end_message(state: RunState) -> tuple[str, str]:
    title = {
        "completed": "Training finished",
        "stopped": "Training stopped",
        "failed": "Training failed",
    }.get(state.status, "Training ended")
    text = f"{state.name}: step {state.step}"
    if state.total_steps:
        text += f" of {state.total_steps}"
    if state.status == "failed" and state.message:
        text += f". {state.message.splitlines()[0]}"
    elif state.final_loss is not None:
        text += f", loss {state.final_loss:.4f}"
    return title, text


def notify_run_ended(window: QMainWindow, state: RunState) -> str:
    """Returns how the user was told: "tray", "alert" or "status bar" (window in front)."""
    global _tray
    title, text = run_end_message(state)
    window.statusBar().showMessage(f"{title} — {text}", 0)
    if window.isActiveWindow():
        return "status bar"
    if QSystemTrayIcon.isSystemTrayAvailable() and QSystemTrayIcon.supportsMessages():
        if _tray is None:
            icon = window.windowIcon()
            if icon.isNull():
                icon = window.style().standardIcon(QStyle.StandardPixmap.SP_ComputerIcon)
            _tray = QSystemTrayIcon(icon, QApplication.instance())
        _tray.show()
        icon_kind = (
            QSystemTrayIcon.MessageIcon.Critical
            if state.status == "failed"
            else QSystemTrayIcon.MessageIcon.Information
        )
        _tray.showMessage(title, text, icon_kind, 10000)
        return "tray"
    QApplication.alert(window, 0)
    return "alert"
