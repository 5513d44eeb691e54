"""A settings form generated from the RunConfig dataclasses (the wizard's Advanced section).

Each field gets the widget its type calls for, its docstring as a tooltip, and validation
comes from the dataclasses themselves: `build()` raises the same ConfigError as run.yaml.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import textwrap

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QLineEdit,
    QScrollArea,
    QSpinBox,
    QTabWidget,
    QWidget,
)

from studio.core import config as C
from studio.core.config import RunConfig
from studio.core.errors import ConfigError

CHOICES = C.CHOICES
SECTIONS = {
    "train": C.TrainConfig,
    "lora": C.LoraConfig,
    "model": C.ModelConfig,
    "data": C.DataConfig,
    "preference": C.PreferenceConfig,
    "distill": C.DistillConfig,
}
TITLES = {"train": "Training", "lora": "LoRA", "model": "Model", "data": "Data",
          "preference": "Preferences", "distill": "Distillation"}  # fmt: skip
MODE_TABS = {"preference": C.PAIR_MODES, "distill": ("distill",)}
"""Tabs shown only for the training modes they serve."""
# Set elsewhere in the wizard (or not a form value).
SKIP = {"model.path", "data.path", "data.columns", "data.format"}
LABELS = {"lr": "Learning rate", "r": "Rank (r)", "lora_alpha": "Alpha", "lora_dropout": "Dropout",
          "use_rslora": "rsLoRA", "use_dora": "DoRA", "seq_len": "Sequence length",
          "val_split": "Validation split", "eval_path": "Validation file", "mode": "Method",
          "simpo_gamma": "SimPO gamma", "jsd_beta": "JSD beta", "teacher_quant": "Teacher quantization",
          "alpha": "Alpha (distillation weight)", "loss": "Divergence"}  # fmt: skip


@functools.cache
def field_docs(cls) -> dict[str, str]:
    """The string written under each dataclass field (its documentation)."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body
    docs = {}
    for node, nxt in zip(body, body[1:], strict=False):
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            if isinstance(nxt, ast.Expr) and isinstance(getattr(nxt, "value", None), ast.Constant):
                docs[node.target.id] = str(nxt.value.value)
    return docs


def label_for(name: str) -> str:
    return LABELS.get(name, name.replace("_", " ").capitalize())


class ConfigForm(QTabWidget):
    """Tabs of fields for the given sections; `build(base)` returns a validated RunConfig."""

    changed = Signal()

    def __init__(self, sections=tuple(SECTIONS), parent=None):
        super().__init__(parent)
        self.widgets: dict[str, QWidget] = {}
        self.tabs: dict[str, QWidget] = {}
        for section in sections:
            page = QWidget()
            form = QFormLayout(page)
            form.setFieldGrowthPolicy(QFormLayout.FieldGrowthPolicy.FieldsStayAtSizeHint)
            docs = field_docs(SECTIONS[section])
            # The method first: it decides which other settings and tabs matter.
            order = sorted(dataclasses.fields(SECTIONS[section]), key=lambda f: f.name != "mode")
            for f in order:
                key = f"{section}.{f.name}"
                if key in SKIP:
                    continue
                w = self._make_widget(key, f)
                w.setToolTip(docs.get(f.name, ""))
                w.setObjectName(key)
                self.widgets[key] = w
                form.addRow(label_for(f.name), w)
            scroll = QScrollArea()
            scroll.setWidgetResizable(True)
            scroll.setFrameShape(QScrollArea.Shape.NoFrame)
            scroll.setWidget(page)
            self.addTab(scroll, TITLES[section])
            self.tabs[section] = scroll
        mode = self.widgets.get("train.mode")
        if mode is not None:
            mode.currentTextChanged.connect(self._show_mode_tabs)

    def _show_mode_tabs(self, mode: str) -> None:
        for section, modes in MODE_TABS.items():
            if section in self.tabs:
                self.setTabVisible(self.indexOf(self.tabs[section]), mode in modes)

    def limit_modes(self, modes: tuple[str, ...]) -> None:
        """Offer only these training modes (the wizard's goal chose the family)."""
        box = self.widgets["train.mode"]
        current = box.currentText()
        box.blockSignals(True)
        box.clear()
        box.addItems(modes)
        box.setCurrentText(current if current in modes else modes[0])
        box.setEnabled(len(modes) > 1)
        box.blockSignals(False)
        self._show_mode_tabs(box.currentText())

    def _make_widget(self, key: str, f) -> QWidget:
        if key in CHOICES:
            w = QComboBox()
            w.addItems(CHOICES[key])
            w.currentIndexChanged.connect(self.changed)
        elif f.type == "bool":
            w = QCheckBox()
            w.toggled.connect(self.changed)
        elif f.type == "int":
            w = QSpinBox()
            w.setRange(0, 10**9)
            w.setMinimumWidth(120)
            w.valueChanged.connect(self.changed)
        else:  # floats and free text: typed as text, validated by the dataclass
            w = QLineEdit()
            w.setMinimumWidth(220)
            w.textChanged.connect(self.changed)
        return w

    def set_config(self, cfg: RunConfig) -> None:
        for key, w in self.widgets.items():
            section, name = key.split(".")
            value = getattr(getattr(cfg, section), name)
            w.blockSignals(True)
            if isinstance(w, QComboBox):
                w.setCurrentText(str(value))
            elif isinstance(w, QCheckBox):
                w.setChecked(bool(value))
            elif isinstance(w, QSpinBox):
                w.setValue(int(value))
            elif isinstance(value, list):
                w.setText(", ".join(value))
            elif isinstance(value, float):
                w.setText(f"{value:g}")
            else:
                w.setText(str(value))
            w.blockSignals(False)
            w.setStyleSheet("")
        if "train.mode" in self.widgets:
            self._show_mode_tabs(self.widgets["train.mode"].currentText())

    def build(self, base: RunConfig) -> RunConfig:
        """base with the form's values; raises ConfigError naming the bad field."""
        values: dict[str, dict] = {}
        for key, w in self.widgets.items():
            section, name = key.split(".")
            f = {x.name: x for x in dataclasses.fields(SECTIONS[section])}[name]
            if isinstance(w, QComboBox):
                value = w.currentText()
            elif isinstance(w, QCheckBox):
                value = w.isChecked()
            elif isinstance(w, QSpinBox):
                value = w.value()
            elif f.type == "float":
                try:
                    value = float(w.text())
                except ValueError:
                    raise ConfigError(f"{key}: {w.text()!r} is not a number", field=key) from None
            else:
                value = w.text().strip()
            values.setdefault(section, {})[name] = value
        sections = {s: dataclasses.replace(getattr(base, s), **v) for s, v in values.items()}
        return dataclasses.replace(base, **sections)

    def highlight(self, field: str | None) -> None:
        for key, w in self.widgets.items():
            w.setStyleSheet("border: 2px solid #d73a49;" if key == field else "")
            if key == field:
                self.setCurrentIndex(self._tab_of(w))
                w.setFocus()

    def _tab_of(self, w: QWidget) -> int:
        for i in range(self.count()):
            if self.widget(i).isAncestorOf(w):
                return i
        return 0
