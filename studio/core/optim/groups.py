"""Parameter groups: LoRA+ (B matrices at a higher learning rate) and learning-rate tiers.

The groups are fixed for a run: one per (tier, kind), kind "A" (LoRA A matrices and
everything else trainable) or "B" (LoRA B matrices). Re-tiering moves parameters between
groups without changing how many there are, so an optimizer's state (keyed by parameter)
follows each parameter and a checkpoint's `optimizer.pt` loads into the same layout.
"""

from __future__ import annotations

from dataclasses import dataclass, field

B_MARKERS = (".lora_B.", ".lora_embedding_B")


def module_key(name: str) -> str:
    """The adapted module a LoRA parameter belongs to (A, B and DoRA's magnitude together)."""
    for marker in (".lora_A", ".lora_B", ".lora_embedding_A", ".lora_embedding_B",
                   ".lora_magnitude_vector"):  # fmt: skip
        if marker in name:
            return name.split(marker)[0]
    return name


def kind_of(name: str) -> str:
    return "B" if any(m in name for m in B_MARKERS) else "A"


def tier_scales(tiers: int, spread: float) -> list[float]:
    """Learning-rate multipliers, most sensitive tier first: 3 tiers, spread 2 -> 2, 1, 0.5."""
    middle = (tiers - 1) / 2
    return [spread ** (middle - i) for i in range(tiers)]


@dataclass
class Groups:
    """Which group each trainable parameter is in, and each group's peak learning rate."""

    names: list[str]
    params: list
    lr: float
    weight_decay: float
    loraplus_ratio: float = 0.0
    scales: list[float] = field(default_factory=lambda: [1.0])
    tier: dict[str, int] = field(default_factory=dict)  # module key -> tier index

    def __post_init__(self):
        middle = len(self.scales) // 2  # the 1.0 tier (tiers is odd) until measured
        for name in self.names:
            self.tier.setdefault(module_key(name), middle)

    @property
    def layout(self) -> list[tuple[int, str]]:
        return [(t, k) for t in range(len(self.scales)) for k in ("A", "B")]

    def group_lr(self, tier: int, kind: str) -> float:
        ratio = self.loraplus_ratio if kind == "B" and self.loraplus_ratio > 0 else 1.0
        return self.lr * self.scales[tier] * ratio

    def members(self) -> list[list]:
        """Parameters of each group in `layout` order (model order within a group)."""
        index = {slot: i for i, slot in enumerate(self.layout)}
        out: list[list] = [[] for _ in self.layout]
        for name, p in zip(self.names, self.params, strict=True):
            out[index[(self.tier[module_key(name)], kind_of(name))]].append(p)
        return out

    def param_groups(self) -> list[dict]:
        """For an optimizer's constructor: every group, empty ones too (a fixed layout)."""
        return [
            {"params": members, "lr": self.group_lr(t, k), "weight_decay": self.weight_decay}
            for (t, k), members in zip(self.layout, self.members(), strict=True)
        ]

    def apply(self, optimizer) -> None:
        """Move parameters to the groups `self.tier` says (the groups' lrs stay)."""
        for group, members in zip(optimizer.param_groups, self.members(), strict=True):
            group["params"] = members

    def summary(self) -> list[dict]:
        """Per group: tier, kind, peak lr, modules and parameter count (for the logs)."""
        rows = []
        for (t, k), members in zip(self.layout, self.members(), strict=True):
            if not members:
                continue
            modules = {module_key(n) for n in self.names if self.tier[module_key(n)] == t}
            rows.append({
                "tier": t + 1,
                "kind": k,
                "lr": self.group_lr(t, k),
                "modules": len(modules),
                "parameters": sum(p.numel() for p in members),
            })  # fmt: skip
        return rows


def describe(rows: list[dict], tiers: int, loraplus: bool) -> str:
    parts = []
    for r in rows:
        label = []
        if tiers > 1:
            label.append(f"tier {r['tier']}")
        if loraplus:
            label.append("B" if r["kind"] == "B" else "A")
        head = " ".join(label) or "all"
        parts.append(
            f"{head}: lr {r['lr']:.2e}, {r['modules']} modules, {r['parameters']:,} parameters"
        )
    return "; ".join(parts)
