"""Render the app icon's PNG sizes from its SVG with Qt's own SVG renderer.

    QT_QPA_PLATFORM=offscreen python packaging/render_icons.py

Writes resources/icons/hicolor/SIZExSIZE/apps/studio.png for every size in
studio.desktop.ICON_SIZES; run it after editing the SVG and commit the PNGs.
"""

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication, QImage, QPainter
from PySide6.QtSvg import QSvgRenderer

from studio import desktop


def main() -> None:
    app = QGuiApplication([])  # noqa: F841 (QPainter on images needs the application)
    renderer = QSvgRenderer(str(desktop.icon_svg()))
    if not renderer.isValid():
        raise SystemExit(f"cannot read {desktop.icon_svg()}")
    for size in desktop.ICON_SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        renderer.render(painter)
        painter.end()
        target = desktop.icon_png(size)
        target.parent.mkdir(parents=True, exist_ok=True)
        if not image.save(str(target), "PNG"):
            raise SystemExit(f"cannot write {target}")
        print(target)


if __name__ == "__main__":
    main()
