"""Live training plots (pyqtgraph): loss (raw, smoothed, eval), learning rate, grad norm and
tokens/s against the step, with epoch boundaries and checkpoints marked; a third row with the
training mode's own figures when its steps carry them (a preference run's reward margin,
accuracy and chosen/rejected rewards; a distillation's KL and cross-entropy); and the overlay
of several runs' loss curves.

Imported on first use (pyqtgraph costs ~0.5 s to import; the window appears first).
Points go into numpy buffers that grow by doubling; the curves are redrawn by `redraw()` (the
Train page calls it from a 10 Hz timer) only when something changed, with peak downsampling and
clip-to-view, so 100,000 points stay smooth. A resumed run re-logs the steps after its
checkpoint: a point for a step at or before the last one replaces it and drops what followed.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QGuiApplication, QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from studio.core.runs import STEP_COLUMNS
from studio.gui.run_worker import METRIC_COLUMNS

SMOOTHING = 0.9
"""EMA weight of the smoothed loss (debiased, as TensorBoard does)."""
MAX_EPOCH_LINES = 40
MAX_EPOCH_LABELS = 12
MODE_PANELS = (
    ("Reward margin (chosen − rejected)", (("rewards/margins", "margin", "#1f77b4"),), None),
    ("Reward accuracy (chosen ranked first)", (("rewards/accuracies", "accuracy", "#31a354"),), (0, 1)),
    ("Rewards", (("rewards/chosen", "chosen", "#31a354"), ("rewards/rejected", "rejected", "#d62728")), None),
    ("KL to the teacher", (("kl", "KL", "#756bb1"),), None),
    ("Cross-entropy on the answers", (("ce", "CE", "#636363"),), None),
)  # fmt: skip
"""The third row's plots: title, (metric, name, colour) of each curve, fixed y range or None."""
SUMMARY = (("rewards/margins", "margin {:.3f}"), ("rewards/accuracies", "accuracy {:.0%}"),
           ("kl", "KL {:.4f}"))  # fmt: skip


class SeriesBuffer:
    """Steps and value columns in numpy arrays that grow by doubling."""

    def __init__(self, columns: int, capacity: int = 1024):
        self.x = np.empty(capacity)
        self.y = np.empty((capacity, columns))
        self.n = 0

    def __len__(self) -> int:
        return self.n

    @property
    def last_step(self) -> float:
        return self.x[self.n - 1] if self.n else -math.inf

    def truncate_after(self, step: float) -> int:
        """Drop the points after `step`; returns the new length."""
        self.n = int(np.searchsorted(self.x[: self.n], step, side="right"))
        return self.n

    def extend(self, steps: np.ndarray, values: np.ndarray) -> int:
        """Append rows (steps ascending); a step not after the last one replaces it and what
        followed. Returns the index of the first new row."""
        if len(steps) and steps[0] <= self.last_step:
            self.n = int(np.searchsorted(self.x[: self.n], steps[0], side="left"))
        need = self.n + len(steps)
        if need > len(self.x):
            cap = len(self.x)
            while cap < need:
                cap *= 2
            self.x = np.resize(self.x, cap)
            grown = np.empty((cap, self.y.shape[1]))
            grown[: self.n] = self.y[: self.n]
            self.y = grown
        first = self.n
        self.x[first:need] = steps
        self.y[first:need] = values
        self.n = need
        return first

    def column(self, i: int) -> np.ndarray:
        return self.y[: self.n, i]

    def steps(self) -> np.ndarray:
        return self.x[: self.n]


def _ordered_runs(steps: np.ndarray) -> list[slice]:
    """Split a block into pieces with strictly increasing steps (a block may hold a replay)."""
    if len(steps) < 2:
        return [slice(0, len(steps))]
    cuts = np.nonzero(np.diff(steps) <= 0)[0] + 1
    bounds = [0, *cuts.tolist(), len(steps)]
    return [slice(a, b) for a, b in zip(bounds, bounds[1:], strict=False)]


def background() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.Base)


def foreground() -> QColor:
    return QGuiApplication.palette().color(QPalette.ColorRole.Text)


def _style(plot: pg.PlotItem, title: str) -> None:
    plot.setTitle(title, color=foreground().name(), size="9pt")
    # No grid: on a raster paint engine it costs more than all the curves (20 ms a frame).
    plot.setDownsampling(auto=True, mode="peak")
    plot.setClipToView(True)
    for name in ("left", "bottom"):
        axis = plot.getAxis(name)
        axis.setTextPen(foreground())
        axis.setPen(pg.mkPen(foreground(), width=1))


class TrainingPlots(QWidget):
    """The live plots of one run. Feed it with `add_steps`, `add_eval`, `add_checkpoint`,
    `start_at`; call `redraw()` on a timer."""

    RAW, SMOOTH, EVAL = "#9ecae1", "#1f77b4", "#e6550d"

    def __init__(self, parent=None):
        super().__init__(parent)
        pg.setConfigOptions(antialias=False)
        self.view = pg.GraphicsLayoutWidget()
        self.view.setBackground(background())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.view)
        self.loss_plot = self.view.addPlot(row=0, col=0, colspan=3)
        _style(self.loss_plot, "Loss")
        self.legend = self.loss_plot.addLegend(offset=(-10, 10), labelTextColor=foreground())
        self.raw_curve = self.loss_plot.plot(pen=pg.mkPen(self.RAW, width=1), name="train loss")
        self.smooth_curve = self.loss_plot.plot(pen=pg.mkPen(self.SMOOTH, width=2), name="smoothed")
        self.eval_curve = self.loss_plot.plot(
            pen=pg.mkPen(self.EVAL, width=2),
            symbol="o",
            symbolSize=6,
            symbolBrush=self.EVAL,
            symbolPen=None,
            name="eval loss",
        )
        self.checkpoint_marks = pg.ScatterPlotItem(
            size=10, symbol="t1", brush=pg.mkBrush("#31a354"), pen=None, name="checkpoint"
        )
        self.loss_plot.addItem(self.checkpoint_marks)
        self.small: dict[str, pg.PlotDataItem] = {}
        for col, (key, title, color) in enumerate(
            (
                ("lr", "Learning rate", "#756bb1"),
                ("grad_norm", "Grad norm", "#636363"),
                ("tokens_per_s", "Tokens/s", "#31a354"),
            )
        ):
            plot = self.view.addPlot(row=1, col=col)
            _style(plot, title)
            plot.getAxis("left").setWidth(52)
            self.small[key] = plot.plot(pen=pg.mkPen(color, width=1))
        # The small plots follow the loss plot's steps (zoom and pan included). Not setXLink:
        # that aligns by screen position, and these plots sit side by side.
        self.loss_plot.sigXRangeChanged.connect(self._follow_x)
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.view.ci.layout.setRowStretchFactor(1, 1)
        self.epoch_lines: list[pg.InfiniteLine] = []
        self.mode_plots: dict[str, pg.PlotItem] = {}
        """The third row, by title: made when a run's figures first need them."""
        self.mode_curves: dict[str, tuple[pg.PlotDataItem, pg.PlotDataItem]] = {}
        """Per metric: its steps' curve and its evaluations' points."""
        self.clear()

    def _follow_x(self, _view, x_range) -> None:
        for curve in self.small.values():
            curve.getViewBox().setXRange(*x_range, padding=0)
        for plot in self.mode_plots.values():
            plot.setXRange(*x_range, padding=0)

    # --- data ----------------------------------------------------------------------------------

    def clear(self) -> None:
        self.steps = SeriesBuffer(len(STEP_COLUMNS) - 1 + 2)  # + EMA state and smoothed value
        self.evals = SeriesBuffer(1, 64)
        self.checkpoints: list[int] = []
        self.epoch_steps: list[int] = []
        self.epoch_numbers: list[int] = []
        for line in self.epoch_lines:
            self.loss_plot.removeItem(line)
        self.epoch_lines = []
        self.metrics = SeriesBuffer(len(METRIC_COLUMNS), 256)
        self.metric_evals = SeriesBuffer(len(METRIC_COLUMNS), 64)
        for plot in self.mode_plots.values():  # the next run may be SFT: no third row
            self.view.removeItem(plot)
        self.mode_plots, self.mode_curves = {}, {}
        self.dirty = True
        self.redraw()

    def start_at(self, step: int) -> None:
        """A (resumed) run starts after `step`: what was logged after it is dropped."""
        self.steps.truncate_after(step)
        self.evals.truncate_after(step)
        self.metrics.truncate_after(step)
        self.metric_evals.truncate_after(step)
        self.checkpoints = [s for s in self.checkpoints if s <= step]
        self.epoch_steps = [s for s in self.epoch_steps if s <= step]
        self.epoch_numbers = self.epoch_numbers[: len(self.epoch_steps)]
        self.dirty = True

    def add_steps(self, block: np.ndarray) -> None:
        """Rows of STEP_COLUMNS (a run_worker step block)."""
        for piece in _ordered_runs(block[:, 0]):
            self._extend(block[piece])
        self.dirty = True

    def _extend(self, rows: np.ndarray) -> None:
        n_values = len(STEP_COLUMNS) - 1
        values = np.empty((len(rows), n_values + 2))
        values[:, :n_values] = rows[:, 1:]
        first = self.steps.extend(rows[:, 0], values)
        self.epoch_steps = [s for s in self.epoch_steps if s < rows[0, 0]]
        self.epoch_numbers = self.epoch_numbers[: len(self.epoch_steps)]
        self.checkpoints = [s for s in self.checkpoints if s < rows[0, 0]]
        self.evals.truncate_after(rows[0, 0] - 1)
        # Debiased EMA: m_i = a*m_(i-1) + (1-a)*x_i, shown as m_i / (1 - a^(i+1)).
        y = self.steps.y
        m_col, s_col = n_values, n_values + 1
        m0 = y[first - 1, m_col] if first else 0.0
        y[first : self.steps.n, m_col] = ema_state(y[first : self.steps.n, 1], m0)
        index = np.arange(first + 1, self.steps.n + 1)
        y[first : self.steps.n, s_col] = y[first : self.steps.n, m_col] / (1 - SMOOTHING**index)
        # Epoch boundaries: where the whole-epoch count goes up.
        epochs = np.floor(y[max(0, first - 1) : self.steps.n, 0] + 1e-9)
        ups = np.nonzero(np.diff(epochs) > 0)[0]
        base = max(0, first - 1) + 1
        self.epoch_steps += [int(self.steps.x[base + i]) for i in ups]
        self.epoch_numbers = self.epoch_numbers[: len(self.epoch_steps) - len(ups)]
        self.epoch_numbers += [int(epochs[i + 1]) for i in ups]

    def add_metrics(self, rows: np.ndarray) -> None:
        """Rows of (step, *METRIC_COLUMNS) (a run_worker MetricRows block)."""
        for piece in _ordered_runs(rows[:, 0]):
            self.metrics.extend(rows[piece, 0], rows[piece, 1:])
            self.metric_evals.truncate_after(rows[piece][0, 0] - 1)
        self.dirty = True

    def add_eval(self, step: int, loss: float, metrics: dict | None = None) -> None:
        self.evals.extend(np.array([float(step)]), np.array([[loss]]))
        if metrics and any(k in metrics for k in METRIC_COLUMNS):
            values = [metrics.get(k) for k in METRIC_COLUMNS]
            row = [v if isinstance(v, int | float) else np.nan for v in values]
            self.metric_evals.extend(np.array([float(step)]), np.array([row], dtype=float))
        self.dirty = True

    def mode_summary(self) -> str:
        """The latest mode figures in words ("margin 0.412 · accuracy 75%"), or ""."""
        if not len(self.metrics):
            return ""
        last = dict(zip(METRIC_COLUMNS, self.metrics.y[self.metrics.n - 1], strict=True))
        return " · ".join(f.format(last[k]) for k, f in SUMMARY if math.isfinite(last[k]))

    def add_checkpoint(self, step: int) -> None:
        if step not in self.checkpoints:
            self.checkpoints.append(step)
            self.dirty = True

    def point_count(self) -> int:
        return len(self.steps)

    # --- drawing --------------------------------------------------------------------------------

    def redraw(self) -> None:
        if not self.dirty:
            return
        self.dirty = False
        x = self.steps.steps()
        n_values = len(STEP_COLUMNS) - 1
        self.raw_curve.setData(x, self.steps.column(1), skipFiniteCheck=True)
        self.smooth_curve.setData(x, self.steps.column(n_values + 1), skipFiniteCheck=True)
        self.eval_curve.setData(self.evals.steps(), self.evals.column(0))
        for key, col in (("lr", 2), ("grad_norm", 3), ("tokens_per_s", 4)):
            self.small[key].setData(x, self.steps.column(col), skipFiniteCheck=True)
        if self.checkpoints and len(x):
            marks = np.array(self.checkpoints, dtype=float)
            idx = np.clip(np.searchsorted(x, marks), 0, len(x) - 1)
            self.checkpoint_marks.setData(marks, self.steps.column(n_values + 1)[idx])
        else:
            self.checkpoint_marks.setData([], [])
        self._draw_epoch_lines()
        self._draw_metrics()

    def _draw_metrics(self) -> None:
        x, eval_x = self.metrics.steps(), self.metric_evals.steps()
        for j, name in enumerate(METRIC_COLUMNS):
            y, eval_y = self.metrics.column(j), self.metric_evals.column(j)
            if name not in self.mode_curves:
                if not (np.isfinite(y).any() or np.isfinite(eval_y).any()):
                    continue  # not this run's figure: no plot for it
                self._add_panel(name)
            curve, points = self.mode_curves[name]
            curve.setData(x, y, connect="finite")
            shown = np.isfinite(eval_y)
            points.setData(eval_x[shown], eval_y[shown])

    def _add_panel(self, metric: str) -> None:
        """The third-row plot that holds this metric, next to those made before."""
        title, curves, y_range = next(p for p in MODE_PANELS if metric in (c[0] for c in p[1]))
        plot = self.view.addPlot(row=2, col=len(self.mode_plots))
        # Several curves: named in their colours in the title (a legend would cover them).
        names = [f"<span style='color:{color}'>{label}</span>" for _, label, color in curves]
        _style(plot, f"{title}: {' and '.join(names)}" if len(curves) > 1 else title)
        plot.getAxis("left").setWidth(52)
        if y_range is not None:
            plot.setYRange(*y_range, padding=0.05)
        for name, _label, color in curves:
            line = plot.plot(pen=pg.mkPen(color, width=1))
            points = plot.plot(pen=None, symbol="o", symbolSize=5, symbolBrush=color,
                               symbolPen=None)  # fmt: skip
            self.mode_curves[name] = (line, points)
        plot.setXRange(*self.loss_plot.viewRange()[0], padding=0)
        self.view.ci.layout.setRowStretchFactor(2, 1)
        self.mode_plots[title] = plot

    def _draw_epoch_lines(self) -> None:
        wanted = self.epoch_steps if len(self.epoch_steps) <= MAX_EPOCH_LINES else []
        if [line.value() for line in self.epoch_lines] == wanted:
            return
        for line in self.epoch_lines:
            self.loss_plot.removeItem(line)
        pen = pg.mkPen(foreground(), width=1, style=Qt.PenStyle.DashLine)
        self.epoch_lines = []
        labelled = len(wanted) <= MAX_EPOCH_LABELS
        for step, number in zip(wanted, self.epoch_numbers, strict=False):
            line = pg.InfiniteLine(
                pos=step,
                angle=90,
                pen=pen,
                label=f"epoch {number}" if labelled else None,
                labelOpts={"position": 0.95, "color": foreground().name()},
            )
            self.loss_plot.addItem(line, ignoreBounds=True)
            self.epoch_lines.append(line)


class ComparePlot(QWidget):
    """Loss curves of several runs on one axis: smoothed train loss and eval loss."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.plot = pg.PlotWidget(background=background())
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.plot)
        _style(self.plot.getPlotItem(), "Loss of the selected runs")
        self.legend = self.plot.addLegend(offset=(-10, 10), labelTextColor=foreground())
        self.names: list[str] = []

    def show_curves(self, curves: list) -> None:
        """curves: studio.core.runs.Curves of each run."""
        item = self.plot.getPlotItem()
        item.clear()
        self.legend.clear()
        self.names = []
        for i, c in enumerate(curves):
            color = pg.intColor(i, hues=max(3, len(curves)), values=1, maxValue=200)
            steps = np.asarray(c.steps, dtype=float)
            smooth = ema(np.asarray(c.losses, dtype=float))
            self.plot.plot(steps, smooth, pen=pg.mkPen(color, width=2), name=f"{c.name}")
            if c.eval_steps:
                self.plot.plot(
                    np.asarray(c.eval_steps, dtype=float),
                    np.asarray(c.eval_losses, dtype=float),
                    pen=pg.mkPen(color, width=1, style=Qt.PenStyle.DashLine),
                    symbol="o",
                    symbolSize=6,
                    symbolBrush=color,
                    symbolPen=None,
                    name=f"{c.name} (eval)",
                )
            self.names.append(c.name)
        item.enableAutoRange()


def ema_state(values: np.ndarray, m0: float = 0.0, a: float = SMOOTHING) -> np.ndarray:
    """m_i = a*m_(i-1) + (1-a)*x_i from m_(-1) = m0, vectorised in chunks (the powers of a
    stay within float range): replaying 100,000 steps costs milliseconds, not a Python loop."""
    values = np.asarray(values, dtype=float)
    out = np.empty_like(values)
    chunk = 256
    powers = a ** np.arange(1, chunk + 1)  # a^(j+1)
    for start in range(0, len(values), chunk):
        x = values[start : start + chunk]
        p = powers[: len(x)]
        # m_j = a^(j+1) m0 + (1-a) sum_(l<=j) a^(j-l) x_l = a^(j+1) (m0 + (1-a) cumsum(x_l / a^(l+1)))
        out[start : start + len(x)] = p * (m0 + (1 - a) * np.cumsum(x / p))
        m0 = out[start + len(x) - 1]
    return out


def ema(values: np.ndarray, a: float = SMOOTHING) -> np.ndarray:
    """The debiased exponential moving average the live plot shows."""
    values = np.asarray(values, dtype=float)
    return ema_state(values, 0.0, a) / (1 - a ** np.arange(1, len(values) + 1))
