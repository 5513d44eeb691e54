"""The optimizer package: parameter groups, the optimizer, the schedule and per-step hooks.

`build_optim(model, train_cfg, total_steps, device)` returns an `Optim` whose optimizer
and scheduler the loop steps, and whose `after_backward(step)` it calls once per
optimizer step after the gradients are final (and unscaled). The loop knows nothing of
groups or tiers; the checkpoint carries `Optim.state_dict()` beside `optimizer.pt`.
"""

from __future__ import annotations

from studio.core.optim.factory import MIN_8BIT_SIZE, make_optimizer, state_bytes
from studio.core.optim.groups import Groups, describe, tier_scales
from studio.core.optim.schedules import lr_factor, make_scheduler
from studio.core.optim.sensitivity import Sensitivity

__all__ = ["MIN_8BIT_SIZE", "Optim", "build_optim", "lr_factor", "make_scheduler", "state_bytes"]


class Optim:
    def __init__(self, groups: Groups, optimizer, scheduler, sensitivity: Sensitivity | None):
        self.groups = groups
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.sensitivity = sensitivity

    def describe(self) -> str:
        """One line on the groups and their learning rates, for the run's log."""
        tiers = len(self.groups.scales)
        return describe(self.groups.summary(), tiers, self.groups.loraplus_ratio > 0)

    def start_messages(self, kind: str) -> list[str]:
        lines = []
        if self.groups.loraplus_ratio > 0:
            lines.append(f"LoRA+: B matrices at {self.groups.loraplus_ratio:g}x the learning rate")
        if self.sensitivity is not None:
            lines.append(
                f"sensitivity groups: {tiers_text(self.groups.scales)}, re-measured every "
                f"{self.sensitivity.every} steps (until then every module is in the 1x tier)"
            )
        if kind == "adamw_8bit":
            lines.append(
                f"optimizer: 8-bit AdamW (tensors under {MIN_8BIT_SIZE:,} values keep 32-bit state)"
            )
        if lines:
            lines.append(f"parameter groups: {self.describe()}")
        return lines

    def after_backward(self, step: int) -> list[str]:
        """Per-step work on final gradients before the update of step `step` (0-based)."""
        if self.sensitivity is None:
            return []
        self.sensitivity.observe()
        if not self.sensitivity.due(step + 1):
            return []
        self.sensitivity.retier()
        self.groups.apply(self.optimizer)
        return [f"parameter groups at step {step + 1} (sensitivity): {self.describe()}"]

    def state_dict(self) -> dict:
        out: dict = {"tier": dict(self.groups.tier)}
        if self.sensitivity is not None:
            out["sensitivity"] = self.sensitivity.state_dict()
        return out

    def load_state_dict(self, state: dict) -> None:
        """Restore tiers (before the optimizer's own state: its layout depends on them)."""
        self.groups.tier.update(state.get("tier", {}))
        self.groups.apply(self.optimizer)
        if self.sensitivity is not None and "sensitivity" in state:
            self.sensitivity.load_state_dict(state["sensitivity"])


def tiers_text(scales: list[float]) -> str:
    return f"{len(scales)} tiers at " + ", ".join(f"{s:g}x" for s in scales) + " the learning rate"


def build_optim(
    model, t, total_steps: int, device: str, *, min_8bit_size: int | None = None
) -> Optim:
    """Groups, optimizer and schedule for the trainable parameters of `model` as `t`
    (a TrainConfig) says."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    sensitive = t.param_groups == "sensitivity"
    groups = Groups(
        names=[n for n, _ in named],
        params=[p for _, p in named],
        lr=t.lr,
        weight_decay=t.weight_decay,
        loraplus_ratio=t.loraplus_ratio,
        scales=tier_scales(t.sensitivity_tiers, t.sensitivity_spread) if sensitive else [1.0],
    )
    optimizer = make_optimizer(groups.param_groups(), t.optimizer, device, min_8bit_size)
    scheduler = make_scheduler(optimizer, total_steps, t.warmup_ratio, t.scheduler)
    tracker = Sensitivity(groups, t.sensitivity_every) if sensitive else None
    return Optim(groups, optimizer, scheduler, tracker)
