"""Parameter sensitivity as AdaLoRA measures it, and learning-rate tiers from it.

For each weight: importance I = |w * grad| (the first-order change of the loss if w were
zeroed), smoothed I_bar = b1 * I_bar + (1 - b1) * I, its uncertainty U_bar = b2 * U_bar +
(1 - b2) * |I - I_bar|, and the score I_bar * U_bar (Zhang et al. 2023, AdaLoRA, eqs. 8-10).
A module's score is the mean over its LoRA weights. Every `every` steps the modules are
ranked and split into equal tiers; tier 1 (most sensitive) gets the highest learning rate.
Under DDP the gradients are already averaged, so every rank computes the same tiers.
"""

from __future__ import annotations

from studio.core.optim.groups import Groups, module_key

BETA1 = 0.85
BETA2 = 0.85


class Sensitivity:
    def __init__(self, groups: Groups, every: int):
        self.groups = groups
        self.every = max(1, every)
        self.ipt: dict[str, object] = {}
        self.unc: dict[str, object] = {}

    def observe(self) -> None:
        """Fold this step's gradients into the running statistics (call after backward)."""
        import torch

        with torch.no_grad():
            for name, p in zip(self.groups.names, self.groups.params, strict=True):
                if p.grad is None:
                    continue
                now = (p.detach() * p.grad.detach()).abs().float()
                if name not in self.ipt:
                    self.ipt[name] = torch.zeros_like(now)
                    self.unc[name] = torch.zeros_like(now)
                ipt, unc = self.ipt[name], self.unc[name]
                ipt.mul_(BETA1).add_(now, alpha=1 - BETA1)
                unc.mul_(BETA2).add_((now - ipt).abs(), alpha=1 - BETA2)

    def scores(self) -> dict[str, float]:
        total: dict[str, float] = {}
        count: dict[str, int] = {}
        for name, ipt in self.ipt.items():
            key = module_key(name)
            total[key] = total.get(key, 0.0) + float((ipt * self.unc[name]).sum())
            count[key] = count.get(key, 0) + ipt.numel()
        return {k: total[k] / max(1, count[k]) for k in total}

    def due(self, step: int) -> bool:
        """After optimizer step `step` (1-based), is it time to re-tier?"""
        return step % self.every == 0

    def retier(self) -> dict[str, int]:
        """Rank modules by score and split them into equal tiers (most sensitive first)."""
        scores = self.scores()
        tiers = len(self.groups.scales)
        ranked = sorted(self.groups.tier, key=lambda k: (-scores.get(k, 0.0), k))
        n = len(ranked)
        for i, key in enumerate(ranked):
            self.groups.tier[key] = min(tiers - 1, i * tiers // max(1, n))
        return dict(self.groups.tier)

    def state_dict(self) -> dict:
        return {"ipt": self.ipt, "unc": self.unc}

    def load_state_dict(self, state: dict) -> None:
        self.ipt = dict(state.get("ipt", {}))
        self.unc = dict(state.get("unc", {}))
