"""Token-length histogram (pyqtgraph, imported on first use: it costs ~0.5 s to import)."""

from __future__ import annotations

from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget

from studio.gui import theme


def histogram_bins(lengths: list[int], seq_len: int, bins: int = 40):
    """(edges, counts, over_share): bins span 0..max(lengths, seq_len); over_share in [0, 1]."""
    import numpy as np

    arr = np.asarray(lengths, dtype=np.int64)
    top = max(int(arr.max()) if arr.size else 1, seq_len) + 1
    counts, edges = np.histogram(arr, bins=bins, range=(0, top))
    over = float((arr > seq_len).mean()) if arr.size else 0.0
    return edges, counts, over


class LengthHistogram(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        self.layout_ = QVBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.caption = QLabel(
            "Choose a model on the Model page to see how long each example is in tokens."
        )
        self.caption.setWordWrap(True)
        self.layout_.addWidget(self.caption)
        self.plot = None
        self.over_share = 0.0

    def _ensure_plot(self):
        if self.plot is None:
            import pyqtgraph as pg

            self.plot = pg.PlotWidget(background=None)
            self.plot.setMinimumHeight(160)
            self.plot.setLabel("bottom", "tokens per example")
            self.plot.setLabel("left", "examples")
            self.plot.setMouseEnabled(x=False, y=False)
            self.plot.hideButtons()
            self.layout_.addWidget(self.plot, 1)
        return self.plot

    def show_lengths(self, lengths: list[int], seq_len: int) -> None:
        import pyqtgraph as pg

        edges, counts, self.over_share = histogram_bins(lengths, seq_len)
        plot = self._ensure_plot()
        plot.clear()
        centers = (edges[:-1] + edges[1:]) / 2
        width = float(edges[1] - edges[0])
        over = centers > seq_len
        fit_color = "#4c8bf5"
        over_color = theme.error_color().name()
        plot.addItem(
            pg.BarGraphItem(
                x=centers[~over], height=counts[~over], width=width * 0.9, brush=fit_color
            )
        )
        if over.any():
            plot.addItem(
                pg.BarGraphItem(
                    x=centers[over], height=counts[over], width=width * 0.9, brush=over_color
                )
            )
        line = pg.InfiniteLine(
            pos=seq_len,
            angle=90,
            pen=pg.mkPen(over_color, width=2, style=pg.QtCore.Qt.PenStyle.DashLine),
        )
        plot.addItem(line)
        n = len(lengths)
        longest = max(lengths) if lengths else 0
        self.caption.setText(
            f"{n:,} examples · median {sorted(lengths)[n // 2] if n else 0:,} tokens · longest {longest:,} · "
            f"<span style='color:{over_color if self.over_share else theme.ok_color().name()}'>"
            f"<b>{self.over_share:.1%} longer than {seq_len:,}</b></span> "
            "(the dashed line: the sequence length; longer examples are truncated or dropped)"
        )
