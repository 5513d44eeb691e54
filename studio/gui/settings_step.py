"""The wizard's Settings step: the presets, sized to the chosen data and model.

The sizing (studio.core.presets) needs the data's token counts and the model's size; they
are measured on a worker when the step opens (a moment), and until then the presets show
what they would do for typical data. Edits made meanwhile are never overwritten.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6.QtWidgets import (
    QButtonGroup,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QRadioButton,
    QVBoxLayout,
    QWizardPage,
)

from studio.core import presets, step_timing
from studio.core.config import RunConfig
from studio.core.errors import ConfigError, StudioError
from studio.core.presets import DEFAULT_PRESET, PRESETS, apply_preset
from studio.gui import settings, theme
from studio.gui.forms import ConfigForm
from studio.gui.workers import run_task

if TYPE_CHECKING:
    from studio.gui.wizard import NewRunWizard

_status = theme.show_status


class SettingsStep(QWizardPage):
    """The presets, sized to the data and the model (studio.core.presets) once both are
    measured; until then (a moment) they show what they would do for typical data."""

    def __init__(self, wizard: NewRunWizard):
        super().__init__()
        self.w = wizard
        self.setTitle("3. Settings")
        self.setSubTitle(
            "How hard to train. The presets are sized to your data and model; Advanced shows "
            "every setting."
        )
        layout = QVBoxLayout(self)
        self.group = QButtonGroup(self)
        self.buttons: dict[str, QRadioButton] = {}
        self.sizing: dict[str, QLabel] = {}
        """Per preset: what it does for this data and model, in numbers."""
        for name, preset in PRESETS.items():
            button = QRadioButton(name)
            button.setStyleSheet("font-weight: bold")
            explain = QLabel(preset.summary)
            explain.setWordWrap(True)
            explain.setContentsMargins(24, 0, 0, 0)
            numbers = QLabel("")
            numbers.setContentsMargins(24, 0, 0, 6)
            numbers.setStyleSheet(f"color: {theme.muted_color().name()}")
            self.group.addButton(button)
            self.buttons[name] = button
            self.sizing[name] = numbers
            layout.addWidget(button)
            layout.addWidget(explain)
            layout.addWidget(numbers)
            button.toggled.connect(lambda on, n=name: on and self.choose(n))
        self.advanced_button = QPushButton("Show advanced settings")
        self.advanced_button.setCheckable(True)
        self.advanced_button.toggled.connect(self._toggle_advanced)
        self.form = ConfigForm()
        self.form.hide()
        self.error = QLabel("")
        self.error.setWordWrap(True)
        row = QHBoxLayout()
        row.addWidget(self.advanced_button)
        row.addStretch(1)
        layout.addLayout(row)
        layout.addWidget(self.form, 1)
        layout.addWidget(self.error)
        layout.addStretch(0)
        self.preset = ""
        self._shown: RunConfig | None = None  # what the form was last set to
        self._task = None
        self._measuring = ("", "")

    def _key(self) -> tuple[str, str]:
        return (self.w.cfg.data.path, self.w.cfg.model.path)

    def _records(self):
        ds = self.w.steps[0].dataset
        return ds.records if ds is not None and ds.path == self.w.cfg.data.path else None

    def initializePage(self) -> None:
        self.form.limit_modes(self.w.goal().modes)  # ORPO or SimPO instead of DPO, say
        if self.w.sizes_key != self._key():
            self.w.sizes = None
            for label in self.sizing.values():
                label.setText("Sizing this preset to your data and model…")
            if self._task is not None:
                self._task.cancel()
            self._measuring = self._key()
            self._task = run_task(
                self, presets.measure, self.w.cfg, self._records(),
                on_done=self._measured, on_error=self._not_measured,
            )  # fmt: skip
        self._settle()

    def _sizes(self) -> tuple:
        return self.w.sizes or presets.TYPICAL

    def _settle(self) -> None:
        cfg = self.w.cfg
        sizes = self._sizes()
        match = next((n for n in PRESETS if apply_preset(cfg, n, *sizes) == cfg), None)
        if match is None and self.w.state.project is not None and self.w.state.project.settings:
            # The project's last settings, as they were: no preset is forced on them.
            self.preset = ""
            self.group.setExclusive(False)
            for b in self.buttons.values():
                b.setChecked(False)
            self.group.setExclusive(True)
            self._show(cfg)
            _status(
                self.error, "Showing this project's last settings; choose a preset to start over."
            )
            return
        name = match or settings.get("wizard/preset", DEFAULT_PRESET)
        name = name if name in PRESETS else DEFAULT_PRESET
        self.buttons[name].setChecked(True)
        self.choose(name)

    def _measured(self, sizes) -> None:
        self._task = None
        if self._measuring == self._key():  # not for data or a model chosen before
            self._apply_sizes(sizes)

    def _not_measured(self, _error) -> None:
        self._measured(presets.TYPICAL)  # the presets still work, sized for typical data

    def _apply_sizes(self, sizes) -> None:
        untouched = self._untouched()
        self.w.sizes, self.w.sizes_key = sizes, self._key()
        for name in PRESETS:
            self.sizing[name].setText(describe_plan(apply_preset(self.w.cfg, name, *sizes), sizes))
        if not untouched:
            return  # the user's edits stay; the numbers above show what the presets would do
        if self.preset:  # the chosen preset, now sized for this data and model
            self.choose(self.preset)
        else:  # the project's last settings: they may turn out to be a sized preset
            self._settle()

    def _untouched(self) -> bool:
        try:
            return self._shown is not None and self.form.build(self.w.cfg) == self._shown
        except ConfigError:
            return False

    def _show(self, cfg: RunConfig) -> None:
        self.form.set_config(cfg)
        self._shown = cfg

    def choose(self, name: str) -> None:
        self.preset = name
        self._show(apply_preset(self.w.cfg, name, *self._sizes()))
        self.error.clear()

    def _toggle_advanced(self, on: bool) -> None:
        self.form.setVisible(on)
        self.advanced_button.setText("Hide advanced settings" if on else "Show advanced settings")

    def validatePage(self) -> bool:
        if self.w.sizes_key != self._key():
            # Next came before the measurement did: it is quick (at most SAMPLE records through
            # a Rust tokenizer), so finish it here rather than train with unsized settings.
            if self._task is not None:
                self._task.cancel()
                self._task = None
            try:
                self._apply_sizes(presets.measure(self.w.cfg, self._records()))
            except (StudioError, OSError):
                self._apply_sizes(presets.TYPICAL)
        try:
            cfg = self.form.build(self.w.cfg)
        except ConfigError as e:
            _status(self.error, e.message, "error")
            self.advanced_button.setChecked(True)
            self.form.highlight(e.field)
            return False
        self.form.highlight(None)
        if self.preset:
            settings.put("wizard/preset", self.preset)
        self.w.cfg = cfg
        return True


def describe_plan(cfg: RunConfig, sizes) -> str:
    """A preset's numbers for this data and model, in one line."""
    t = cfg.train
    steps, _ = step_timing.planned_steps(cfg, sizes[0])
    length = (
        f"{steps:,} steps"
        if t.max_steps
        else f"{t.epochs:g} epoch{'s' if t.epochs != 1 else ''}, {steps:,} steps"
    )
    return (
        f"Here: {length}, learning rate {t.lr:g}, rank {cfg.lora.r}, "
        f"sequence length {t.seq_len}, batch {t.batch_size}"
        + (f" × {t.grad_accum}" if t.grad_accum > 1 else "")
        + "."
    )
