"""The memory estimate as a small table with a verdict (Model page and wizard Review)."""

from __future__ import annotations

from PySide6.QtWidgets import QFormLayout, QLabel, QWidget

from studio.core.model_info import estimate_memory, human_bytes
from studio.gui import theme

ROWS = ("Model weights", "LoRA adapter", "Optimizer state", "Activations", "Overhead", "Total")


class MemoryView(QWidget):
    def __init__(self, parent=None):
        super().__init__(parent)
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self.values: dict[str, QLabel] = {}
        for name in ROWS:
            label = QLabel("—")
            self.values[name] = label
            form.addRow(name, label)
        self.verdict = QLabel("Choose a model to see how much memory training needs.")
        self.verdict.setWordWrap(True)
        form.addRow(self.verdict)
        self.estimate = None

    def clear(self) -> None:
        for label in self.values.values():
            label.setText("—")
        self.verdict.setText("Choose a model to see how much memory training needs.")
        self.verdict.setStyleSheet("")
        self.estimate = None

    def show_estimate(self, info, cfg, state, teacher=None) -> None:
        """Estimate for info + cfg on the state's device, and say whether it fits (with a
        distillation's teacher when its ModelInfo is given)."""
        est = estimate_memory(info, cfg, state.device_total, on_gpu=state.on_gpu, teacher=teacher)
        self.estimate = est
        v = self.values
        weights = f"{human_bytes(est.weights)}  ({est.weight_format})"
        if est.teacher:
            weights += f"  + teacher {human_bytes(est.teacher)}"
        v["Model weights"].setText(weights)
        v["LoRA adapter"].setText(
            f"{human_bytes(est.lora)}  ({est.lora_params / 1e6:.2f} M trainable parameters)"
        )
        v["Optimizer state"].setText(f"{human_bytes(est.optimizer)}  (AdamW moments and gradients)")
        checkpointing = "with" if cfg.train.gradient_checkpointing else "without"
        v["Activations"].setText(
            f"{human_bytes(est.activations)}  (batch {cfg.train.batch_size} × {cfg.train.seq_len} tokens, "
            f"{checkpointing} gradient checkpointing)"
        )
        v["Overhead"].setText(human_bytes(est.overhead))
        v["Total"].setText(f"<b>{human_bytes(est.total)}</b>")
        if est.fits is None:
            text, color = f"Device memory unknown ({state.device_name}).", theme.muted_color()
        elif est.fits:
            text, color = (
                f"Fits on {state.device_name} ({human_bytes(est.device_total)}).",
                theme.ok_color(),
            )
        else:
            text, color = (
                f"Will not fit on {state.device_name} ({human_bytes(est.device_total)}): lower the batch "
                "size or sequence length, turn on gradient checkpointing, or quantize to 4bit.",
                theme.error_color(),
            )
        self.verdict.setText(text)
        self.verdict.setStyleSheet(f"color: {color.name()}; font-weight: bold")
