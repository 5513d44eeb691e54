"""AdamW over the trainable parameters and a warmup + decay learning-rate schedule."""

from __future__ import annotations

import math


def make_optimizer(params, lr: float, weight_decay: float, device: str):
    import torch

    params = [p for p in params if p.requires_grad]
    kwargs = {"lr": lr, "weight_decay": weight_decay}
    if device == "cuda":
        kwargs["fused"] = True  # one kernel for the whole update
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(params, **kwargs)


def lr_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at `step` (0-based) of `total`."""
    if warmup and step < warmup:
        return (step + 1) / (warmup + 1)
    if kind == "constant":
        return 1.0
    span = max(1, total - warmup)
    progress = min(1.0, (step - warmup) / span)
    if kind == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def make_scheduler(optimizer, total_steps: int, warmup_ratio: float, kind: str):
    import torch

    warmup = int(round(total_steps * warmup_ratio))
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, total_steps, warmup, kind)
    )
