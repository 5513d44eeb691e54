"""The optimizer itself: AdamW (fused on CUDA, foreach elsewhere) or bitsandbytes' 8-bit AdamW."""

from __future__ import annotations

import os

MIN_8BIT_SIZE = 4096
"""Tensors with fewer elements keep 32-bit state in adamw_8bit (bitsandbytes' own default):
block-wise 8-bit state only pays on tensors of a few thousand values and more. The
environment variable STUDIO_MIN_8BIT_SIZE overrides it (tests use 0 on tiny models)."""


def make_optimizer(
    param_groups: list[dict], kind: str, device: str, min_8bit_size: int | None = None
):
    if kind == "adamw_8bit":
        import bitsandbytes as bnb

        size = min_8bit_size
        if size is None:
            size = int(os.environ.get("STUDIO_MIN_8BIT_SIZE", MIN_8BIT_SIZE))
        # Paged state moves to CPU memory under GPU memory pressure instead of failing.
        cls = bnb.optim.PagedAdamW8bit if device.startswith("cuda") else bnb.optim.AdamW8bit
        return cls(param_groups, min_8bit_size=size)
    import torch

    extra = {"fused": True} if device.startswith("cuda") else {"foreach": True}
    return torch.optim.AdamW(param_groups, **extra)


def state_bytes(optimizer) -> int:
    """Bytes held by the optimizer's state tensors (moments, quantization maps, scales)."""
    import torch

    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if torch.is_tensor(v)
    )
