"""Light/dark scheme that follows the system, and a few shared colours and fonts."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QFontDatabase, QGuiApplication, QPalette


def is_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = hints.colorScheme() if hasattr(hints, "colorScheme") else Qt.ColorScheme.Unknown
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


def trained_background() -> QColor:
    """Background of loss-bearing text in the rendered preview."""
    return QColor("#1f6b3a") if is_dark() else QColor("#c6efce")


def error_color() -> QColor:
    return QColor("#ff7b72") if is_dark() else QColor("#b42318")


def ok_color() -> QColor:
    return QColor("#56d364") if is_dark() else QColor("#1a7f37")


def muted_color() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.PlaceholderText)


def show_status(label, text: str, kind: str = "") -> None:
    """A status line in a label: kind "error" (red), "ok" (green) or "" (muted)."""
    colors = {"error": error_color(), "ok": ok_color(), "": muted_color()}
    label.setText(text)
    label.setStyleSheet(f"color: {colors[kind].name()}")


def mono_font() -> QFont:
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont)


def title_font(scale: float = 1.6) -> QFont:
    f = QFont(QGuiApplication.font())
    f.setPointSizeF(f.pointSizeF() * scale)
    f.setBold(True)
    return f


def apply_scheme(app) -> None:
    """Fusion follows the system colour scheme in Qt 6.5+; re-polish when it changes."""
    app.setStyle("Fusion")
    hints = QGuiApplication.styleHints()
    if hasattr(hints, "colorSchemeChanged"):
        hints.colorSchemeChanged.connect(
            lambda _scheme: app.setPalette(app.style().standardPalette())
        )
